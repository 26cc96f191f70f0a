"""The bench's child processes: fleets of hosts+guests, and the engine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson


class Child:
    """A ``python -m ...`` child with its output in a log file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log

    @classmethod
    async def start(cls, name: str, log: Path, *args: str, stdout_pipe: bool = False) -> Child:
        with open(log, "ab") as out:  # noqa: ASYNC230 - opening a local log file
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                stdout=asyncio.subprocess.PIPE if stdout_pipe else out,
                stderr=out,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return cls(name, proc, log)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> dict[str, float]:
        """Resident memory now and at its peak, in MiB (Linux /proc)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)

        def mib(key: str) -> float:
            return round(int(fields[key].split()[0]) / 1024, 1)  # the kernel says kB

        return {"rss": mib("VmRSS"), "peak": mib("VmHWM")}

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    async def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


async def start_fleet(
    index: int, first: int, count: int, vms: int, state: Path, opts: list[str], guests: str
) -> tuple[Child, list[dict[str, Any]]]:
    """Start one fleet process (``guests``: agent or light) and wait for its list of hosts."""
    child = await Child.start(
        f"fleet{index}",
        state / f"fleet{index}.log",
        "-m",
        "diskname.bench.fleet",
        str(first),
        str(count),
        str(vms),
        str(state),
        *opts,
        "--guests",
        guests,
        stdout_pipe=True,
    )
    assert child.proc.stdout is not None
    line = await child.proc.stdout.readline()
    if not line:
        await child.stop()
        raise RuntimeError(f"fleet {index} failed to start:\n{child.tail()}")
    hosts: list[dict[str, Any]] = orjson.loads(line)["hosts"]
    return child, hosts


async def start_engine(
    dsn: str,
    port: int,
    refresh: float,
    state: Path,
    *,
    events: bool,
    hash_gate: bool,
    tag: str,
    pki_dir: Path | None = None,
) -> Child:
    args = [
        "-m",
        "diskname",
        "engine",
        "--log-level",
        "WARNING",
        "--dsn",
        dsn,
        "--http",
        f"127.0.0.1:{port}",
        "--refresh-interval",
        str(refresh),
        "--state-dir",
        str(state / f"engine-{tag}"),
        # The burst's up to 1,000 requests at once all come from this one address.
        "--max-connections-per-address",
        "2048",
    ]
    if not events:
        args.append("--no-events")
    if not hash_gate:
        args.append("--no-hash-gate")
    if pki_dir is not None:
        args += ["--pki-dir", str(pki_dir)]
    return await Child.start(f"engine-{tag}", state / f"engine-{tag}.log", *args)
