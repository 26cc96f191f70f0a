"""diskname.connguard: the rules without sockets, the server over real loopback sockets.

Peers are told apart by their source address (127.0.0.2, 127.0.0.3, ...), as
different machines would be. The exhaustion test runs the server in a child
process whose file limit it lowers, so the test process keeps its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.config import ConfigError
from diskname.connguard import HTTP_HEAD_END, LINE_END, GuardedServer, GuardLimits
from diskname.connguard.rules import HeadScanner, Ledger, Throttle, connection_budget

from .conftest import wait_until

pytestmark = pytest.mark.timeout(30)
HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


# --- the rules, no sockets -------------------------------------------------------------


def test_a_head_is_found_fed_byte_by_byte_and_not_before_its_end() -> None:
    scanner = HeadScanner(HTTP_HEAD_END)
    found = [scanner.feed(HEAD[i : i + 1]) for i in range(len(HEAD))]
    assert found == [False] * (len(HEAD) - 1) + [True]
    assert HeadScanner(HTTP_HEAD_END).feed(b"GET / HTTP/1.0\n\n")  # bare newlines
    assert not HeadScanner(LINE_END).feed(b'{"jsonrpc": "2.0"')


@given(st.lists(st.integers(min_value=0, max_value=len(HEAD)), max_size=8))
def test_a_head_is_found_however_it_is_cut(cuts: list[int]) -> None:
    scanner = HeadScanner(HTTP_HEAD_END)
    points = sorted({0, *cuts, len(HEAD)})
    found_after = None
    for start, end in itertools.pairwise(points):
        if scanner.feed(HEAD[start:end]):
            found_after = end
            break
    assert found_after == len(HEAD)


def test_the_ledger_caps_per_address_and_in_all_and_knows_who_owes_a_head() -> None:
    ledger: Ledger[str] = Ledger(max_total=3, max_per_address=2)
    ledger.add("a1", "10.0.0.1")
    ledger.add("a2", "10.0.0.1")
    assert ledger.verdict("10.0.0.1") == "address-full"
    assert ledger.verdict("10.0.0.2") == "admit"
    ledger.add("b1", "10.0.0.2")
    assert ledger.verdict("10.0.0.2") == "full"
    ledger.heard("a1")
    assert ledger.oldest_owing() == "a2"
    ledger.discard("a2")
    ledger.discard("a2")  # twice is harmless
    assert ledger.count("10.0.0.1") == 1 and len(ledger) == 2
    assert ledger.verdict("10.0.0.1") == "admit"
    assert ledger.oldest_owing() == "b1"


def test_the_throttle_says_one_line_a_minute_and_counts_the_rest() -> None:
    now = [0.0]
    throttle = Throttle(60.0, clock=lambda: now[0])
    assert throttle.allow("exhausted") == 0
    assert [throttle.allow("exhausted") for _ in range(5)] == [None] * 5
    assert throttle.allow("full") == 0  # another kind has its own minute
    now[0] = 60.0
    assert throttle.allow("exhausted") == 5


def test_the_budget_leaves_descriptors_for_everything_else() -> None:
    assert connection_budget(16384, soft_limit=65536) == 16384
    assert connection_budget(16384, soft_limit=1024) == 1024 - 128
    assert connection_budget(16384, soft_limit=100) == 36


def test_limits_default_to_the_spec_and_refuse_nonsense() -> None:
    limits = GuardLimits()
    assert (limits.max_connections, limits.max_per_address) == (16384, 256)
    assert limits.head_timeout == 10.0
    for bad in ({"max_per_address": 0}, {"head_timeout": 0}, {"idle_timeout": -1.0}):
        with pytest.raises(ConfigError):
            GuardLimits(**bad)  # type: ignore[arg-type]


# --- the server, over loopback ---------------------------------------------------------


class Echo(asyncio.Protocol):
    def __init__(self, transports: set[asyncio.Transport]) -> None:
        self.transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.transports.add(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transports.discard(self.transport)


@contextlib.asynccontextmanager
async def echo_server(
    limits: GuardLimits, context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[GuardedServer, int]]:
    """An echo server behind the guard; every connection, both ends, closed after."""
    transports: set[asyncio.Transport] = set()
    server = GuardedServer(
        lambda: Echo(transports), limits, head_end=LINE_END, ssl_context=context, name="echo"
    )
    port = await server.start("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        server.close()
        await server.wait_closed()
        for transport in list(transports):
            transport.abort()
        await hang_up()
        await wait_until(lambda: not transports and server.connections == 0)


async def hang_up() -> None:
    for writer in DIALED:
        writer.close()
    for writer in DIALED:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    DIALED.clear()


DIALED: list[asyncio.StreamWriter] = []  # closed when the test's server goes


async def dial(
    port: int, source: str = "127.0.0.1", context: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0), ssl=context,
        server_hostname="127.0.0.1" if context else None,
    )  # fmt: skip
    DIALED.append(writer)
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closes within ``within`` seconds (echoes read and dropped)."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
            return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def echoes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"ping\n")
    async with asyncio.timeout(5):
        return await reader.readline() == b"ping\n"


async def test_a_peer_over_its_cap_is_closed_at_once_and_others_are_served() -> None:
    async with echo_server(GuardLimits(max_per_address=3)) as (server, port):
        held = [await dial(port, "127.0.0.2") for _ in range(3)]
        await wait_until(lambda: server.connections == 3)
        reader, _ = await dial(port, "127.0.0.2")
        assert await closed_by_server(reader, within=2)
        assert await echoes(*await dial(port, "127.0.0.3"))
        assert await echoes(*held[0])  # those within the cap are served too
        assert server.stats["refused_address"] == 1


async def test_silence_past_the_head_deadline_is_closed_a_speaker_is_not() -> None:
    async with echo_server(GuardLimits(head_timeout=0.3)) as (server, port):
        silent, _ = await dial(port)
        speaker = await dial(port)
        assert await echoes(*speaker)
        assert await closed_by_server(silent, within=5)
        assert server.stats["head_timeout"] == 1
        assert await echoes(*speaker)


async def test_a_slow_head_is_closed_at_the_deadline_however_it_trickles() -> None:
    async with echo_server(GuardLimits(head_timeout=0.5)) as (server, port):
        reader, writer = await dial(port)
        for _ in range(40):  # bounded: at most 4 s of trickle
            if reader.at_eof() or writer.is_closing():
                break
            writer.write(b"x")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            if await closed_by_server(reader, within=0.1):
                break
        assert server.stats["head_timeout"] == 1


async def test_at_the_total_cap_the_oldest_silent_connection_makes_room() -> None:
    async with echo_server(GuardLimits(max_connections=4)) as (server, port):
        silent = [await dial(port, f"127.0.0.{i}") for i in range(2, 6)]
        await wait_until(lambda: server.connections == 4)
        assert await echoes(*await dial(port, "127.0.0.9"))
        assert await closed_by_server(silent[0][0], within=2)
        assert server.stats["evicted"] == 1 and server.connections == 4


async def test_an_idle_connection_is_closed_after_the_idle_timeout() -> None:
    limits = GuardLimits(head_timeout=5, idle_timeout=0.3)
    async with echo_server(limits) as (server, port):
        reader, writer = await dial(port)
        assert await echoes(reader, writer)
        assert await closed_by_server(reader, within=5)
        assert server.stats["idle_timeout"] == 1


async def test_tls_the_handshake_counts_toward_the_head_deadline(pki: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "host.crt", pki / "host.key")
    client = ssl.create_default_context(cafile=pki / "ca.crt")
    async with echo_server(GuardLimits(head_timeout=0.5), context) as (server, port):
        silent, _ = await dial(port)  # TCP only: never starts its handshake
        assert await echoes(*await dial(port, context=client))
        assert await closed_by_server(silent, within=5)
        await wait_until(lambda: server.connections == 1)


CHILD = """
import asyncio, logging, os, resource, sys
from diskname.connguard import LINE_END, GuardedServer, GuardLimits

