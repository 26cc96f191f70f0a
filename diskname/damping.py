"""Per-VM damping of hash changes (pure: the caller brings the clock).

A guest whose mapping keeps changing must not make the engine fetch and write
without bound (SPEC §12). The host damps its notifications with this, and the
engine its fetches (a host may be the one that misbehaves). Each VM has a token
bucket: ``burst`` changes go out at
once (a hot-plug is a device change and then, moments later, a mapping change:
both are sent without delay), after that at most ``rate`` per second. A change
held back is not lost: when the VM's next token is due, its *latest* hash goes
out, so the settled state is announced at most ``1 / rate`` seconds after the
guest goes quiet. A bucket that is full again and holds nothing is the same as
none, so buckets are swept every :data:`SWEEP_EVERY` seconds: a fleet keeps one
only for the VMs that changed lately, not one per VM it ever heard from.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

DEFAULT_RATE = 4.0
DEFAULT_BURST = 4.0
SWEEP_EVERY = 10.0  # seconds between sweeps of the idle buckets


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
        self._next_sweep: float | None = None
        self.held_back = 0

    def __len__(self) -> int:
        """VMs with a bucket (a change lately)."""
        return len(self._buckets)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now

    def offer(self, vm_id: str, vm_hash: str, now: float) -> bool:
        """True: send ``vm_hash`` now. False: it is held and comes out of :meth:`due`."""
        self.sweep(now)
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

    def next_sweep(self) -> float | None:
        """When :meth:`sweep` next has work, or None (no bucket)."""
        return self._next_sweep if self._buckets else None

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

    def sweep(self, now: float) -> None:
        """:meth:`idle`, if :data:`SWEEP_EVERY` seconds have passed since the last."""
        if self._next_sweep is None or now >= self._next_sweep:
            self.idle(now)
            self._next_sweep = now + SWEEP_EVERY

    def idle(self, now: float) -> None:
        """Drop the buckets that are full and hold nothing (they would be new ones)."""
        for vm_id in [
            v
            for v, b in self._buckets.items()
            if b.held is None and b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]:
            del self._buckets[vm_id]
