"""The command-line client (``diskname vms|disks|plug|unplug|which|history``) as real
processes against a real engine, host and simulated guests (a dev cluster).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from diskname import __main__ as cli
from diskname.engine.config import EngineConfig
from diskname.engine.service import EngineService

from .conftest import started
from .devcluster import Dev, dev

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).parent.parent


async def diskname(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "diskname", *args,
        cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Client:
    def __init__(self, d: Dev) -> None:
        self.url = d.cluster.base_url

    async def ok(self, *args: str) -> str:
        code, out, err = await diskname(*args, "--url", self.url)
        assert code == 0 and not err.strip(), (args, code, out, err)
        return out

    async def json(self, *args: str) -> Any:
        return json.loads(await self.ok(*args, "--json"))

    async def fails(self, *args: str) -> str:
        code, out, err = await diskname(*args, "--url", self.url)
        assert code == 1 and not out, (args, code, out, err)
        assert len(err.strip().splitlines()) == 1, err
        return err

    def which_in_process(self, text: str) -> str:
        """``diskname which`` without a new interpreter's start-up time."""
        out = io.StringIO()
        code = cli.client.run(cli.parse(["which", text, "--url", self.url]), out=out)
        assert code == 0
        return out.getvalue()


def rows(table: str) -> list[list[str]]:
    lines = table.strip().splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


async def test_every_client_command_against_a_real_engine(pg_dsn: str) -> None:
    async with dev(pg_dsn, vms=2) as d:
        client = Client(d)
        vm = (await d.rest.ok("GET", "/api/vms"))["vm"][0]
        await d.rest.wait_name(vm["id"], (await d.atts(vm["id"]))[0]["id"])

        # vms: a table (names, host names), and the API's JSON for scripts.
        table = await client.ok("vms")
        assert table.splitlines()[0].split() == ["VM", "STATUS", "AGENT", "HOST", "ID"]
        assert sorted(r[0] for r in rows(table)) == ["host0-vm0", "host0-vm1"]
        assert {r[3] for r in rows(table)} == {"host0"}
        assert {v["id"] for v in await client.json("vms")} == {
            v["id"] for v in (await d.rest.ok("GET", "/api/vms"))["vm"]
        }

        # disks VM: by name or by id.
        assert rows(await client.ok("disks", vm["name"]))[0][0] == "/dev/vda"
        [root] = await client.json("disks", vm["id"])
        assert root["logical_name"] == "/dev/vda"

        # plug: a new disk, and the guest's name once it has one.
        plugged = rows(await client.ok("plug", vm["name"]))
        assert plugged[0][:3] == ["/dev/vdb", "virtio", "yes"]
        scsi = await client.json("plug", vm["name"], "--interface", "virtio_scsi")
        assert re.fullmatch(r"/dev/sd[a-z]", scsi["logical_name"])

        # which: by disk id, and by the serial the guest shows (bus-prefixed here).
        found = rows(await client.ok("which", scsi["id"]))
        assert found[0][:3] == [vm["name"], scsi["logical_name"], "virtio_scsi"]
        by_serial = rows(await client.ok("which", f"0QEMU_QEMU_HARDDISK_{scsi['id'][:20]}"))
        assert by_serial[0][1] == scsi["logical_name"]

        # unplug: by the guest's name; the name goes; plug --disk brings it back.
        unplugged = await client.json("unplug", vm["name"], "/dev/vdb")
        assert unplugged["active"] is False and unplugged["logical_name"] is None
        again = await client.json("plug", vm["name"], "--disk", unplugged["id"])
        assert again["id"] == unplugged["id"] and again["logical_name"] == "/dev/vdb"

        # history: newest first.
        history = await client.json("history", vm["name"], unplugged["id"][:8])
        assert [(h["logical_name"], h["source"]) for h in history] == [
            ("/dev/vdb", "agent"),
            (None, "unplug"),
            ("/dev/vdb", "agent"),
        ]

        # A direct LUN keeps its serial and is found by it.
        lun = await client.json("plug", vm["name"], "--lun", "3600a0980383030523424457a4a695266")
        assert lun["disk"]["lun_storage"]["serial"] == "3600a0980383030523424457a4a695266"
        assert (
            rows(await client.ok("which", "3600a0980383030523424457"))[0][1] == lun["logical_name"]
        )

        # Errors: one line on stderr, exit 1, the API's message.
        assert "no VM named 'nope'" in await client.fails("disks", "nope")
        assert "no disk has the id or serial" in await client.fails("which", "ZZZZZZZZZZZZ")
        assert "HTTP 409" in await client.fails(
            "plug", vm["name"], "--lun", lun["disk"]["lun_storage"]["serial"]
        )
        code, _, err = await diskname("vms", "--url", "http://127.0.0.1:9")
        assert code == 1 and "cannot reach the engine" in err


