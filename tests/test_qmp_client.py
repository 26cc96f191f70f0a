"""The asyncio QMP client: against a fake QMP server on a real UNIX socket, and a real QEMU."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from diskname.host.qmp_client import QmpClient, QmpCommandError, QmpConnectionError
from diskname.protocol import qmp

from .vm.qemu import bare_machine, have_qemu, running

pytestmark = pytest.mark.timeout(60)

GREETING = b'{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}\r\n'
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def sock_dir() -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dnq") as tmp:  # short: UNIX socket paths
        yield Path(tmp)


@contextlib.asynccontextmanager
async def fake_qemu(path: Path, script: Script) -> AsyncIterator[list[dict[str, object]]]:
    """A QMP server that greets, answers qmp_capabilities, then runs ``script``."""
    seen: list[dict[str, object]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        line = await reader.readline()
        seen.append(orjson.loads(line))
        writer.write(b'{"return": {}, "id": %d}\r\n' % seen[-1]["id"])
        await script(reader, writer)

    server = await asyncio.start_unix_server(closing(serve), path=str(path))
    try:
        yield seen
    finally:
        server.close()
        await server.wait_closed()


def closing(handler: Script) -> Script:
    """Run a connection handler, then close its socket whatever happened."""

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return wrapped


async def read_command(reader: asyncio.StreamReader) -> dict[str, object]:
    cmd: dict[str, object] = orjson.loads(await reader.readline())
    return cmd


async def test_capabilities_are_negotiated_and_replies_match_by_id(sock_dir: Path) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first, second = await read_command(reader), await read_command(reader)
        # Answer out of order, with an event in between: each caller still gets its own.
        writer.write(orjson.dumps({"return": "two", "id": second["id"]}) + b"\r\n")
        writer.write(b'{"event": "RESUME", "data": {}}\r\n')
        writer.write(orjson.dumps({"return": "one", "id": first["id"]}) + b"\r\n")
        await reader.read()

    path = sock_dir / "q"
    async with fake_qemu(path, script) as seen, await QmpClient.connect(path) as client:
        assert seen == [{"execute": "qmp_capabilities", "id": 1}]
        assert client.greeting == qmp.Greeting(version={"qemu": {"major": 7}})
        one, two = await asyncio.gather(client.execute("a"), client.execute("b", {"x": 1}))
        assert (one, two) == ("one", "two")


async def test_a_refused_command_carries_qemus_class_and_message(sock_dir: Path) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cmd = await read_command(reader)
        error = {"class": "GenericError", "desc": "Duplicate ID 'd1' for device"}
        writer.write(orjson.dumps({"error": error, "id": cmd["id"]}) + b"\r\n")
        await reader.read()

    path = sock_dir / "q"
    async with fake_qemu(path, script), await QmpClient.connect(path) as client:
        with pytest.raises(QmpCommandError) as info:
            await client.execute("device_add", {"id": "d1"})
    assert info.value.desc == "Duplicate ID 'd1' for device"
    assert info.value.error_class == "GenericError"
    assert info.value.command == "device_add"


async def test_events_reach_the_waiter_that_matches(sock_dir: Path) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cmd = await read_command(reader)
        writer.write(orjson.dumps({"return": {}, "id": cmd["id"]}) + b"\r\n")
        for dev in ("other", "d1"):
            event = {"event": "DEVICE_DELETED", "data": {"device": dev}}
            writer.write(orjson.dumps(event) + b"\r\n")
        await reader.read()

    path = sock_dir / "q"
    async with fake_qemu(path, script), await QmpClient.connect(path) as client:
        waiter = client.waiter(lambda e: e.name == "DEVICE_DELETED" and e.data["device"] == "d1")
        await client.execute("device_del", {"id": "d1"})
        event = await waiter.wait(timeout=5)
        assert event.data == {"device": "d1"}
        late = client.waiter(lambda e: e.name == "NEVER")
        with pytest.raises(TimeoutError):
            await late.wait(timeout=0.05)


async def test_a_lost_connection_fails_pending_calls_and_waiters(sock_dir: Path) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_command(reader)  # and hang up without answering

    path = sock_dir / "q"
    async with fake_qemu(path, script), await QmpClient.connect(path) as client:
        waiter = client.waiter(lambda e: True)
        with pytest.raises(QmpConnectionError):
            await client.execute("query-status")
        with pytest.raises(QmpConnectionError):
            await waiter.wait(timeout=5)
        await asyncio.wait_for(client.closed.wait(), 5)
        with pytest.raises(QmpConnectionError):
            await client.execute("query-status")


async def test_no_socket_no_greeting_or_garbage_is_a_connection_error(sock_dir: Path) -> None:
    with pytest.raises(QmpConnectionError):
        await QmpClient.connect(sock_dir / "absent")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"this is not QMP\r\n")
        await reader.read()

    for name, handler in (("silent", silent), ("garbage", garbage)):
        server = await asyncio.start_unix_server(closing(handler), path=str(sock_dir / name))
        try:
            with pytest.raises(QmpConnectionError):
                await QmpClient.connect(sock_dir / name, timeout=0.5)
        finally:
            server.close()
            await server.wait_closed()


needs_qemu = pytest.mark.skipif(not have_qemu(), reason="qemu-system-x86_64/qemu-img not installed")


@needs_qemu
async def test_real_qemu_plugs_and_unplugs_through_the_client(sock_dir: Path) -> None:
    qmp_path = sock_dir / "qmp"
    image = sock_dir / "d1.qcow2"
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"
    )
    assert await proc.wait() == 0
    async with (
        running(bare_machine(qmp_path), sock_dir / "qemu.log", qmp_path),
        await QmpClient.connect(qmp_path) as client,
    ):
        assert client.greeting is not None and "qemu" in client.greeting.version
        blockdev = {
            "driver": "qcow2",
            "node-name": "n1",
            "file": {"driver": "file", "filename": str(image)},
        }
        await client.execute("blockdev-add", blockdev)
        device = {"driver": "scsi-hd", "id": "d1", "drive": "n1", "bus": "scsi0.0", "serial": "s1"}
        await client.execute("device_add", device)
        with pytest.raises(QmpCommandError) as info:
            await client.execute("device_add", device)
        assert "d1" in info.value.desc  # QEMU's own words: a duplicate id
        # A SCSI bus releases a disk without the guest's help, so -S is enough here.
        gone = client.waiter(lambda e: e.name == "DEVICE_DELETED" and e.data.get("device") == "d1")
        await client.execute("device_del", {"id": "d1"})
        await gone.wait(timeout=10)
        await client.execute("blockdev-del", {"node-name": "n1"})
        assert all(b["node-name"] != "n1" for b in await client.execute("query-named-block-nodes"))
