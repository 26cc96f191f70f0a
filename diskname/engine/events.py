"""Fan-out of logical-name changes to server-sent-event subscribers."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

QUEUE_LIMIT = 1000
_CLOSED: dict[str, Any] = {}


class Subscription:
    """One subscriber's bounded queue; a slow one loses old events, not memory."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self.closed = False
        self.ended: str | None = None  # why the engine ended it (signed out...), if it did

    def put(self, event: dict[str, Any]) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(event)

    def end(self, reason: str) -> None:
        """End the subscription: :meth:`next` raises EOFError from now on."""
        self.ended = reason
        self.closed = True
        self.put(_CLOSED)

    async def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event; None when ``timeout`` passed first. Raises EOFError once closed."""
        if self.ended is not None or (self.closed and self._queue.empty()):
            raise EOFError
        try:
            async with asyncio.timeout(timeout):
                event = await self._queue.get()
        except TimeoutError:
            return None
        if event is _CLOSED:
            self.closed = True
            raise EOFError
        return event


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._owners: Counter[str] = Counter()  # subscriptions held per owner (a user)
        self._closed = False

    def publish(self, event: dict[str, Any]) -> None:
        for subscriber in self._subscribers:
            subscriber.put(event)

    @contextlib.contextmanager
    def subscription(self, owner: str = "") -> Iterator[Subscription]:
        """A subscription for the duration of the block (events published meanwhile),
        counted under ``owner`` (:meth:`held_by`)."""
        sub = Subscription()
        if self._closed:
            sub.put(_CLOSED)
        self._subscribers.add(sub)
        self._owners[owner] += 1
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)
            self._owners[owner] -= 1
            if self._owners[owner] <= 0:
                del self._owners[owner]

    def held_by(self, owner: str) -> int:
        return self._owners[owner]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.put(_CLOSED)
