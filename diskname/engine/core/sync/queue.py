"""The VMs to fetch from a host: wanted, in flight, damped, and reminders.

A VM is never in two fetches at once. Fetches of one VM are damped (at most
``burst`` at once, then ``rate`` a second, SPEC §12): a VM held back is fetched
when its turn comes, with whatever its latest state is then. Reminders (the
follow-ups without notifications, the settle deadline) come due at a time; the
caller decides what each means.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from ....damping import Damper

Skip = Callable[[str], bool]
Current = Callable[[str, "str | None"], bool]


class FetchQueue:
    __slots__ = ("_cleared", "_damper", "_fetching", "_reminders", "_wanted")

    def __init__(self, rate: float, burst: float) -> None:
        self._wanted: dict[str, str | None] = {}  # VM id -> the hash that made us want it
        self._fetching: set[str] = set()
        self._damper = Damper(rate, burst)
        self._cleared: set[str] = set()  # released by the damper, its token spent
        self._reminders: list[tuple[float, str]] = []  # a heap of (when, VM id)

    def __bool__(self) -> bool:
        return bool(self._wanted)

    def want(self, vm_id: str, vm_hash: str | None) -> None:
        self._wanted[vm_id] = vm_hash

    def want_again(self, vm_id: str) -> None:
        """Fetch the VM, at whatever hash it was already wanted at."""
        self._wanted.setdefault(vm_id, None)

    def withdraw(self, vm_id: str) -> str | None:
        """No longer wanted; the hash it was wanted at."""
        return self._wanted.pop(vm_id, None)

    def clear(self) -> None:
        self._wanted.clear()

    def remind(self, vm_id: str, when: float) -> None:
        heapq.heappush(self._reminders, (when, vm_id))

    def release(self, now: float) -> list[str]:
        """Put back what the damper held whose turn came; the VMs whose reminder is due."""
        self._damper.sweep(now)
        for vm_id, held in self._damper.due(now):
            self._wanted.setdefault(vm_id, held or None)
            self._cleared.add(vm_id)
        due = []
        while self._reminders and self._reminders[0][0] <= now:
            due.append(heapq.heappop(self._reminders)[1])
        return due

    def next_wakeup(self) -> float | None:
        damper = self._damper  # (a held change, or idle buckets to sweep)
        times = [t for t in (damper.next_due(), damper.next_sweep()) if t is not None]
        if self._reminders:
            times.append(self._reminders[0][0])
        return min(times) if times else None

    def take(
        self, now: float, limit: int, skip: Skip, current: Current
    ) -> tuple[dict[str, str | None], int]:
        """Up to ``limit`` VMs to fetch now (in flight until :meth:`landed`), and how many damped.

        ``skip``: left wanted for later (an action runs). ``current``: no longer wanted.
        """
        chosen: dict[str, str | None] = {}
        damped = 0
        for vm_id in sorted(self._wanted):
            if len(chosen) >= limit:
                break
            if skip(vm_id) or vm_id in self._fetching:
                continue
            wanted = self._wanted.pop(vm_id)
            if current(vm_id, wanted):
                continue
            if vm_id in self._cleared:
                self._cleared.discard(vm_id)
            elif not self._damper.offer(vm_id, wanted or "", now):
                damped += 1
                continue
            chosen[vm_id] = wanted
        self._fetching.update(chosen)
        return chosen, damped

    def landed(self, vm_ids: Iterable[str]) -> None:
        """The fetch of these VMs is over, whatever came of it."""
        self._fetching.difference_update(vm_ids)

    def failed(self, vm_ids: Iterable[str]) -> None:
        """No answer: fetch them again."""
        ids = list(vm_ids)
        self.landed(ids)
        for vm_id in ids:
            self.want_again(vm_id)
