"""Per-VM damping of hash changes (pure: the caller brings the clock).

A guest whose mapping keeps changing must not make the engine fetch and write
without bound (SPEC §12). The host damps its notifications with this, and the
engine its fetches (a host may be the one that misbehaves). Each VM has a token
bucket: ``burst`` changes go out at
once (a hot-plug is a device change and then, moments later, a mapping change:
both are sent without delay), after that at most ``rate`` per second. A change
held back is not lost: when the VM's next token is due, its *latest* hash goes
out, so the settled state is announced at most ``1 / rate`` seconds after the
guest goes quiet.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

DEFAULT_RATE = 4.0
DEFAULT_BURST = 4.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    held: str | None = None  # the latest hash not yet sent


class Damper:
    """``offer(vm, hash, now)`` says whether to send now; :meth:`due` yields what was held."""

    def __init__(self, rate: float = DEFAULT_RATE, burst: float = DEFAULT_BURST) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, _Bucket] = {}
        self._timers: list[tuple[float, str]] = []  # (when, vm id), a heap
        self.held_back = 0

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now

    def offer(self, vm_id: str, vm_hash: str, now: float) -> bool:
        """True: send ``vm_hash`` now. False: it is held and comes out of :meth:`due`."""
        bucket = self._buckets.get(vm_id)
        if bucket is None:
            bucket = self._buckets[vm_id] = _Bucket(self.burst, now)
        self._refill(bucket, now)
        if bucket.held is None and bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        if bucket.held is None:
            heapq.heappush(self._timers, (now + (1.0 - bucket.tokens) / self.rate, vm_id))
        bucket.held = vm_hash
        self.held_back += 1
        return False

    def next_due(self) -> float | None:
        """When :meth:`due` next has something, or None."""
        return self._timers[0][0] if self._timers else None

    def due(self, now: float) -> list[tuple[str, str]]:
        """(VM id, latest hash) of every held change whose token has come."""
        out = []
        while self._timers and self._timers[0][0] <= now:
            _, vm_id = heapq.heappop(self._timers)
            bucket = self._buckets.get(vm_id)
            if bucket is None or bucket.held is None:
                continue
            self._refill(bucket, now)
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
            out.append((vm_id, bucket.held))
            bucket.held = None
        return out

    def forget(self, vm_id: str) -> None:
        """The VM is gone: drop its bucket (a stale timer finds nothing)."""
        self._buckets.pop(vm_id, None)

    def idle(self, now: float) -> None:
        """Drop the buckets that are full and hold nothing (they would be new ones)."""
        for vm_id in [
            v
            for v, b in self._buckets.items()
            if b.held is None and b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]:
            del self._buckets[vm_id]
