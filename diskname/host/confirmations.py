"""Which VMs' guests confirmed their mapping since a cursor the engine holds (SPEC §17).

A guest re-sends an unchanged mapping (the agent every ``report_interval``, qemu-ga
every ``qga_interval``): that moves the names' ``reported_at`` forward but not
the VM's hash, so it must reach the engine without a fetch and without changing
the stats digest. The engine sends the cursor of the last confirmations it took
with ``Host.getAllVmStats``; the host answers with the VMs confirmed after it,
oldest first, at most ``limit`` of them, and the new cursor. A cursor is
``<run>:<n>``: a cursor from another run of the host (or none) gets every VM
that ever confirmed. Each VM is listed once however often it confirmed, so the
reply is bounded by the number of VMs. No I/O here.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

MAX_CONFIRMED = 5000  # VMs per reply; the rest come with the next poll


class Confirmations:
    __slots__ = ("_order", "_run", "_seq")

    def __init__(self, run: str | None = None) -> None:
        self._run = run or secrets.token_hex(4)
        self._seq = 0
        self._order: OrderedDict[str, int] = OrderedDict()  # VM id -> seq, oldest first

    @property
    def cursor(self) -> str:
        return f"{self._run}:{self._seq}"

    def note(self, vm_id: str) -> None:
        """The VM's guest confirmed its mapping now."""
        self._seq += 1
        self._order[vm_id] = self._seq
        self._order.move_to_end(vm_id)

    def forget(self, vm_id: str) -> None:
        self._order.pop(vm_id, None)

    def after(self, cursor: str, limit: int = MAX_CONFIRMED) -> tuple[str, list[str]]:
        """The VMs confirmed after ``cursor`` (oldest first, at most ``limit``); the new cursor."""
        seen = self._position(cursor)
        newer: list[tuple[int, str]] = []
        for vm_id in reversed(self._order):
            seq = self._order[vm_id]
            if seq <= seen:
                break
            newer.append((seq, vm_id))
        newer.reverse()
        if len(newer) > limit:
            newer = newer[:limit]
            return f"{self._run}:{newer[-1][0]}", [vm for _, vm in newer]
        return self.cursor, [vm for _, vm in newer]

    def _position(self, cursor: str) -> int:
        run, _, seq = cursor.partition(":")
        if run != self._run or not seq.isdigit():
            return 0
        return min(int(seq), self._seq)
