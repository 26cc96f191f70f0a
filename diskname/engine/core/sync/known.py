"""What the database holds of a host's VMs, as far as deciding what to fetch goes.

A VM is worth fetching when the host reports a hash that is news: not the one
stored (with the hash gate on), not the one found too large to fetch, and not
for a VM the database registers on another host.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

_ABSENT = object()


class StoredVm(NamedTuple):
    """What the database holds of a VM: its hash (None: fetch it anyway), status and
    guest agent (status, sources; None: not known)."""

    hash: str | None
    status: str
    agent: tuple[str, tuple[str, ...]] | None = None


class Known:
    __slots__ = ("_foreign", "_hash_gate", "_hashes", "_statuses", "_too_large")

    def __init__(self, *, hash_gate: bool = True) -> None:
        self._hash_gate = hash_gate
        self._hashes: dict[str, str | None] = {}  # None: unknown, fetch anyway
        self._statuses: dict[str, str] = {}  # the VMs registered on this host
        self._foreign: set[str] = set()
        self._too_large: dict[str, str | None] = {}  # VM id -> the hash too large to fetch

    def load(self, states: Mapping[str, StoredVm]) -> None:
        """(stored hash, status, ...) of every VM registered on this host."""
        self._hashes = {vm: state[0] for vm, state in states.items()}
        self._statuses = {vm: state[1] for vm, state in states.items()}
        self._foreign.clear()
        self._too_large.clear()

    def __len__(self) -> int:
        return len(self._hashes)

    def registered(self) -> Iterator[str]:
        return iter(list(self._statuses))

    def is_registered(self, vm_id: str) -> bool:
        return vm_id in self._statuses

    def stored_hash(self, vm_id: str) -> str | None:
        return self._hashes.get(vm_id)

    def is_current(self, vm_id: str, vm_hash: str | None) -> bool:
        if not self._hash_gate or vm_hash is None or vm_id not in self._hashes:
            return False
        return self._hashes[vm_id] == vm_hash

    def is_news(self, vm_id: str, vm_hash: str | None) -> bool:
        if vm_id in self._foreign or self.is_current(vm_id, vm_hash):
            return False
        return self._too_large.get(vm_id, _ABSENT) != vm_hash

    def status_moved(self, vm_id: str, status: str | None) -> bool:
        """Take the status the host reports; True if it differs from the stored one."""
        known = self._statuses.get(vm_id)
        if known is None or status is None or status == known:
            return False
        self._statuses[vm_id] = status
        return True

    def forget(self, vm_id: str) -> None:
        """The stored hash no longer says anything (an action changed the VM)."""
        self._hashes[vm_id] = None

    def stored(self, vm_id: str, vm_hash: str | None, status: str) -> None:
        self._hashes[vm_id] = vm_hash
        self._statuses[vm_id] = status
        self._too_large.pop(vm_id, None)

    def too_large(self, vm_id: str, vm_hash: str | None) -> None:
        """The host cannot send the VM at this hash: not asked again until it moves."""
        self._too_large[vm_id] = vm_hash

    def fetched(self, vm_id: str) -> None:
        self._too_large.pop(vm_id, None)

    def foreign(self, vm_id: str) -> None:
        """The database registers the VM on another host: ignored from now on."""
        self._foreign.add(vm_id)
