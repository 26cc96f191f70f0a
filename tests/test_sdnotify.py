"""Each service speaks systemd's notify protocol: READY=1, WATCHDOG=1, STOPPING=1.

The test plays systemd: it binds its own NOTIFY_SOCKET, starts the real
command, and reads the datagrams in the order they come.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from diskname.sdnotify import Notifier

pytestmark = pytest.mark.timeout(90)


@asynccontextmanager
async def notify_socket() -> AsyncIterator[tuple[str, socket.socket]]:
    with tempfile.TemporaryDirectory(prefix="dn") as tmp:
        path = str(Path(tmp) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        try:
            yield path, sock
        finally:
            sock.close()


async def next_state(sock: socket.socket, timeout: float = 60) -> str:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        data = await loop.sock_recv(sock, 4096)
    return data.decode()


async def run_with_notify(args: list[str], tmp: Path) -> list[str]:
    async with notify_socket() as (path, sock):
        env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "diskname",
            *args,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            seen = [await next_state(sock)]
            while "WATCHDOG=1" not in seen:
                seen.append(await next_state(sock))
            proc.send_signal(signal.SIGTERM)
            while seen[-1] != "STOPPING=1":
                seen.append(await next_state(sock))
            async with asyncio.timeout(30):
                _, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode()[-2000:]
        return seen


def assert_order(seen: list[str]) -> None:
    assert seen[0] == "READY=1", seen
    assert seen[1] == "WATCHDOG=1", seen
    assert seen[-1] == "STOPPING=1", seen
    assert set(seen[1:-1]) == {"WATCHDOG=1"}, seen


async def test_engine_notifies(pg_dsn: str, tmp_path: Path) -> None:
    args = ["engine", "--dsn", pg_dsn, "--http", "127.0.0.1:0", "--state-dir", str(tmp_path)]
    assert_order(await run_with_notify(args, tmp_path))


async def test_host_notifies() -> None:
    with tempfile.TemporaryDirectory(prefix="dn") as tmp:
        args = [
            "host",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            f"{tmp}/s",
            "--channels-dir",
            f"{tmp}/c",
            "--channel-mode",
            "listen",
        ]
        assert_order(await run_with_notify(args, Path(tmp)))


async def test_agent_notifies_once_its_channel_is_open() -> None:
    with tempfile.TemporaryDirectory(prefix="dn") as tmp:
        channel = f"{tmp}/chan"
        accepted: list[asyncio.StreamWriter] = []
        server = await asyncio.start_unix_server(lambda r, w: accepted.append(w), channel)
        async with server:
            args = [
                "agent",
                "--source",
                "sim",
                "--connect",
                f"unix:{channel}",
                "--sim-hw",
                f"unix:{tmp}/hw",
            ]
            assert_order(await run_with_notify(args, Path(tmp)))
            for writer in accepted:
                writer.close()


def test_notifier_is_silent_without_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.send("READY=1")  # nothing to send to, nothing raised


def test_watchdog_belongs_to_its_pid_only() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier(env).watchdog_interval is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier(env).watchdog_interval == 0.5
