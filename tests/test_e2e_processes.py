"""The tiers as separate processes, started by their command lines.

engine, host and agent each run as ``python -m diskname ...``; they talk over
real TCP and UNIX sockets; PostgreSQL is real (embedded for the dev-mode run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from diskname.bench.run import free_port

from .conftest import wait_until
from .rest import Rest

pytestmark = pytest.mark.timeout(120)


class Procs:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, *args: str) -> asyncio.subprocess.Process:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115, ASYNC230 - closed below
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "diskname",
            *args,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    async def stop_all(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for name, proc in reversed(self.procs):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(20):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            codes[name] = proc.returncode
        return codes

    def dump(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.logs.glob("*.log"))


@contextlib.asynccontextmanager
async def processes() -> AsyncIterator[tuple[Procs, Path]]:
    tmp = Path(tempfile.mkdtemp(prefix="dn"))
    procs = Procs(tmp)
    try:
        yield procs, tmp
    except BaseException:
        print(procs.dump())
        raise
    finally:
        codes = await procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes


async def healthy(base: str, timeout: float = 60) -> None:
    async def ok() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(base + "/healthz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await wait_until(ok, timeout=timeout, interval=0.1)


async def listening(port: int, timeout: float = 30) -> None:
    async def ok() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    await wait_until(ok, timeout=timeout, interval=0.05)


async def check_hotplug_cycle(rest: Rest, vm: str) -> None:
    disk = await rest.hotplug(vm, "virtio")
    assert (await rest.wait_name(vm, disk))[0] == "/dev/vdb"
    scsi = await rest.hotplug(vm, "virtio_scsi")
    assert re.fullmatch(r"/dev/sd[a-z]+", (await rest.wait_name(vm, scsi))[0])
    path = f"/api/vms/{vm}/diskattachments/{disk}"
    await rest.ok("PUT", path, {"active": False})
    await rest.wait_unnamed(vm, disk)
    await rest.ok("PUT", path, {"active": True})
    assert (await rest.wait_name(vm, disk))[0] == "/dev/vdb"


async def test_engine_host_and_agent_as_three_processes(pg_dsn: str) -> None:
    async with processes() as (procs, tmp):
        http_port, rpc_port = free_port(), free_port()
        channels = tmp / "ch"
        await procs.start(
            "engine",
            "engine",
            "--dsn",
            pg_dsn,
            "--http",
            f"127.0.0.1:{http_port}",
            "--state-dir",
            str(tmp / "engine"),
            "--refresh-interval",
            "1",
        )
        await procs.start(
            "host",
            "host",
            "--listen",
            f"127.0.0.1:{rpc_port}",
            "--channel-mode",
            "listen",
            "--channels-dir",
            str(channels),
            "--state-dir",
            str(tmp / "host"),
        )
        base = f"http://127.0.0.1:{http_port}"
        await healthy(base)
        await listening(rpc_port)
        async with aiohttp.ClientSession(base_url=base) as http:
            rest = Rest(http)
            body = {"name": "h1", "address": "127.0.0.1", "port": rpc_port}
            host = await rest.ok("POST", "/api/hosts", body, status=201)
            vm = (
                await rest.ok(
                    "POST", "/api/vms", {"name": "vm1", "host": {"id": host["id"]}}, status=201
                )
            )["id"]
            await procs.start(
                "agent",
                "agent",
                "--source",
                "sim",
                "--name-delay",
                "0.05",
                "--connect",
                f"unix:{channels}/{vm}.ovirt-guest-agent.0",
                "--sim-hw",
                f"unix:{channels}/{vm}.sim-hw",
            )
            root = (await rest.ok("GET", f"/api/vms/{vm}/diskattachments"))["disk_attachment"][0]
            assert (await rest.wait_name(vm, root["id"], timeout=20))[0] == "/dev/vda"
            await check_hotplug_cycle(rest, vm)


async def test_dev_mode_command_on_embedded_postgres() -> None:
    async with processes() as (procs, tmp):
        port = free_port()
        await procs.start(
            "dev",
            "dev",
            "--http",
            f"127.0.0.1:{port}",
            # its own free port: the default (HTTP port + 1) may be some connection's
            "--rpc-port",
            str(free_port()),
            "--state-dir",
            str(tmp / "state"),
            "--vms",
            "1",
        )
        base = f"http://127.0.0.1:{port}"
        await healthy(base, timeout=90)
        async with aiohttp.ClientSession(base_url=base) as http:
            rest = Rest(http)

            async def seeded() -> bool:
                return bool((await rest.ok("GET", "/api/vms"))["vm"])

            await wait_until(seeded, timeout=30)
            await check_hotplug_cycle(rest, await rest.first_vm())
