"""Guests as real agent processes (any interpreter, any build) for a host in the test's loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from diskname.host.service import GuestLauncher

# (channel, hw) -> the agent's command line for that VM.
AgentCommand = Callable[[Path, Path], list[str]]


def agent_processes(command: AgentCommand) -> GuestLauncher:
    """A launcher that runs each VM's agent as a process, logging to ``<channel>.log``."""

    async def launch(vm_id: str, channel: Path, hw: Path) -> None:
        log = channel.with_name(f"{vm_id}.agent.log")
        with open(log, "wb") as out:  # noqa: ASYNC230 - a local log file
            proc = await asyncio.create_subprocess_exec(
                *command(channel, hw), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
            )
        try:
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()

    return launch


def agent_log(channels: Path, vm_id: str) -> str:
    path = channels / f"{vm_id}.agent.log"
    return path.read_text(errors="replace") if path.exists() else ""
