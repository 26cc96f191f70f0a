"""Agent figures (a benchmark, not a test): ``umockdev-wrapper python -m tests.bench_agent``.

- latency: from a disk's ``add`` uevent (umockdev testbed, real libudev) to the
  ``disks-usage`` line that names it arriving at a stand-in host;
- idle: the real agent as its own process on this machine's disks, connected
  to a stand-in host: wake-ups (voluntary context switches), CPU time and
  resident memory over a quiet window.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import orjson

from diskname.agent.service import AgentConfig, AgentService
from diskname.protocol import agent_wire as aw
from diskname.streams import read_lines

from .umockdev_bed import Guest, Testbed


class Host:
    """Counts what arrives; wakes whoever waits for a serial or for a report."""

    def __init__(self) -> None:
        self.lines = 0
        self.seen: dict[str, asyncio.Future[float]] = {}
        self.reported = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        async for line in read_lines(reader):
            now = time.perf_counter()
            self.lines += 1
            msg = aw.decode_message(line) if isinstance(line, bytes) else None
            if isinstance(msg, aw.DisksUsage):
                self.reported.set()
                for serial in msg.mapping:
                    fut = self.seen.get(serial)
                    if fut is not None and not fut.done():
                        fut.set_result(now)
        writer.close()

    async def settled(self) -> None:
        """The agent has started and is idle: it answered a ``refresh`` after its first report."""
        await self.reported.wait()
        assert self.writer is not None
        self.reported.clear()
        self.writer.write(aw.encode_message(aw.Refresh()))
        await self.reported.wait()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(plugs: int) -> dict[str, Any]:
    guest = Guest(Testbed())
    guest.virtio_blk("0000:00:05.0", 2, "vda", "root-serial")
    host = Host()
    with tempfile.TemporaryDirectory(prefix="dnb") as tmp:
        path = os.path.join(tmp, "agent.sock")
        server = await asyncio.start_unix_server(host.serve, path)
        agent = asyncio.create_task(AgentService(AgentConfig(connect=f"unix:{path}")).run())
        samples = []
        loop = asyncio.get_running_loop()
        try:
            for n in range(plugs):
                serial = f"bench-{n:04d}"
                host.seen[serial] = loop.create_future()
                t0 = time.perf_counter()
                disk = guest.virtio_blk(f"0000:02:{n:02x}.0", 100 + n, f"vdq{n}", serial)
                samples.append((await asyncio.wait_for(host.seen[serial], 5) - t0) * 1000)
                guest.bed.unplug(disk)
        finally:
            agent.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await agent
            server.close()
    return {
        "plugs": plugs,
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(_pct(samples, 0.95), 2),
        "max_ms": round(max(samples), 2),
    }


def _proc(pid: int) -> tuple[int, float, int]:
    """Voluntary context switches, CPU seconds, resident kB of a process."""
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return int(status["voluntary_ctxt_switches"]), cpu, int(status["VmRSS"].split()[0])


async def idle(seconds: float) -> dict[str, Any]:
    host = Host()
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "UMOCKDEV_DIR")}
    with tempfile.TemporaryDirectory(prefix="dnb") as tmp:
        path = os.path.join(tmp, "agent.sock")
        server = await asyncio.start_unix_server(host.serve, path)
        cmd = [sys.executable, "-m", "diskname", "agent", "--connect", f"unix:{path}"]
        child = await asyncio.create_subprocess_exec(
            *cmd, env=env, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await asyncio.wait_for(host.settled(), 10)
            switches0, cpu0, rss = _proc(child.pid)
            lines0 = host.lines
            # The quiet window being measured; it ends early only if the agent dies.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), seconds)
            if child.returncode is not None:
                raise RuntimeError(f"the agent exited during the window ({child.returncode})")
            switches1, cpu1, rss1 = _proc(child.pid)
        finally:
            child.terminate()
            await child.wait()
            server.close()
    return {
        "window_s": seconds,
        "wakeups": switches1 - switches0,
        "lines_sent": host.lines - lines0,
        "cpu_ms": round((cpu1 - cpu0) * 1000, 1),
        "rss_kib_after_start": rss,
        "rss_kib_after_window": rss1,
    }


async def main(args: argparse.Namespace) -> None:
    result = {"idle": await idle(args.idle_seconds), "latency": await latency(args.plugs)}
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--plugs", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    asyncio.run(main(parser.parse_args()))
