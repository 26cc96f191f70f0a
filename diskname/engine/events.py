"""Fan-out of logical-name changes: to server-sent-event subscribers, and to the
requests waiting for one attachment's name (``?wait=logical_name``, SPEC §18).

Every change reaches the hub once, whichever engine stored it: this engine's own
writes publish as they commit, the other engines' arrive through PostgreSQL's
NOTIFY (:mod:`.hosts.fleet`), and :class:`Seen` drops the second copy of one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from typing import Any

QUEUE_LIMIT = 1000
SEEN_LIMIT = 4096  # event ids remembered to drop a change that arrives twice
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


class Seen:
    """The last :data:`SEEN_LIMIT` event ids: a change published here and notified
    by PostgreSQL too goes out once."""

    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self._ids: set[int] = set()
        self._order: deque[int] = deque()
        self._limit = limit

    def first_time(self, event_id: object) -> bool:
        if not isinstance(event_id, int):
            return True  # no id to tell copies apart by
        if event_id in self._ids:
            return False
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self._limit:
            self._ids.discard(self._order.popleft())
        return True


Key = tuple[str, str]  # (vm_id, disk_id)


class NameWaiters:
    """Requests parked until an attachment is named: a future each, keyed by attachment.

    Nothing here reads the database; a waiter costs a future and a set entry.
    """

    def __init__(self) -> None:
        self._by_key: dict[Key, set[asyncio.Future[None]]] = {}
        self._stopping = False
        self.parked = 0  # waiters past their first read, waiting for the event alone

    @contextlib.contextmanager
    def waiting(self, vm_id: str, disk_id: str) -> Iterator[asyncio.Future[None]]:
        """A future done when the attachment is named (or the engine stops)."""
        key = (vm_id.lower(), disk_id.lower())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._stopping:
            future.set_result(None)
        self._by_key.setdefault(key, set()).add(future)
        try:
            yield future
        finally:
            waiters = self._by_key.get(key)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._by_key[key]

    def named(self, vm_id: object, disk_id: object) -> None:
        if isinstance(vm_id, str) and isinstance(disk_id, str):
            _wake(self._by_key.get((vm_id.lower(), disk_id.lower()), ()))

    async def park(self, future: asyncio.Future[None], timeout: float) -> None:
        """Wait for ``future`` (from :meth:`waiting`) at most ``timeout`` seconds."""
        self.parked += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await future
        finally:
            self.parked -= 1

    def wake_all(self) -> None:
        """The engine stops: every waiter answers now, and new ones do not park."""
        self._stopping = True
        for waiters in self._by_key.values():
            _wake(waiters)

    def __len__(self) -> int:
        """Waiters registered (parked or still reading the attachment)."""
        return sum(len(w) for w in self._by_key.values())


def _wake(futures: Iterable[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._owners: Counter[str] = Counter()  # subscriptions held per owner (a user)
        self._closed = False
        self._seen = Seen()
        self.waiters = NameWaiters()

    def publish(self, event: dict[str, Any]) -> None:
        """Send a change to every subscriber and wake its attachment's waiters, once."""
        if not self._seen.first_time(event.get("id")):
            return
        for subscriber in self._subscribers:
            subscriber.put(event)
        if event.get("new") is not None:
            self.waiters.named(event.get("vm_id"), event.get("disk_id"))

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
        """End every stream; waiters answer with the attachment as it is."""
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.put(_CLOSED)
        self.waiters.wake_all()
