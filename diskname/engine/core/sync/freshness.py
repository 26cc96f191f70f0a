"""Each VM's guest agent as its host last said, and when its names were confirmed (SPEC §17).

Both arrive with ``Host.getAllVmStats``, never with a fetch:

- the agent's status (up / unresponsive / none, since, sources) is in each stats
  entry, so it changes the host's digest only when a source comes or goes. A
  full list is compared with what was stored; what moved is to be written.
- confirmations (a guest re-sending its mapping) come as ``confirmed`` beside
  the digest, from a cursor kept here. They are kept in memory only: writing
  them would cost a statement per VM per report interval in a quiet fleet. They
  reach the database with the next write the VM gets anyway (its hash or its
  agent's status), and the API serves the newer of the two.

What was stored of each agent is loaded with the stored hashes, so an engine
restarting under a fleet writes (and announces) only the agents that moved
while it was away.

Memory is per VM and the fleet is large, so the state is kept small: what was
stored is an :data:`AgentKey` shared by every VM in that state (there are at
most a dozen), a :class:`GuestAgent` is held only for a VM whose agent differs
from what was stored, and confirmations are one map per source.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ....protocol.guest_wire import AgentInfo, Confirmed, parse_time
from ....protocol.host_wire import BadHostMessage, StatsEntry
from ..models import GuestAgent

Times = Mapping[str, datetime]
AgentKey = tuple[str, tuple[str, ...]]  # (status, sources): what a write compares

_KEYS: dict[AgentKey, AgentKey] = {}
_MAX_KEYS = 64  # statuses x source sets from the wire are a dozen; the rest is not shared


def agent_key(status: str, sources: Iterable[str]) -> AgentKey:
    """The shared key of an agent state (sources sorted, once each)."""
    given: tuple[str, ...] = sources if isinstance(sources, tuple) else tuple(sources)
    listed = (status, given)
    shared = _KEYS.get(listed)  # the wire's order, seen before
    if shared is not None:
        return shared
    key = (status, tuple(sorted(set(given))))
    shared = _KEYS.get(key, key)
    if len(_KEYS) < _MAX_KEYS:
        _KEYS[key] = _KEYS[listed] = shared
    return shared


def _wire_key(info: AgentInfo | None) -> AgentKey:
    return agent_key("none", ()) if info is None else agent_key(info.state, info.sources)


def agent_from_wire(info: AgentInfo | None, now: datetime) -> GuestAgent:
    """The engine's value for a stats entry's ``agent`` (absent: ``none``)."""
    if info is None:
        return GuestAgent("none", None)
    try:
        since = parse_time(info.since) if info.since is not None else now
    except BadHostMessage:
        since = now
    status, sources = _wire_key(info)
    return GuestAgent(status, since, sources)


@dataclass(frozen=True, slots=True)
class AgentChange:
    vm_id: str
    agent: GuestAgent
    reported_at: Times


class GuestAgents:
    __slots__ = ("_announced", "_confirmed", "_known", "_latest", "_pending", "cursor")

    def __init__(self) -> None:
        self._known: dict[str, AgentKey] = {}  # as written (or being written)
        self._latest: dict[str, GuestAgent] = {}  # as the host said, where not as known
        self._pending: dict[str, GuestAgent] = {}
        self._announced: list[AgentChange] = []  # written with a hash: to tell the page
        self._confirmed: dict[str, dict[str, int]] = {}  # source -> VM -> newest (ms)
        self.cursor = ""  # of the confirmations taken in ("": none yet)

    def load(self, stored: Mapping[str, AgentKey | None]) -> None:
        """What the database holds of the host's VMs' agents (reloaded: the rest is unknown,
        so the next list offers those VMs again; the write is guarded)."""
        self._known = {vm: agent_key(*key) for vm, key in stored.items() if key is not None}
        self._latest.clear()

    def took(self, entries: Iterable[StatsEntry], registered: set[str], now: datetime) -> None:
        """A full stats list: each registered VM whose agent moved is to be written."""
        known, latest = self._known, self._latest
        for entry in entries:
            vm_id, key = entry.vm_id, _wire_key(entry.agent)
            if known.get(vm_id) == key:
                latest.pop(vm_id, None)  # back as stored before it was written: nothing to do
                self._pending.pop(vm_id, None)
                continue
            agent = latest.get(vm_id)
            if agent is None or _key(agent) != key:
                agent = latest[vm_id] = agent_from_wire(entry.agent, now)
            if vm_id in registered:  # (else it is written with its first hash)
                self._pending[vm_id] = agent

    def stored(self, vm_id: str, agent: GuestAgent | None) -> None:
        """The VM's report was stored with ``agent`` (as known when it was fetched): if the
        host said otherwise since, that is to be written too."""
        if agent is not None:
            key, known = _key(agent), self._known.get(vm_id)
            if known is not None and known != key:
                self._announced.append(AgentChange(vm_id, agent, self.reported_at(vm_id)))
            self._known[vm_id] = key
        latest = self._latest.get(vm_id)
        if latest is None:
            return
        if self._known.get(vm_id) == _key(latest):
            del self._latest[vm_id]
        else:
            self._pending[vm_id] = latest

    def take_announced(self) -> list[AgentChange]:
        """Agents that moved and were written with their VM's hash (no write of their own)."""
        announced, self._announced = self._announced, []
        return announced

    def confirmed(self, confirmed: Confirmed, ours: Callable[[str], bool]) -> None:
        """Confirmations since the cursor held: keep the newest time per source of each
        VM that is ``ours`` (the host's own: a host confirms its VMs, nobody else's)."""
        for source, vms in confirmed.at.items():
            held = self._confirmed.setdefault(source, {})
            for vm_id, ms in vms.items():
                before = held.get(vm_id)
                if before is None:
                    if ours(vm_id):
                        held[sys.intern(vm_id)] = ms  # one string per VM, as the wire's
                elif ms > before:
                    held[vm_id] = ms
        self.cursor = confirmed.cursor

    def take_changes(self) -> list[AgentChange]:
        """What to write now; it counts as written until :meth:`not_written`."""
        if not self._pending:  # every poll asks: the quiet fleet's usual answer
            return []
        pending, self._pending = self._pending, {}
        for vm_id, agent in pending.items():
            self._known[vm_id] = _key(agent)
            self._latest.pop(vm_id, None)
        return [AgentChange(vm, a, self.reported_at(vm)) for vm, a in sorted(pending.items())]

    def not_written(self, changes: Iterable[AgentChange]) -> None:
        """The write failed: offer them again."""
        for change in changes:
            self._known.pop(change.vm_id, None)
            self._latest.setdefault(change.vm_id, change.agent)
            self._pending.setdefault(change.vm_id, change.agent)

    def fetched(self, vm_id: str, info: AgentInfo | None) -> GuestAgent | None:
        """The agent to store with a fetched VM: as its full entry says (a newer host),
        else as the last stats list said; None when that is what is stored already."""
        if info is not None and self._known.get(vm_id) != _wire_key(info):
            self._latest[vm_id] = agent_from_wire(info, datetime.now(UTC))
        elif info is not None:
            self._latest.pop(vm_id, None)
        return self._latest.get(vm_id)

    def reported_at(self, vm_id: str) -> Times:
        """Per source, when the VM's guest last confirmed its mapping (as far as heard)."""
        return {s: _from_ms(held[vm_id]) for s, held in self._confirmed.items() if vm_id in held}

    def drop(self, vm_ids: Iterable[str]) -> None:
        for vm_id in vm_ids:
            for held in self._confirmed.values():
                held.pop(vm_id, None)
            self._known.pop(vm_id, None)
            self._latest.pop(vm_id, None)
            self._pending.pop(vm_id, None)


def _key(agent: GuestAgent) -> AgentKey:
    return agent_key(agent.status, agent.sources)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
