"""Run one service until SIGINT/SIGTERM, then let it shut down in order.

Also the process-wide edges: logging (text or JSON lines) and the systemd
notify protocol (READY=1 when the service serves, WATCHDOG=1, STOPPING=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

from .compat import jsonlib
from .logctx import current_ids
from .sdnotify import Notifier

log = logging.getLogger(__name__)

ServiceMain = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class Service(Protocol):
    async def run(self, ready: asyncio.Event | None = None) -> None: ...


async def start_all(tg: asyncio.TaskGroup, services: Iterable[Service]) -> None:  # novermin
    """Start each service in ``tg`` and return once every one says it is ready."""
    events = []
    for service in services:
        event = asyncio.Event()
        tg.create_task(service.run(event))
        events.append(event)
    await asyncio.gather(*(e.wait() for e in events))


async def run_until_signalled(main: ServiceMain, what: str) -> None:
    """Run ``main(ready)``; the first SIGINT or SIGTERM cancels it cleanly."""
    loop = asyncio.get_running_loop()
    notifier = Notifier()
    ready = asyncio.Event()
    task = asyncio.create_task(main(ready), name=what)
    for sig in (signal.SIGINT, signal.SIGTERM):
        _on_signal(loop, sig, _stop, task, sig, notifier)
    watchdog = asyncio.create_task(_watchdog(ready, notifier, what))
    try:
        await task
    except asyncio.CancelledError:
        log.info("%s stopped", what)
    finally:
        watchdog.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        notifier.close()


async def _watchdog(ready: asyncio.Event, notifier: Notifier, what: str) -> None:
    await ready.wait()
    log.info("%s is ready", what)
    notifier.send("READY=1")
    if notifier.watchdog_interval is None:
        return
    while True:
        notifier.send("WATCHDOG=1")
        await asyncio.sleep(notifier.watchdog_interval)


def _on_signal(loop: asyncio.AbstractEventLoop, sig: signal.Signals, *call: Any) -> None:
    """``loop.add_signal_handler``, or where the loop has none (Windows) the signal module's."""
    try:
        loop.add_signal_handler(sig, *call)
    except NotImplementedError:
        signal.signal(sig, lambda _sig, _frame: loop.call_soon_threadsafe(*call))


def _stop(task: asyncio.Task[None], sig: signal.Signals, notifier: Notifier) -> None:
    log.info("received %s, shutting down", sig.name)
    notifier.send("STOPPING=1")
    task.cancel()


# Attributes callers may attach with ``extra=`` and that JSON logs carry, on top
# of the VM/host ids of the current task (diskname.logctx).
CONTEXT_KEYS = ("vm_id", "host_id", "disk_id", "reason")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(current_ids())
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return jsonlib.dumps(out, default=str).decode()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
