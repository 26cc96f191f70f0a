"""Password hashing shared fairly between client addresses (SPEC §19).

A password hash costs a core for a third of a second, so the engine computes
only a few at once. Served in arrival order, a spray of wrong sign-ins from many
addresses made a real sign-in wait behind all of them (23 s behind 150 tries).
Here each address waits in its own line, and a free slot goes to the line
whose address has the fewest recent failed sign-ins, then to the one served
least recently, then to the oldest request: an address that has not been
failing is served next, whatever is queued, and addresses that fail share what
is left in turns. An address may have at most ``max_waiting`` requests
waiting; one more is refused at once (:class:`Full`).

:class:`FairOrder` is the pure rule (tested without a loop); :class:`FairSlots`
the asyncio lock built on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
REMEMBERED = 10_000  # addresses whose last service is remembered (the oldest go first)


class Full(Exception):
    """This address already has its share of requests waiting."""


class FairOrder(Generic[T]):
    """Waiters in one line per key; :meth:`next` picks whose turn it is."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._lines: dict[str, deque[tuple[int, T]]] = {}
        self._served: OrderedDict[str, int] = OrderedDict()  # key -> tick of its last turn
        self._ticks = itertools.count(1)

    def wait(self, key: str, waiter: T) -> None:
        line = self._lines.setdefault(key, deque())
        if len(line) >= self.max_waiting:
            raise Full(key)
        line.append((next(self._ticks), waiter))

    def cancel(self, key: str, waiter: T) -> None:
        line = self._lines.get(key)
        if line is None:
            return
        for entry in line:
            if entry[1] is waiter:
                line.remove(entry)
                break
        if not line:
            del self._lines[key]

    def next(self, penalty: Callable[[str], int]) -> T | None:
        """The waiter whose turn it is (taken out of its line), or None."""
        if not self._lines:
            return None
        key = min(self._lines, key=lambda k: self._rank(k, penalty))
        line = self._lines[key]
        _, waiter = line.popleft()
        if not line:
            del self._lines[key]
        self._served.pop(key, None)
        self._served[key] = next(self._ticks)
        while len(self._served) > REMEMBERED:
            self._served.popitem(last=False)
        return waiter

    def _rank(self, key: str, penalty: Callable[[str], int]) -> tuple[int, int, int]:
        return penalty(key), self._served.get(key, 0), self._lines[key][0][0]

    def waiting(self, key: str) -> int:
        return len(self._lines.get(key, ()))

    def __bool__(self) -> bool:
        """Whether anyone is waiting."""
        return bool(self._lines)


class FairSlots:
    """At most ``slots`` holders at once; waiters served in :class:`FairOrder`."""

    def __init__(
        self, slots: int, max_waiting: int, penalty: Callable[[str], int] = lambda _: 0
    ) -> None:
        self._free = slots
        self._order: FairOrder[asyncio.Future[None]] = FairOrder(max_waiting)
        self._penalty = penalty

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Hold a slot for the block, once it is ``key``'s turn. Raises :class:`Full`."""
        if self._free > 0 and not self._order:
            self._free -= 1
        else:
            await self._wait(key)
        try:
            yield
        finally:
            self._hand_on()

    async def _wait(self, key: str) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._order.wait(key, turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._hand_on()  # handed a slot as it was cancelled: pass it on
            else:
                self._order.cancel(key, turn)
            raise

    def _hand_on(self) -> None:
        """Give a freed slot to the next waiter, or keep it free."""
        while (turn := self._order.next(self._penalty)) is not None:
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1
