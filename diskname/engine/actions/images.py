"""Making floating disks' images, and resuming those an engine left (SPEC §18, §19).

:meth:`Images.start` makes a new disk's image in the background: ``Image.create``
on its domain's host, then the outcome settles the disk and its intent
(:mod:`..db.images`) in one statement. An engine killed (or restarted) in
between leaves the disk "locked" with its intent; every engine's balancing round
(twice per refresh interval) looks for such intents in its one statement,
and when there are, :meth:`Images.run` sweeps them and resolves the ones
:func:`..core.images.plan` gives it: the owner of the disk's host, once
connected to it, claims the intent and creates the image again (the host
leaves an image that exists alone, so it is made once); a disk whose domain
went with its host becomes "illegal". A creation whose engine is alive is never
touched: its intent is not left while that engine's lease connection lives.

A DELETE of a disk is refused while it is locked, so it cannot cross a
creation; should the disk still be gone when a creation settles (another
engine settled it first and it was deleted since), the image just made is
removed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ...protocol.storage_wire import BadHostMessage, ImageRequest
from .. import crashpoints
from ..core.images import DOMAIN_GONE, LeftImage, Outcome, Step, outcome, plan
from ..db.images import ImageIntents
from ..errors import EngineError
from ..hosts.fleet import Monitors

log = logging.getLogger(__name__)
MAX_REASON = 1000


class Images:
    def __init__(self, intents: ImageIntents, monitors: Monitors) -> None:
        self._intents, self._monitors = intents, monitors
        self._busy: set[str] = set()  # disks whose image this engine is making now
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, monitor: Any, request: ImageRequest, pid: int | None) -> None:
        """Make a new disk's image in the background (its intent is written, naming ``pid``)."""
        task = asyncio.create_task(
            self.make(monitor, request, pid), name=f"image-{request.disk_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def make(self, monitor: Any, request: ImageRequest, pid: int | None) -> None:
        """Ask the host for the image, then settle the disk as the outcome says;
        ``pid``: the engine its intent names (this one's, when written or claimed)."""
        self._busy.add(request.disk_id)
        try:
            await crashpoints.reached("image.intended")
            failure: EngineError | None = None
            try:
                await monitor.call("Image.create", request.to_wire())
            except EngineError as exc:
                failure = exc
            else:
                await crashpoints.reached("image.called")
            await self._settle(monitor, request, failure, pid)
        except EngineError as exc:  # the database's: the intent stays, resumed once left
            log.warning("disk %s: outcome of its image not stored: %s", request.disk_id, exc)
        finally:
            self._busy.discard(request.disk_id)

    async def _settle(
        self, monitor: Any, request: ImageRequest, exc: EngineError | None, pid: int | None
    ) -> None:
        disk_id, verdict = request.disk_id, outcome(exc)
        if verdict is Outcome.OK:
            settled = await self._intents.settle(disk_id, "ok")
            if not settled.present:
                await _drop(monitor, request)
            return
        log.warning("disk %s: no image in %s (%s): %s", disk_id, request.domain, verdict.value, exc)
        if verdict is Outcome.ILLEGAL:
            await self._intents.settle(disk_id, "illegal", str(exc)[:MAX_REASON])
        elif verdict is Outcome.RELEASE:
            await self._intents.release(disk_id, pid)
        # Outcome.HOLD: the host may still be making it; the intent is left when too old.

    # -- resuming what a gone engine left ------------------------------------------

    async def run(self, left: asyncio.Event) -> None:
        """Sweep whenever a balancing round found a left creation (``left``), until
        cancelled: a fleet with none left costs no statement of its own."""
        while True:
            await left.wait()
            left.clear()
            try:
                await self.sweep()
            except EngineError as exc:  # the database's (a host's end in make())
                log.warning("image intents not swept: %s", exc)

    async def sweep(self) -> None:
        """Resolve the left creations that are this engine's to resolve now."""
        pid = self._monitors.engine_pid
        if pid is None:  # no lease connection: this engine owns nothing just now
            return
        jobs = []
        for left in await self._intents.left():
            step = plan(left, self._ready)
            if step is Step.WAIT or left.disk_id in self._busy:
                continue
            if await self._intents.claim(left.disk_id, pid):
                jobs.append(self._resolve(left, step, pid))
        await asyncio.gather(*jobs)

    def _ready(self, host_id: str) -> bool:
        monitor = self._monitors.get(host_id)
        return monitor is not None and monitor.owned and monitor.connected.is_set()

    async def _resolve(self, left: LeftImage, step: Step, pid: int) -> None:
        log.warning("disk %s: resuming its image creation (%s)", left.disk_id, step.value)
        if step is Step.FORGET:
            await self._intents.forget(left.disk_id)
        elif step is Step.ILLEGAL:
            await self._intents.settle(left.disk_id, "illegal", DOMAIN_GONE)
        else:
            await self._recreate(left, pid)

    async def _recreate(self, left: LeftImage, pid: int) -> None:
        assert left.host_id is not None and left.domain is not None  # plan() said CREATE
        try:
            request = ImageRequest(left.domain, left.disk_id, left.size, left.format, left.sparse)
        except BadHostMessage as exc:  # stored from a host's listing: should not happen
            await self._intents.settle(left.disk_id, "illegal", str(exc)[:MAX_REASON])
            return
        monitor = self._monitors.get(left.host_id)
        if monitor is None:  # its host was removed just now: the next sweep sees it gone
            await self._intents.release(left.disk_id, pid)
            return
        await self.make(monitor, request, pid)


async def _drop(monitor: Any, request: ImageRequest) -> None:
    """Remove the image of a disk deleted while it was made."""
    params = {"storageDomain": request.domain, "diskId": request.disk_id}
    with contextlib.suppress(EngineError):
        await monitor.call("Image.delete", params)
    log.warning("disk %s was deleted while its image was made: image removed", request.disk_id)
