"""Issue 23, connections: idle and slowloris floods against an engine and a TLS host.

Each service runs as its own process (``python -m diskname ...``) with its file
limit lowered to 1,024, the soft limit the unit had before ``LimitNOFILE=65536``:
the harder case, in which the flood does not even fit in the descriptors (the
engine also at the packaged limit, or this machine's hard limit if lower). The
flood comes from 127.0.0.2 and up, the real client from 127.0.0.1. The head
deadline is 3 s here (10 s by default) so the test is short.

Acceptance 1: 1,500 idle plus 200 slowloris connections to the engine:
``/healthz`` from another address answers in < 1 s throughout, >= 90 % of the
flood is closed by the server within 20 s, and the engine writes < 2,000 log
lines. 1,200 idle connections to a TLS host: the engine's client still connects
(and pings) in < 2 s. The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from diskname.bench.run import free_port
from diskname.streams import JsonRpcClient

from .test_e2e_processes import healthy, listening
from .tlsfiles import OPENSSL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
UNIT_NOFILE = 1024  # the soft limit a unit without LimitNOFILE got
# The packaged units' LimitNOFILE, or as close as this machine's hard limit allows.
PACKAGED_NOFILE = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
HEAD_TIMEOUT = 3.0
CLOSE_WITHIN = 20.0


def nofile(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


@contextlib.asynccontextmanager
async def service(
    log: Path, *args: str, limit: int = UNIT_NOFILE
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m diskname ARGS`` with the file limit ``limit``, logging to ``log``."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "diskname", *args, stdout=out, stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=nofile(limit),
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@dataclass
class Flood:
    """Connections that never finish a request, and when the server closed each."""

    port: int
    opened: list[float] = field(default_factory=list)
    closed_after: list[float | None] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def open(self, count: int, sources: list[str], trickle: bool = False) -> None:
        for start in range(0, count, 100):  # 100 at a time: a burst, not a SYN storm
            batch = range(start, min(count, start + 100))
            await asyncio.gather(*(self._one(sources[i % len(sources)], trickle) for i in batch))

    async def _one(self, source: str, trickle: bool) -> None:
        index = len(self.closed_after)
        self.closed_after.append(None)
        began = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0)), 10
            )
        except (OSError, TimeoutError):
            self.closed_after[index] = time.monotonic() - began  # refused outright
            return
        self.writers.append(writer)
        self.tasks.append(asyncio.create_task(self._watch(index, began, reader, writer, trickle)))

    async def _watch(
        self,
        index: int,
        began: float,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        trickle: bool,
    ) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_WITHIN):
                if not trickle or not await _trickle(reader, writer):
                    await _until_closed(reader)
                self.closed_after[index] = time.monotonic() - began

    def share_closed(self) -> float:
        done = [t for t in self.closed_after if t is not None and t <= CLOSE_WITHIN]
        return len(done) / len(self.closed_after)

    async def finish(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def hang_up(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def _until_closed(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Slowloris: a request head one line a second, never ended; True once closed."""
    for i in range(30):
        writer.write(b"GET /healthz HTTP/1.1\r\n" if i == 0 else b"X-%d: y\r\n" % i)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):  # sync-ok: the pace of a slowloris
                await _until_closed(reader)
                return True
    return False


async def probe_healthz(base: str, latencies: list[float], stop: asyncio.Event) -> None:
    """A new connection from 127.0.0.1 for each ``/healthz``, five a second, until ``stop``."""
    connector = aiohttp.TCPConnector(force_close=True, local_addr=("127.0.0.1", 0))
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as http:
        for _ in range(1000):  # bounded; stop ends it long before
            began = time.monotonic()
            try:
                async with http.get("/healthz") as response:
                    assert response.status == 200
                latencies.append(time.monotonic() - began)
            except (aiohttp.ClientError, TimeoutError):
                latencies.append(float("inf"))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):  # sync-ok: pacing the probes
                    await stop.wait()
            if stop.is_set():
                return


