"""Whether this engine owns the host, and whether it may trust what it loaded of it.

Three phases and four events, the rules in one table (as h11's ``_state.py``):
only the owner fetches, and only once it has (re)loaded the hashes the database
holds, after each grant, new host connection or database outage.
"""

from __future__ import annotations

from enum import Enum


class Phase(Enum):
    UNOWNED = "unowned"  # another engine (or none) keeps this host's rows
    LOADING = "loading"  # ours, but the stored hashes are to be (re)loaded first
    READY = "ready"  # ours, the stored hashes loaded: fetch and store


class Event(Enum):
    GRANT = "grant"  # the lease is ours
    REVOKE = "revoke"  # the lease is gone
    DISTRUST = "distrust"  # a new host connection, or the database was away
    LOADED = "loaded"  # the stored hashes were (re)loaded


_P, _E = Phase, Event
_NEXT: dict[tuple[Phase, Event], Phase] = {
    (_P.UNOWNED, _E.GRANT): _P.LOADING,
    (_P.LOADING, _E.GRANT): _P.LOADING,
    (_P.READY, _E.GRANT): _P.READY,  # every balancing round grants again
    (_P.UNOWNED, _E.REVOKE): _P.UNOWNED,
    (_P.LOADING, _E.REVOKE): _P.UNOWNED,
    (_P.READY, _E.REVOKE): _P.UNOWNED,
    (_P.UNOWNED, _E.DISTRUST): _P.UNOWNED,  # a grant makes it load anyway
    (_P.LOADING, _E.DISTRUST): _P.LOADING,
    (_P.READY, _E.DISTRUST): _P.LOADING,
    (_P.UNOWNED, _E.LOADED): _P.UNOWNED,  # revoked while loading
    (_P.LOADING, _E.LOADED): _P.READY,
    (_P.READY, _E.LOADED): _P.READY,
}


class Ownership:
    """The phase, changed only by :meth:`on`."""

    __slots__ = ("phase",)

    def __init__(self) -> None:
        self.phase = Phase.UNOWNED

    def on(self, event: Event) -> Phase:
        """Apply ``event``; returns the phase before it."""
        before, self.phase = self.phase, _NEXT[self.phase, event]
        return before

    @property
    def owned(self) -> bool:
        return self.phase is not Phase.UNOWNED

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY
