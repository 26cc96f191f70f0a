"""Test fleets: real hosts with simulated guests, and the engine as a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from diskname.agent.service import AgentConfig, AgentService
from diskname.host.service import HostConfig, HostService

from .conftest import started


def sim_guest(name_delay: float = 0.05) -> Callable[[str, Path, Path], Coroutine[Any, Any, None]]:
    """A guest launcher: the real agent on the sim source, for each VM a host starts."""

    async def run(vm_id: str, channel: Path, hw: Path) -> None:
        cfg = AgentConfig(
            connect=f"unix:{channel}", source="sim", sim_hw=f"unix:{hw}", name_delay=name_delay
        )
        await AgentService(cfg).run()

    return run


@contextlib.asynccontextmanager
async def sim_hosts(count: int, name_delay: float = 0.05) -> AsyncIterator[list[HostService]]:
    """``count`` hosts (listen mode, port 0) whose VMs get simulated guests."""
    root = Path(tempfile.mkdtemp(prefix="dnf"))  # short: agent channels are UNIX sockets
    services = [
        HostService(
            HostConfig(
                listen_port=0,
                state_dir=root / f"s{i}",
                channels_dir=root / f"c{i}",
                channel_mode="listen",
                host_id=f"fleet{i}",
            ),
            guest_launcher=sim_guest(name_delay),
        )
        for i in range(count)
    ]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for service in services:
                await stack.enter_async_context(started(service))
            yield services
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def engine_process(
    dsn: str, state: Path, refresh: float, *extra: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Any, str]]:
    """``python -m diskname engine`` on a port of its choosing; yields it and its base URL.

    ``env``: variables added to the process's environment (a test's crash point).
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "diskname", "engine", "--dsn", dsn, "--http", "127.0.0.1:0",
        "--refresh-interval", str(refresh), "--state-dir", str(state), *extra,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with announced(proc, r"engine serving on (http://\S+)", grace=0) as base:
        yield proc, base


async def url_in_output(stream: asyncio.StreamReader, pattern: str) -> str:
    """Read a process's output until ``pattern`` matches; its first group is the URL."""
    seen = []
    while line := await stream.readline():
        seen.append(line.decode(errors="replace"))
        if found := re.search(pattern, seen[-1]):
            return found.group(1)
    raise AssertionError(f"exited before printing {pattern!r}:\n" + "".join(seen[-30:]))


@contextlib.asynccontextmanager
async def announced(proc: Any, pattern: str, grace: float = 10.0) -> AsyncIterator[str]:
    """Wait (30 s at most) for ``proc`` to print ``pattern`` on stderr; yield its first group.

    The rest of its output is read away so the pipe never fills. On the way out
    the process is terminated and, if it is still there after ``grace``
    seconds (at once for 0), killed.
    """
    assert proc.stderr is not None
    drain = None
    try:
        found = await asyncio.wait_for(url_in_output(proc.stderr, pattern), 30)
        drain = asyncio.create_task(proc.stderr.read())
        yield found
    finally:
        if drain is not None:
            drain.cancel()
        await _stop(proc, grace)


async def _stop(proc: Any, grace: float) -> None:
    if proc.returncode is None:
        if grace > 0:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        if proc.returncode is None:
            proc.kill()
    await proc.wait()


@contextlib.asynccontextmanager
async def host_process(root: Path, *extra: str) -> AsyncIterator[tuple[Any, int]]:
    """``python -m diskname host`` (listen mode, sim) under ``root``; yields it and its port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "diskname", "host", "--listen", "127.0.0.1:0",
        "--channel-mode", "listen", "--channels-dir", str(root / "ch"),
        "--state-dir", str(root / "state"), "--no-qemu-ga", *extra,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with announced(proc, r"serving JSON-RPC on port (\d+)") as port:
        yield proc, int(port)
