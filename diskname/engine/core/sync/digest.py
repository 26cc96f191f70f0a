"""The stats digest (SPEC §5): an unchanged host costs one comparison.

The poll sends the digest of the last full stats list taken in; a host whose
stats have not moved answers with the digest alone, and only the VMs of that
list not yet at their reported hash here (a failed write, an action, a
forgotten hash: "behind") are looked at again. Any reload of the stored hashes
drops the digest, so the next poll gets the whole list.
"""

from __future__ import annotations

from ....protocol.host_wire import stats_params


class StatsDigest:
    __slots__ = ("_behind", "_reported", "held")

    def __init__(self) -> None:
        self.held: str | None = None  # the digest of the last full list taken in
        self._reported: dict[str, str | None] = {}  # VM id -> its hash in that list
        self._behind: set[str] = set()

    def params(self, confirmed: str | None = None) -> dict[str, str]:
        """With ``confirmed``, also the cursor of the guests' confirmations (SPEC §17)."""
        return stats_params(self.held, confirmed)

    def forget(self) -> None:
        """What the last list said no longer counts: ask for the whole list."""
        self.held, self._reported, self._behind = None, {}, set()

    def took(self, digest: str | None, reported: dict[str, str | None], behind: set[str]) -> None:
        """A full list came in (``digest`` None: an old host's, not to be sent back)."""
        self.held, self._reported, self._behind = digest, reported, behind

    def unchanged(self, digest: str | None) -> dict[str, str | None] | None:
        """The host says its stats are those of ``digest``: the VMs behind, with their hash.

        None if that is not the digest held: then the whole list is asked for.
        """
        if self.held is None or digest != self.held:
            self.forget()
            return None
        return {vm: self._reported.get(vm) for vm in self._behind}

    def reported(self, vm_id: str) -> str | None:
        return self._reported.get(vm_id)

    def lists(self, vm_id: str) -> bool:
        """Whether the last list named the VM (with a hash or not)."""
        return vm_id in self._reported

    def fell_behind(self, vm_id: str) -> None:
        if vm_id in self._reported:
            self._behind.add(vm_id)

    def caught_up(self, vm_id: str) -> None:
        self._behind.discard(vm_id)
