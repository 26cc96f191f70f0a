"""VMs a host no longer knows: its first full stats list after a (re)load lacks them.

A host that lost its state (a corrupt or deleted state file, a new machine under
the same address) comes back without VMs the engine has on it. The engine holds
their definitions, so it gives them back (``VM.create``, SPEC §19). Only the first
full list after each load is compared: a host restarts behind a dropped
connection, and every reconnect reloads. A VM that goes later, while connected,
went through the host's own lifecycle, and is not recreated.
"""

from __future__ import annotations

from collections.abc import Iterable


class Missing:
    __slots__ = ("_armed", "_found")

    def __init__(self) -> None:
        self._armed = False
        self._found: list[str] = []

    def arm(self) -> None:
        """The stored VMs were (re)loaded: compare the next full list with them."""
        self._armed = True
        self._found = []

    def on_list(self, registered: Iterable[str], reported: Iterable[str], *, whole: bool) -> None:
        """A full stats list; ``whole``: no entry was dropped, so absence means absence."""
        if self._armed and whole:
            self._armed = False
            self._found = sorted(set(registered) - set(reported))

    def take(self) -> list[str]:
        """The VMs to give back to the host, once."""
        found, self._found = self._found, []
        return found
