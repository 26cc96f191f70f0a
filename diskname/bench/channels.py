"""Measure one host serving many VM agent channels (issue 4, acceptance 4).

    python -m diskname.bench.channels --vms 500 --seconds 60

Starts ``python -m diskname host`` as a subprocess (listen channel mode),
creates ``--vms`` VMs over JSON-RPC, then runs as many fake agents in a second
process: each connects to its VM's channel, answers ``refresh`` with one
``disks-usage`` and sends a heartbeat every ``--heartbeat`` seconds (at a
random phase, as real guests booted at different times would). Over
``--seconds`` it measures the host process's CPU time (from /proc) and its
resident memory, and checks every agent is ``up``. Prints one JSON object.
Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from ..host.channels import channel_path
from ..protocol import agent_wire as aw
from ..protocol.disks import disk_serial
from ..streams import ConnectionLost, JsonRpcClient, close_writer, read_lines
from .run import free_port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


# -- the fake agents (run in their own process) -------------------------------


async def fake_agent(path: str, vm_id: str, heartbeat: float, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_unix_connection(path)
    root = {disk_serial(vm_id): aw.DiskEntry(name="/dev/vda")}
    usage = aw.encode_message(aw.DisksUsage(mapping=root))
    beat = aw.encode_message(aw.Heartbeat(free_ram=1 << 30))

    async def answer() -> None:
        async for line in read_lines(reader):
            if isinstance(line, bytes) and b'"refresh"' in line:
                writer.write(usage)

    task = asyncio.create_task(answer())
    try:
        writer.write(beat)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(random.uniform(0, heartbeat)):
                await stop.wait()
        while not stop.is_set():
            writer.write(beat)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(heartbeat):
                    await stop.wait()
    finally:
        task.cancel()
        await close_writer(writer)


async def run_agents(channels: Path, vm_ids: list[str], heartbeat: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the parent closes our stdin to stop us
    async with asyncio.TaskGroup() as tg:
        for vm_id in vm_ids:
            tg.create_task(fake_agent(str(channel_path(channels, vm_id)), vm_id, heartbeat, stop))
        print("agents connected", flush=True)


# -- the measurement -----------------------------------------------------------


async def start_host(work: Path, extra: list[str]) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    log = os.open(work / "host.log", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "diskname", "host", "--listen", f"127.0.0.1:{port}",
            "--state-dir", str(work / "state"), "--channels-dir", str(work / "ch"),
            "--channel-mode", "listen", "--log-level", "WARNING", *extra, stderr=log,
        )  # fmt: skip
    finally:
        os.close(log)
    async with asyncio.timeout(30):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"the host exited: see {work / 'host.log'}")
            with contextlib.suppress(ConnectionLost):
                async with await JsonRpcClient.connect("127.0.0.1", port) as c:
                    await c.call("Host.ping")
                    return proc, port
            await asyncio.sleep(0.1)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="dnb"))  # short: UNIX socket paths are limited
    extra = [] if args.qemu_ga else ["--no-qemu-ga"]
    host, port = await start_host(work, extra)
    agents: asyncio.subprocess.Process | None = None
    try:
        vm_ids = [str(uuid.uuid4()) for _ in range(args.vms)]
        async with await JsonRpcClient.connect("127.0.0.1", port) as c:
            for vm_id in vm_ids:
                await c.call("VM.create", {"vmId": vm_id, "name": vm_id[:8]})
            rss_idle = rss_mib(host.pid)
            agents = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "diskname.bench.channels", "--agents", str(work / "ch"),
                "--heartbeat", str(args.heartbeat), *vm_ids,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert agents.stdout is not None
            await asyncio.wait_for(agents.stdout.readline(), 60)
            await _until_all_up(c, args.vms)
            cpu0, t0, peak = cpu_seconds(host.pid), time.monotonic(), 0.0
            latencies = []
            while (elapsed := time.monotonic() - t0) < args.seconds:
                await asyncio.sleep(min(1.0, args.seconds - elapsed))
                peak = max(peak, rss_mib(host.pid))
                start = time.monotonic()
                await c.call("Host.getAllVmStats")
                latencies.append(time.monotonic() - start)
            cpu = cpu_seconds(host.pid) - cpu0
            wall = time.monotonic() - t0
            stats = await c.call("Host.getAllVmStats")
            rejected = await c.call("Host.getStats")
        up = sum(1 for s in stats if s["agent"]["status"] == "up")
        return {
            "vms": args.vms,
            "heartbeat_s": args.heartbeat,
            "qemu_ga": args.qemu_ga,
            "seconds": round(wall, 1),
            "host_cpu_seconds": round(cpu, 2),
            "host_cpu_percent": round(100 * cpu / wall, 2),
            "host_rss_mib_before_agents": round(rss_idle, 1),
            "host_rss_mib_end": round(rss_mib(host.pid), 1),
            "host_rss_mib_peak": round(peak, 1),
            "agents_up": up,
            "rejected": sum(sum(r.values()) for r in rejected["rejected"].values()),
            "getAllVmStats_ms_max": round(1000 * max(latencies), 1),
        }
    finally:
        if agents is not None and agents.returncode is None:
            assert agents.stdin is not None
            agents.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(agents.wait(), 10)
            if agents.returncode is None:
                agents.kill()
                await agents.wait()
        host.terminate()
        await host.wait()
        errors = (work / "host.log").read_text()
        if errors:
            print(errors[-2000:], file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


async def _until_all_up(c: JsonRpcClient, vms: int) -> None:
    async with asyncio.timeout(60):
        while True:
            stats = await c.call("Host.getAllVmStats")
            if sum(1 for s in stats if s["agent"]["status"] == "up") == vms:
                return
            await asyncio.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--no-qemu-ga", dest="qemu_ga", action="store_false")
    parser.add_argument("--agents", help=argparse.SUPPRESS)  # internal: run the fake agents
    parser.add_argument("vm_ids", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.agents:
        asyncio.run(run_agents(Path(args.agents), args.vm_ids, args.heartbeat))
        return
    print(orjson.dumps(asyncio.run(measure(args)), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
