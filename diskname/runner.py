"""Run one service until SIGINT/SIGTERM, then let it shut down in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

ServiceMain = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def run_until_signalled(main: ServiceMain, what: str) -> None:
    """Run ``main(ready)``; the first SIGINT or SIGTERM cancels it cleanly."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    task = asyncio.create_task(main(ready), name=what)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stop, task, sig)
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        log.info("%s is ready", what)
    waiter.cancel()
    try:
        await task
    except asyncio.CancelledError:
        log.info("%s stopped", what)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def _stop(task: asyncio.Task[None], sig: signal.Signals) -> None:
    log.info("received %s, shutting down", sig.name)
    task.cancel()


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
