"""The engine's own actions on a host's VMs: which run, their generations, what follows.

A VM in an action is not fetched; every action begun or ended moves its
generation, so a fetch that overlapped one is known and thrown away.

After an action, with notifications, what the host announced while the action
ran decides (:func:`after_action`): a hot-plug (``settle``) waits for the guest
to name the disk, on the first hash the host reports after the one the action
itself caused, or at a deadline; the one hash announced meanwhile (the bare
device, which the action stored already) is not fetched on its own. Two or
more announced: the guest spoke already, fetch at once. A burst of plugs costs
one fetch and one write per VM, not two.
"""

from __future__ import annotations

from collections import Counter
from enum import Enum


class After(Enum):
    """What an ended action asks of the fetch queue (with notifications)."""

    HELD = "held"  # nothing: the announcement already queued brings the fetch
    FETCH = "fetch"  # fetch now
    SETTLE = "settle"  # hold the announced hash; fetch on the next one, or at the deadline


def after_action(*, settle: bool, still_busy: bool, announced: int) -> After:
    if not settle:
        return After.HELD
    if still_busy or announced >= 2:
        return After.FETCH  # another action runs, or the guest spoke already
    return After.SETTLE


class Actions:
    __slots__ = ("_announced", "_busy", "_generation", "_settling")

    def __init__(self) -> None:
        self._busy: Counter[str] = Counter()  # nested actions per VM
        self._generation: Counter[str] = Counter()
        self._announced: dict[str, set[str | None]] = {}  # hashes heard while busy
        self._settling: dict[str, str | None] = {}  # VM id -> the hash its action caused

    def begin(self, vm_id: str) -> None:
        self._busy[vm_id] += 1
        self._generation[vm_id] += 1

    def end(self, vm_id: str, *, settle: bool) -> After:
        self._busy[vm_id] -= 1
        if self._busy[vm_id] <= 0:
            del self._busy[vm_id]
        self._generation[vm_id] += 1
        still_busy = vm_id in self._busy
        announced = set() if still_busy else self._announced.pop(vm_id, set())
        return after_action(settle=settle, still_busy=still_busy, announced=len(announced))

    def is_busy(self, vm_id: str) -> bool:
        return vm_id in self._busy

    def generation(self, vm_id: str) -> int:
        return self._generation[vm_id]

    def moved(self, vm_id: str, generation: int) -> bool:
        """True if an action runs on the VM, or ran since ``generation`` was read."""
        return vm_id in self._busy or generation != self._generation[vm_id]

    def heard(self, vm_id: str, vm_hash: str | None) -> bool:
        """The host announced ``vm_hash``: False if it is the settling action's own."""
        if vm_id in self._settling:
            if vm_hash is not None and vm_hash == self._settling[vm_id]:
                return False
            del self._settling[vm_id]
        if vm_id in self._busy:
            self._announced.setdefault(vm_id, set()).add(vm_hash)
        return True

    def settle(self, vm_id: str, held: str | None) -> None:
        self._settling[vm_id] = held

    def settle_over(self, vm_id: str) -> bool:
        """The deadline came: True if the VM still waited for its guest."""
        if vm_id not in self._settling:
            return False
        del self._settling[vm_id]
        return True

    def forget_waits(self) -> None:
        """Ownership moved or the stored hashes were reloaded: wait for nothing."""
        self._settling.clear()
        self._announced.clear()
