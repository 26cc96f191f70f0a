"""Issue 21, acceptance 1 (SPEC §17), over real processes: an engine, a host and the
agent of one VM, each ``python -m diskname ...``, on real sockets and PostgreSQL.

Heartbeats every 0.2 s and an agent timeout of 0.6 s (three heartbeats) stand for
the defaults (5 s, 15 s), so "three heartbeat intervals plus one refresh" is about
a second here. The agent is frozen (SIGSTOP: its channel stays open, its heartbeats
stop), thawed, killed (SIGKILL: its channel closes) and started again.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diskname.bench.run import free_port

from .conftest import wait_until
from .rest import Rest
from .test_e2e_processes import Procs, healthy, listening, processes

pytestmark = pytest.mark.timeout(120)
HEARTBEAT = 0.2
AGENT_TIMEOUT = 3 * HEARTBEAT
REFRESH = 0.3
WITHIN = AGENT_TIMEOUT + REFRESH


async def start_agent(procs: Procs, channels: Path, vm: str) -> asyncio.subprocess.Process:
    return await procs.start(
        f"agent-{len(procs.procs)}",
        "agent", "--source", "sim", "--name-delay", "0.05",
        "--heartbeat-interval", str(HEARTBEAT), "--report-interval", "0.5",
        "--connect", f"unix:{channels}/{vm}.ovirt-guest-agent.0",
        "--sim-hw", f"unix:{channels}/{vm}.sim-hw",
    )  # fmt: skip


async def db_writes(http: aiohttp.ClientSession) -> float:
    async with http.get("/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("diskname_engine_db_writes_total "):
                return float(line.split()[1])
    raise AssertionError("no diskname_engine_db_writes_total")


class View:
    """The VM and its attachments as the REST API serves them."""

    def __init__(self, rest: Rest, vm: str) -> None:
        self.rest, self.vm = rest, vm

    async def agent(self) -> dict[str, Any]:
        agent: dict[str, Any] = (await self.rest.ok("GET", f"/api/vms/{self.vm}"))["guest_agent"]
        return agent

    async def atts(self) -> list[dict[str, Any]]:
        path = f"/api/vms/{self.vm}/diskattachments"
        atts: list[dict[str, Any]] = (await self.rest.ok("GET", path))["disk_attachment"]
        return sorted(atts, key=lambda a: a["logical_name"] or "")

    async def until(self, status: str, timeout: float = 20) -> float:
        """Seconds until the guest agent is ``status`` and every attachment says so."""
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def there() -> bool:
            atts = await self.atts()
            stale = status != "up"
            return (await self.agent())["status"] == status and all(
                a["stale"] is stale for a in atts
            )

        await wait_until(there, timeout=timeout, interval=0.05)
        return loop.time() - start


async def test_a_killed_agent_makes_its_names_stale_and_a_restarted_one_fresh(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISKNAME_AGENT_TIMEOUT", str(AGENT_TIMEOUT))  # the host's
    async with processes() as (procs, tmp):
        http_port, rpc_port = free_port(), free_port()
        channels = tmp / "ch"
        await procs.start(
            "engine", "engine", "--dsn", pg_dsn, "--http", f"127.0.0.1:{http_port}",
            "--state-dir", str(tmp / "engine"), "--refresh-interval", str(REFRESH),
        )  # fmt: skip
        await procs.start(
            "host", "host", "--listen", f"127.0.0.1:{rpc_port}", "--channel-mode", "listen",
            "--channels-dir", str(channels), "--state-dir", str(tmp / "host"),
        )  # fmt: skip
        base = f"http://127.0.0.1:{http_port}"
        await healthy(base)
        await listening(rpc_port)
        async with aiohttp.ClientSession(base_url=base) as http:
            rest = Rest(http)
            body = {"name": "h1", "address": "127.0.0.1", "port": rpc_port}
            host = await rest.ok("POST", "/api/hosts", body, status=201)
            vm = (await rest.ok("POST", "/api/vms", {"name": "vm1", "host": host}, 201))["id"]
            view = View(rest, vm)
            assert (await view.agent())["status"] == "none"
            agent = await start_agent(procs, channels, vm)
            root = (await view.atts())[0]["id"]
            await rest.wait_name(vm, root, timeout=20)
            data = await rest.hotplug(vm, "virtio")
            await rest.wait_name(vm, data)
            await view.until("up")
            assert (await view.agent())["sources"] == ["agent"]

            # reported_at moves forward with each report of the unchanged mapping,
            # and costs the database nothing.
            async def all_reported() -> bool:  # (the first within one refresh)
                return all(a["reported_at"] for a in await view.atts())

            await wait_until(all_reported, timeout=5, interval=0.05)
            writes = await db_writes(http)
            first = datetime.fromisoformat((await view.atts())[0]["reported_at"])

            async def confirmed_again(after: datetime) -> bool:
                atts = await view.atts()
                return all(datetime.fromisoformat(a["reported_at"]) > after for a in atts)

            await wait_until(lambda: confirmed_again(first), timeout=10, interval=0.05)
            second = max(datetime.fromisoformat(a["reported_at"]) for a in await view.atts())
            await wait_until(lambda: confirmed_again(second), timeout=10, interval=0.05)
            assert await db_writes(http) == writes

            # Frozen: the channel stays open, the heartbeats stop.
            agent.send_signal(signal.SIGSTOP)
            frozen = await view.until("unresponsive")
            names = [a["logical_name"] for a in await view.atts()]
            assert names == ["/dev/vda", "/dev/vdb"]  # kept, marked stale
            agent.send_signal(signal.SIGCONT)
            thawed = await view.until("up")

            # Killed: the channel closes.
            agent.kill()
            await agent.wait()
            procs.procs = [(n, p) for n, p in procs.procs if p is not agent]  # exit -9 is ours
            killed = await view.until("unresponsive")
            assert [a["logical_name"] for a in await view.atts()] == names
            gone = await view.agent()
            assert gone["sources"] == [] and gone["since"] is not None
            await start_agent(procs, channels, vm)
            restarted = await view.until("up")
            after = datetime.fromisoformat((await view.atts())[0]["reported_at"])
            assert after > second

        host_log = (tmp / "host.log").read_text()
        assert "guest source agent gone (no heartbeat for 0.6 s)" in host_log
        assert "guest source agent gone (channel closed)" in host_log
        print(
            f"frozen agent seen unresponsive after {frozen:.2f} s, thawed up after {thawed:.2f} s;"
            f" killed agent unresponsive after {killed:.2f} s, restarted up after"
            f" {restarted:.2f} s (bound: {WITHIN:.1f} s + the API's polling)"
        )
        assert frozen < WITHIN + 1.0 and killed < WITHIN + 1.0