class Echo(asyncio.Protocol):
    def connection_made(self, transport): self.transport = transport
    def data_received(self, data): self.transport.write(data)

async def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    server = GuardedServer(Echo, GuardLimits(head_timeout=30), head_end=LINE_END)
    port = await server.start("127.0.0.1", 0)
    hog = []
    try:
        while True:
            hog.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    for fd in hog[:20]:
        os.close(fd)
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(dict(server.stats), flush=True)

logging.basicConfig(level=logging.INFO)
asyncio.run(main())
"""


async def test_out_of_descriptors_is_one_log_line_and_a_speaker_still_gets_in() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ),
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(await asyncio.wait_for(child.stdout.readline(), 20))
        silent = [await dial(port, f"127.0.0.{2 + i % 4}") for i in range(60)]
        assert await echoes(*await dial(port))  # past the 20 free descriptors
        assert sum([await closed_by_server(r, within=0.05) for r, _ in silent]) >= 20
    finally:
        await hang_up()
        child.stdin.close()
        out, err = await asyncio.wait_for(child.communicate(), 20)
    log = err.decode()
    assert "'exhausted'" in out.decode(), (out, log)
    assert log.count("out of file descriptors") == 1, log
    assert "Traceback" not in log and "socket.accept()" not in log, log


async def test_closing_the_server_drops_connections_still_in_their_handshake(pki: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "host.crt", pki / "host.key")
    async with echo_server(GuardLimits(head_timeout=30), context) as (server, port):
        silent, _ = await dial(port)
        await wait_until(lambda: server.connections == 1)
        server.close()
        await server.wait_closed()
        assert await closed_by_server(silent, within=5)
        assert server.connections == 0
