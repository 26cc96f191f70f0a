"""Failures slow down further tries: sign-ins, TLS handshakes, host tokens (SPEC §19).

Sans-IO: the caller passes the time. The engine keeps one throttle of sign-ins
keyed by a user name and the client's address together, and one, more lenient,
by address alone; none is keyed by the name alone: failures from one address
must never keep a user out from another. The host keeps one by address for
failed TLS handshakes and wrong tokens (:class:`.server.GuardedServer`).

A key may fail ``free`` times; after that it must wait ``base`` seconds,
doubling with every further failure up to ``cap``, before it may try again.
Until then the server refuses at once (the engine with ``TooManyRequests`` and
the wait), without checking the password or token: a refusal costs no hashing,
holds no connection open (as a growing delay would), and tells a person or a
script plainly what is going on. Failures are forgotten ``forget`` seconds after
the last one, and at most ``max_keys`` keys are remembered (the oldest go
first), so a flood of names or addresses cannot grow memory.

The engine clears a (user, address) count when that user signs in from there,
but never an address's: someone with an account of their own must not be able
to reset the count of the address they guess other users' passwords from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Record:
    failures: int
    last: float


class FailureThrottle:
    def __init__(
        self,
        *,
        free: int = 5,
        base: float = 1.0,
        cap: float = 60.0,
        forget: float = 900.0,
        max_keys: int = 10_000,
    ) -> None:
        self.free, self.base, self.cap, self.forget = free, base, cap, forget
        self.max_keys = max_keys
        self._records: dict[str, _Record] = {}

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again (0.0: now)."""
        record = self._live(key, now)
        if record is None or record.failures < self.free:
            return 0.0
        delay = min(self.cap, self.base * 2.0 ** (record.failures - self.free))
        return max(0.0, record.last + delay - now)

    def failures(self, key: str, now: float) -> int:
        """The failures remembered for ``key``."""
        record = self._live(key, now)
        return 0 if record is None else record.failures

    def failed(self, key: str, now: float) -> None:
        record = self._live(key, now)
        if record is None:
            record = _Record(0, now)
        else:
            del self._records[key]  # re-inserted last: the newest
        record.failures += 1
        record.last = now
        self._records[key] = record
        while len(self._records) > self.max_keys:
            del self._records[next(iter(self._records))]

    def succeeded(self, key: str) -> None:
        self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)

    def _live(self, key: str, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and now - record.last > self.forget:
            del self._records[key]
            return None
        return record
