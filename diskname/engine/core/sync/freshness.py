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

After the stored hashes are reloaded, what was stored of the agents is unknown
here: the next full list offers every VM again, and the write (guarded by
``IS DISTINCT FROM``) changes only the rows that differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ....protocol.guest_wire import AgentInfo, Confirmed, parse_time
from ....protocol.host_wire import BadHostMessage, StatsEntry
from ..models import GuestAgent

Times = Mapping[str, datetime]


def agent_from_wire(info: AgentInfo | None, now: datetime) -> GuestAgent:
    """The engine's value for a stats entry's ``agent`` (absent: ``none``)."""
    if info is None:
        return GuestAgent("none", None)
    try:
        since = parse_time(info.since) if info.since is not None else now
    except BadHostMessage:
        since = now
    return GuestAgent(info.state, since, tuple(sorted(set(info.sources))))


@dataclass(frozen=True, slots=True)
class AgentChange:
    vm_id: str
    agent: GuestAgent
    reported_at: Times


class GuestAgents:
    __slots__ = ("_announced", "_confirmed", "_known", "_latest", "_pending", "cursor")

    def __init__(self) -> None:
        self._latest: dict[str, GuestAgent] = {}  # as the last full list said
        self._known: dict[str, GuestAgent] = {}  # as written (or being written)
        self._pending: dict[str, GuestAgent] = {}
        self._announced: list[AgentChange] = []  # written with a hash: to tell the page
        self._confirmed: dict[str, dict[str, datetime]] = {}
        self.cursor = ""  # of the confirmations taken in ("": none yet)

    def forget(self) -> None:
        """The stored state is unknown again (reloaded): offer every VM of the next list."""
        self._known.clear()

    def took(self, entries: Iterable[StatsEntry], registered: set[str], now: datetime) -> None:
        """A full stats list: each registered VM whose agent moved is to be written."""
        for entry in entries:
            self._latest[entry.vm_id] = agent_from_wire(entry.agent, now)
            if entry.vm_id in registered:  # (else it is written with its first hash)
                self._offer(entry.vm_id)

    def stored(self, vm_id: str, agent: GuestAgent | None) -> None:
        """The VM's report was stored with ``agent`` (as known when it was fetched): if the
        host said otherwise since, that is to be written too."""
        if agent is not None:
            known = self._known.get(vm_id)
            if known is not None and (known.status, known.sources) != (agent.status, agent.sources):
                self._announced.append(AgentChange(vm_id, agent, self.reported_at(vm_id)))
            self._known[vm_id] = agent
        self._offer(vm_id)

    def take_announced(self) -> list[AgentChange]:
        """Agents that moved and were written with their VM's hash (no write of their own)."""
        announced, self._announced = self._announced, []
        return announced

    def _offer(self, vm_id: str) -> None:
        agent, known = self._latest.get(vm_id), self._known.get(vm_id)
        if agent is None:
            return
        if known is None or (known.status, known.sources) != (agent.status, agent.sources):
            self._pending[vm_id] = agent

    def confirmed(self, confirmed: Confirmed) -> None:
        """Confirmations since the cursor held: keep the newest time per VM and source."""
        for vm_id, times in confirmed.vms.items():
            held = self._confirmed.setdefault(vm_id, {})
            for source, at in times.items():
                if source not in held or at > held[source]:
                    held[source] = at
        self.cursor = confirmed.cursor

    def take_changes(self) -> list[AgentChange]:
        """What to write now; it counts as written until :meth:`not_written`."""
        pending, self._pending = self._pending, {}
        self._known.update(pending)
        return [AgentChange(vm, a, self.reported_at(vm)) for vm, a in sorted(pending.items())]

    def not_written(self, changes: Iterable[AgentChange]) -> None:
        """The write failed: offer them again."""
        for change in changes:
            self._known.pop(change.vm_id, None)
            self._pending.setdefault(change.vm_id, change.agent)

    def fetched(self, vm_id: str, info: AgentInfo | None) -> GuestAgent | None:
        """The agent to store with a fetched VM: as its full entry says (a newer host),
        else as the last stats list said."""
        if info is not None:
            self._latest[vm_id] = agent_from_wire(info, datetime.now(UTC))
        return self._latest.get(vm_id)

    def reported_at(self, vm_id: str) -> Times:
        """Per source, when the VM's guest last confirmed its mapping (as far as heard)."""
        return dict(self._confirmed.get(vm_id, {}))

    def drop(self, vm_ids: Iterable[str]) -> None:
        for vm_id in vm_ids:
            self._confirmed.pop(vm_id, None)
            self._known.pop(vm_id, None)
            self._latest.pop(vm_id, None)