def sources(first: int, count: int) -> list[str]:
    return [f"127.0.0.{i}" for i in range(first, first + count)]


@pytest.mark.parametrize("limit", [UNIT_NOFILE, PACKAGED_NOFILE], ids=["old-unit", "packaged"])
async def test_an_idle_and_slowloris_flood_leaves_the_engine_answering(
    pg_dsn: str, limit: int
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dnflood"))
    port, log = free_port(), tmp / "engine.log"
    args = ["engine", "--dsn", pg_dsn, "--http", f"127.0.0.1:{port}", "--state-dir", str(tmp),
            "--head-timeout", str(HEAD_TIMEOUT)]  # fmt: skip
    async with service(log, *args, limit=limit):
        base = f"http://127.0.0.1:{port}"
        await healthy(base)
        latencies: list[float] = []
        stop = asyncio.Event()
        prober = asyncio.create_task(probe_healthz(base, latencies, stop))
        flood = Flood(port)
        try:
            began = time.monotonic()
            await asyncio.gather(
                flood.open(1500, sources(2, 8)), flood.open(200, sources(10, 1), trickle=True)
            )
            opened_in = time.monotonic() - began
            await flood.finish()
            stop.set()
            await prober
        finally:
            await flood.hang_up()
        closed = flood.share_closed()
    lines = len(log.read_text(errors="replace").splitlines())
    worst = max(latencies)
    print(
        f"\nengine flood, file limit {limit}: 1,700 connections opened in {opened_in:.1f} s;"
        f" /healthz max {worst * 1000:.0f} ms over {len(latencies)} probes;"
        f" {closed:.1%} closed within {CLOSE_WITHIN:g} s; {lines} log lines"
    )
    assert worst < 1.0, sorted(latencies)[-10:]
    assert closed >= 0.9
    assert lines < 2000, log.read_text()[-3000:]


@pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
async def test_an_idle_flood_on_a_tls_host_leaves_the_engine_connecting(pki: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dnflood"))
    port, log = free_port(), tmp / "host.log"
    args = ["host", "--listen", f"127.0.0.1:{port}", "--channel-mode", "listen",
            "--channels-dir", str(tmp / "ch"), "--state-dir", str(tmp / "state"),
            "--tls-cert", str(pki / "host.crt"), "--tls-key", str(pki / "host.key"),
            "--tls-ca", str(pki / "ca.crt"), "--head-timeout", str(HEAD_TIMEOUT)]  # fmt: skip
    context = ssl.create_default_context(cafile=pki / "ca.crt")
    context.load_cert_chain(pki / "engine.crt", pki / "engine.key")
    async with service(log, *args):
        await listening(port)
        flood = Flood(port)
        connects: list[float] = []
        try:
            await flood.open(1200, sources(2, 6))
            for _ in range(5):  # while the flood is held, then as it is closed
                connects.append(await engine_connects(port, context))
            await flood.finish()
        finally:
            await flood.hang_up()
        closed = flood.share_closed()
    lines = len(log.read_text(errors="replace").splitlines())
    print(
        f"\nTLS host flood: engine connect+ping max {max(connects) * 1000:.0f} ms"
        f" ({', '.join(f'{c * 1000:.0f}' for c in connects)}); {closed:.1%} closed within"
        f" {CLOSE_WITHIN:g} s; {lines} log lines"
    )
    assert max(connects) < 2.0
    assert closed >= 0.9
    assert lines < 2000, log.read_text()[-3000:]


async def engine_connects(port: int, context: ssl.SSLContext) -> float:
    """Seconds for what the engine does first: connect over mutual TLS and ping."""
    began = time.monotonic()
    client = await JsonRpcClient.connect(
        "127.0.0.1", port, ssl_context=context, server_hostname="127.0.0.1"
    )
    try:
        assert await client.call("Host.ping", timeout=10) is True
    finally:
        await client.close()
    return time.monotonic() - began
