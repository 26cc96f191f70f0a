"""The bench's restart phase: a new engine under the same fleet (issue 17, acceptance 4).

The stored hashes are trusted after a restart: the new engine must poll every
host within one refresh interval and fetch nothing, since nothing changed.
Measured from the moment the engine process is started: when it answers
``/healthz``, when it has polled every host (``diskname_engine_hosts_polled``),
and what it fetched and wrote until one more refresh interval later.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .client import EngineClient
from .procs import Child

POLLED = "diskname_engine_hosts_polled"
FETCHES, WRITES = "diskname_engine_full_list_calls_total", "diskname_engine_db_writes_total"


async def measure_restart(
    engine: tuple[Child, EngineClient], started: float, hosts: int, refresh: float
) -> dict[str, Any]:
    """``started``: the loop time the engine process was started at."""
    child, client = engine
    loop = asyncio.get_running_loop()
    ready = loop.time()
    deadline = ready + 10 * refresh + 60
    polled = 0.0
    while loop.time() < deadline and child.proc.returncode is None:
        polled = (await client.metrics()).get(POLLED, 0.0)
        if polled >= hosts:
            break
        await asyncio.sleep(0.05)
    all_polled = loop.time()
    await asyncio.sleep(refresh)  # one more cycle: whatever the first polls set off
    m = await client.metrics()
    return {
        "ready_ms": round((ready - started) * 1000),
        "all_polled_ms": round((all_polled - started) * 1000) if polled >= hosts else None,
        "polled_after_ready_ms": round((all_polled - ready) * 1000) if polled >= hosts else None,
        "hosts_polled": int(polled),
        "full_list_calls": int(m.get(FETCHES, 0)),
        "db_writes": int(m.get(WRITES, 0)),
    }
