"""Whether a VM's guest sources are there, and when each last confirmed its mapping (SPEC §17).

A VM has up to two mapping sources: the oVirt agent on its channel, qemu-ga
(or libvirt's guest info, or a light guest, which the hypervisor speaks for).
A source is *up* from the first thing it says; it goes when its connection
closes or, for a source that heartbeats (the agent), when it has said nothing
for ``timeout`` (three heartbeat intervals). The VM's guest agent is:

- ``up`` while at least one source is up;
- ``unresponsive`` once every source that ever spoke is gone;
- ``none`` while no source ever spoke.

A guest *reset* (a reboot, a power-off: the hypervisor says so) makes every
source go at once, and none counts as up again before it sent a mapping of the
new boot (:meth:`Freshness.confirm`): a heartbeat proves the agent runs, not
that the names it sent before the reset still hold (letters can reorder at
boot).

``since`` is the wall-clock time the status last changed (the VM's first
sight for ``none``). Confirmations (each mapping a source sends, even an
unchanged one) are kept per source as wall-clock times: they are not hashed
and not in the stats entry, so a guest repeating itself costs the engine no
fetch (see :mod:`.confirmations`). No I/O here: the caller passes its clocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

UP = "up"
UNRESPONSIVE = "unresponsive"
NONE = "none"


@dataclass(frozen=True, slots=True)
class Change:
    """A source came (``came``) or went (``why``), and the VM's status before and after."""

    source: str
    came: bool
    why: str
    before: str
    after: str


@dataclass(slots=True)
class _Source:
    up: bool
    last: float  # monotonic time of the last thing it said
    heartbeats: bool  # goes after ``timeout`` of silence
    vouches: bool = True  # False from a reset until it sends a mapping again


class Freshness:
    __slots__ = ("_confirmed", "_reset", "_sources", "revision", "since", "status")

    def __init__(self, wall: float) -> None:
        self._sources: dict[str, _Source] = {}
        self._confirmed: dict[str, float] = {}
        self._reset = False  # a source first heard after a reset must send a mapping
        self.status = NONE
        self.since = wall
        # Moves whenever status, since or sources may have: what is built from them
        # (the stats entry's agent part, every poll) is built again only then.
        self.revision = 0

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources up now, sorted."""
        return tuple(sorted(name for name, s in self._sources.items() if s.up))

    @property
    def confirmed(self) -> Mapping[str, float]:
        """Per source, the wall-clock time of its last mapping."""
        return self._confirmed

    def seen(self, source: str, now: float, wall: float, *, heartbeats: bool) -> Change | None:
        """``source`` said something (a heartbeat, a mapping, a reply)."""
        state = self._sources.get(source)
        if state is None:
            state = self._sources[source] = _Source(False, now, heartbeats, not self._reset)
        state.last, state.heartbeats = now, heartbeats
        if state.up or not state.vouches:
            return None
        state.up = True
        return self._moved(source, True, "spoke", wall)

    def confirm(self, source: str, now: float, wall: float, *, heartbeats: bool) -> Change | None:
        """``source`` sent its mapping: it is up, and its names are confirmed at ``wall``."""
        self._confirmed[source] = wall
        self._sources.setdefault(source, _Source(False, now, heartbeats)).vouches = True
        return self.seen(source, now, wall, heartbeats=heartbeats)

    def gone(self, source: str, wall: float, why: str = "channel closed") -> Change | None:
        state = self._sources.get(source)
        if state is None or not state.up:
            return None
        state.up = False
        return self._moved(source, False, why, wall)

    def reset(self, wall: float) -> tuple[tuple[str, ...], str, str]:
        """The guest reset: every source goes and vouches for nothing until it sends a
        mapping again. The sources that were up, and the status before and after."""
        before, went = self.status, self.sources
        self._reset = True
        self.revision += 1
        for state in self._sources.values():
            state.up = state.vouches = False
        if before == UP:
            self.status, self.since = UNRESPONSIVE, wall
        return went, before, self.status

    def expire(self, now: float, timeout: float, wall: float) -> list[Change]:
        """Sources that heartbeat and were silent for more than ``timeout`` go."""
        silent = [
            name
            for name, s in self._sources.items()
            if s.up and s.heartbeats and now - s.last > timeout
        ]
        why = f"no heartbeat for {timeout:g} s"
        return [c for name in silent if (c := self.gone(name, wall, why)) is not None]

    def next_expiry(self, timeout: float) -> float | None:
        """When :meth:`expire` may next have something to do (monotonic), or None."""
        due = [s.last + timeout for s in self._sources.values() if s.up and s.heartbeats]
        return min(due) if due else None

    def _moved(self, source: str, came: bool, why: str, wall: float) -> Change:
        self.revision += 1
        before = self.status
        self.status = UP if any(s.up for s in self._sources.values()) else UNRESPONSIVE
        if self.status != before:
            self.since = wall
        return Change(source, came, why, before, self.status)