async def test_which_answers_within_a_second_of_the_plug(pg_dsn: str) -> None:
    async with dev(pg_dsn) as d:
        client = Client(d)
        vm = await d.vm()
        await d.rest.wait_name(vm, (await d.atts(vm))[0]["id"])
        plugged = await client.json("plug", vm, "--wait", "0")
        loop = asyncio.get_running_loop()
        start = loop.time()
        while "/dev/vdb" not in (
            answer := await asyncio.to_thread(client.which_in_process, plugged["id"])
        ):
            assert loop.time() - start < 1.0, answer
        took = loop.time() - start
        print(f"diskname which named the disk {1000 * took:.0f} ms after the plug returned")
        assert took < 1.0
        assert rows(answer)[0][:2] == ["host0-vm0", "/dev/vdb"]


async def test_the_token_comes_from_the_flag_or_the_environment(pg_dsn: str) -> None:
    engine = EngineService(EngineConfig(dsn=pg_dsn, http_port=0, api_token="s3cret"))
    async with started(engine):
        url = f"http://127.0.0.1:{engine.http_port}"
        code, _, err = await diskname("vms", "--url", url)
        assert code == 1 and "HTTP 401" in err
        code, out, err = await diskname("vms", "--url", url, "--token", "s3cret")
        assert code == 0, err
        code, out, _ = await diskname("vms", "--url", url, env={"DISKNAME_TOKEN": "s3cret"})
        assert code == 0 and out.split() == ["VM", "STATUS", "AGENT", "HOST", "ID"]


async def test_a_former_name_still_finds_its_disk(pg_dsn: str) -> None:
    """SPEC §17: after an unplug, ``history VM /dev/vdb`` and ``which /dev/vdb --vm VM``
    resolve the name through the history (issue 21, acceptance 4)."""
    async with dev(pg_dsn) as d:
        client = Client(d)
        vm = await d.vm()
        await d.rest.wait_name(vm, (await d.atts(vm))[0]["id"])
        plugged = await client.json("plug", vm)
        assert plugged["logical_name"] == "/dev/vdb"
        await client.ok("unplug", vm, "/dev/vdb")

        async def former(*args: str) -> str:
            code, out, err = await diskname(*args, "--url", client.url)
            assert code == 0 and f"it was disk {plugged['id']}'s" in err, (code, out, err)
            return out

        history = json.loads(await former("history", vm, "/dev/vdb", "--json"))
        assert [(h["logical_name"], h["source"]) for h in history] == [
            (None, "unplug"),
            ("/dev/vdb", "agent"),
        ]
        assert {h["disk"]["id"] for h in history} == {plugged["id"]}
        table = rows(await former("history", vm, "vdb"))
        assert [r[1] for r in table] == ["-", "/dev/vdb"]
        found = rows(await former("which", "/dev/vdb", "--vm", vm))
        assert found[0][1] == "(unplugged)" and found[0][5] == plugged["id"]
        assert "no disk called" in await client.fails("history", vm, "/dev/vdz")
