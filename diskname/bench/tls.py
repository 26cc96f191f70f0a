"""The bench with TLS (``--tls``): an engine PKI for the fleet, and what a connection costs.

:func:`make_pki` runs ``diskname pki init`` and one ``pki issue`` per fleet host
(every host listens on 127.0.0.1, the address the bench registers it with);
the fleet processes serve mutual TLS with those files and the engine gets
``--pki-dir``. :func:`connect_ms` times what a monitor pays to (re)connect to a
host: TCP connect, the TLS handshake when there is one, and a first call.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..engine.hosts.connect import client_tls
from ..pki import init, issue
from ..streams import JsonRpcClient
from .stats import summary_ms

CONNECTIONS = 50


def host_pki(state: Path, index: int) -> Path:
    return state / "host-pki" / f"h{index}"


def make_pki(state: Path, hosts: int) -> Path:
    """The engine PKI under ``state``, with a certificate for each of ``hosts`` hosts."""
    pki_dir = state / "pki"
    init(pki_dir, "bench-engine", ["127.0.0.1"])
    for index in range(hosts):
        issue(pki_dir, "127.0.0.1", [], host_pki(state, index))
    return pki_dir


async def connect_ms(port: int, pki_dir: Path | None) -> dict[str, float | None]:
    """Connect to the host on ``port`` and call ``Host.ping``, ``CONNECTIONS`` times."""
    context = client_tls(pki_dir)
    times = []
    for _ in range(CONNECTIONS):
        start = time.perf_counter()
        client = await JsonRpcClient.connect(
            "127.0.0.1", port, ssl_context=context, server_hostname="127.0.0.1"
        )
        try:
            await client.call("Host.ping", timeout=10)
            times.append(time.perf_counter() - start)
        finally:
            await client.close()
    return summary_ms(times)
