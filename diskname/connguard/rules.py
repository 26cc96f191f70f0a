"""The limits of a guarded server and its bookkeeping, with no I/O at all."""

from __future__ import annotations

import errno
import resource
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from ..config import ConfigError

HTTP_HEAD_END = (b"\r\n\r\n", b"\n\n")
LINE_END = (b"\n",)
# Errors of accept() that mean "no descriptor or memory for one more connection".
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
LOG_INTERVAL = 60.0
# Descriptors kept for everything but connections: files, the database, logs.
FD_RESERVE_MIN, FD_RESERVE_SHARE = 64, 8

# SPEC §19's defaults, also the engine's and the host's settings' defaults.
MAX_CONNECTIONS, MAX_PER_ADDRESS = 16384, 256
HEAD_TIMEOUT, IDLE_TIMEOUT = 10.0, 60.0

K = TypeVar("K", bound=Hashable)
Verdict = Literal["admit", "address-full", "full"]


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """The caps and deadlines of one server; the defaults are SPEC §19's."""

    max_connections: int = MAX_CONNECTIONS
    max_per_address: int = MAX_PER_ADDRESS
    head_timeout: float = HEAD_TIMEOUT
    idle_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_address < 1:
            raise ConfigError("connection caps must be at least 1")
        if self.head_timeout <= 0 or (self.idle_timeout is not None and self.idle_timeout <= 0):
            raise ConfigError("connection deadlines must be positive")


def connection_budget(configured: int, soft_limit: int | None = None) -> int:
    """``configured``, or fewer when the file limit leaves room for fewer connections."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY:
        return configured
    room = soft_limit - max(FD_RESERVE_MIN, soft_limit // FD_RESERVE_SHARE)
    return max(1, min(configured, room))


class Ledger(Generic[K]):
    """Who is connected: counts per address, and who still owes a head, oldest first."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total, self.max_per_address = max_total, max_per_address
        self._address: dict[K, str] = {}
        self._per_address: Counter[str] = Counter()
        self._owing: dict[K, None] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._address)

    def count(self, address: str) -> int:
        return self._per_address[address]

    def verdict(self, address: str) -> Verdict:
        if self._per_address[address] >= self.max_per_address:
            return "address-full"
        return "full" if len(self._address) >= self.max_total else "admit"

    def add(self, key: K, address: str) -> None:
        self._address[key] = address
        self._per_address[address] += 1
        self._owing[key] = None

    def heard(self, key: K) -> None:
        """``key`` completed its head: no longer first in line to make room."""
        self._owing.pop(key, None)

    def discard(self, key: K) -> None:
        address = self._address.pop(key, None)
        self._owing.pop(key, None)
        if address is None:
            return
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]

    def oldest_owing(self) -> K | None:
        return next(iter(self._owing), None)


class HeadScanner:
    """Whether the bytes fed so far hold the end of a head (any of ``ends``)."""

    def __init__(self, ends: tuple[bytes, ...]) -> None:
        self._ends = ends
        self._keep = max(len(end) for end in ends) - 1
        self._tail = b""

    def feed(self, data: bytes) -> bool:
        window = self._tail + data
        if any(end in window for end in self._ends):
            return True
        self._tail = window[-self._keep :] if self._keep else b""
        return False


class Throttle:
    """At most one log line per ``interval`` per kind; the ones held back are counted."""

    def __init__(self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self._interval, self._clock = interval, clock
        self._next: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def allow(self, kind: str) -> int | None:
        """None: hold this line back. Else log it, adding how many were held since the last."""
        now = self._clock()
        if now < self._next.get(kind, now):
            self._held[kind] += 1
            return None
        self._next[kind] = now + self._interval
        return self._held.pop(kind, 0)
