"""One host's sync state: the trackers behind one façade the monitor drives.

:class:`HostSync` holds no rule of its own beyond composing its trackers, and
no field another module sets: ownership (:mod:`.ownership`), what the database
holds (:mod:`.known`), the stats digest (:mod:`.digest`), the engine's actions
(:mod:`.actions`) and the fetch queue (:mod:`.queue`). It takes the host's
messages typed (:mod:`diskname.protocol.host_wire`) and the caller's clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ....protocol.host_wire import BadHostMessage, Deferred, FullListEntry, StatsReply, VmError
from ..models import VmReport, report_from_wire
from .actions import Actions, After
from .digest import StatsDigest
from .freshness import AgentChange, GuestAgents
from .known import Known, StoredVm
from .missing import Missing
from .ownership import Event, Ownership, Phase
from .queue import FetchQueue

FOLLOW_UP_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)
SETTLE = 0.25  # seconds a VM the engine changed waits for the guest's own report
MAX_FETCH = 1000  # VMs asked for in one Host.getVMFullList


@dataclass(frozen=True, slots=True)
class Batch:
    """One ``Host.getVMFullList`` to make: the VMs and their generations when asked."""

    vm_ids: tuple[str, ...]
    generations: Mapping[str, int]
    wanted: Mapping[str, str | None]  # the hash each VM was asked for at


@dataclass(slots=True)
class Reply:
    """What came of a batch: reports to store, and counts of what was not."""

    reports: list[VmReport] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)


class HostSync:
    def __init__(
        self,
        *,
        hash_gate: bool = True,
        events: bool = True,
        fetch_rate: float = 4.0,
        fetch_burst: float = 6.0,
        follow_ups: tuple[float, ...] = FOLLOW_UP_DELAYS,
        settle: float = SETTLE,
    ) -> None:
        self.hash_gate, self.events = hash_gate, events
        self._follow_up_delays, self._settle = follow_ups, settle
        self._own = Ownership()
        self._known = Known(hash_gate=hash_gate)
        self._digest = StatsDigest()
        self._actions = Actions()
        self._queue = FetchQueue(fetch_rate, fetch_burst)
        self._missing = Missing()
        self.agents = GuestAgents()
        self.counters: Counter[str] = Counter()

    # -- ownership and the database's view -----------------------------------

    @property
    def owned(self) -> bool:
        return self._own.owned

    @property
    def needs_load(self) -> bool:
        """Owned, and the stored hashes are to be (re)loaded before anything is fetched."""
        return self._own.owned and not self._own.ready

    def grant(self) -> bool:
        """This engine now owns the host; False if it did already."""
        return self._own.on(Event.GRANT) is Phase.UNOWNED

    def revoke(self) -> None:
        self._own.on(Event.REVOKE)
        self._queue.clear()
        self._actions.forget_waits()

    def mark_stale(self) -> None:
        """What was loaded can no longer be trusted (a new connection, the database was away)."""
        self._own.on(Event.DISTRUST)

    def load(self, states: Mapping[str, StoredVm]) -> None:
        """(stored hash, status[, guest agent]) of every VM registered on this host."""
        self._known.load(states)
        self.agents.load({vm: state[2] for vm, state in states.items() if len(state) > 2})
        self._queue.clear()
        self._actions.forget_waits()
        self._digest.forget()
        self._missing.arm()
        self._own.on(Event.LOADED)

    def forget_hash(self, vm_id: str) -> None:
        """Fetch the VM whatever its hash says (another engine acted on it)."""
        if self.owned and self._known.is_registered(vm_id):
            self._known.forget(vm_id)
            self._queue.want(vm_id, None)
            self._digest.fell_behind(vm_id)

    def forget_all(self) -> None:
        """Fetch every VM of the host whatever its hash says (its cluster's version changed)."""
        for vm_id in self._known.registered():
            self.forget_hash(vm_id)

    @property
    def known(self) -> int:
        return len(self._known)

    def stored_hash(self, vm_id: str) -> str | None:
        """The hash last stored for the VM (None: unknown, or to be fetched anyway)."""
        return self._known.stored_hash(vm_id)

    # -- what the host says ----------------------------------------------------

    def stats_params(self) -> dict[str, str] | None:
        """Params of the next ``Host.getAllVmStats``; None without the hash gate (the list)."""
        return self._digest.params(self.agents.cursor) if self.hash_gate else None

    def on_stats(
        self, reply: StatsReply | BadHostMessage, now: datetime | None = None
    ) -> list[tuple[str, str]]:
        """A ``Host.getAllVmStats`` reply: marks changed VMs; returns status changes to store."""
        if isinstance(reply, BadHostMessage):
            self.counters["bad_stats"] += 1
            self._digest.forget()
            return []
        if reply.skipped:
            self.counters["bad_stats_entry"] += reply.skipped
        if reply.vms is None:
            self._unchanged(reply.digest)
            self._confirmed(reply)
            return []
        changed: list[tuple[str, str]] = []
        reported: dict[str, str | None] = {}
        behind: set[str] = set()
        for entry in reply.vms:
            if entry.status is not None and self._known.status_moved(entry.vm_id, entry.status):
                changed.append((entry.vm_id, entry.status))
            reported[entry.vm_id] = entry.hash
            if self.mark(entry.vm_id, entry.hash):
                behind.add(entry.vm_id)
        self._digest.took(reply.digest, reported, behind)
        self._missing.on_list(self._known.registered(), reported, whole=not reply.skipped)
        registered = {vm for vm in reported if self._known.is_registered(vm)}
        self.agents.took(reply.vms, registered, now or datetime.now(UTC))
        self._confirmed(reply)
        return changed

    def _confirmed(self, reply: StatsReply) -> None:
        """The reply's confirmations, of the VMs registered on the host or named by its
        last list (one it just reported, registered once fetched, keeps its first);
        whatever else a host confirms is no VM of its own and is not kept."""
        if reply.confirmed is not None:
            self.agents.confirmed(reply.confirmed, self._ours)

    def _ours(self, vm_id: str) -> bool:
        """Registered on the host, or named by its last list (fetched and registered next)."""
        return self._known.is_registered(vm_id) or self._digest.lists(vm_id)

    def take_missing(self) -> list[str]:
        """VMs registered on the host that it no longer knows (:mod:`.missing`), once."""
        return self._missing.take() if self.owned else []

    def take_agent_changes(self) -> list[AgentChange]:
        """Guest agents whose status moved since written (SPEC §17): write them."""
        return self.agents.take_changes() if self._own.ready else []

    def _unchanged(self, digest: str | None) -> None:
        """The host's stats are still those of the digest held: look again at what is behind."""
        behind = self._digest.unchanged(digest)
        if behind is None:
            self.counters["stats_digest_unknown"] += 1
            return
        self.counters["stats_unchanged"] += 1
        for vm_id, vm_hash in behind.items():
            if not self.mark(vm_id, vm_hash):
                self._digest.caught_up(vm_id)

    def on_notification(self, vm_id: str, vm_hash: str | None) -> None:
        if self.events and self._own.ready:
            self.mark(vm_id, vm_hash)

    def mark(self, vm_id: str, vm_hash: str | None) -> bool:
        """The host says the VM is at ``vm_hash`` (None: unknown): True if that is to be fetched."""
        if not self._known.is_news(vm_id, vm_hash):
            return False
        if self._actions.heard(vm_id, vm_hash):
            self._queue.want(vm_id, vm_hash)
        return True  # (the settling action's own hash is fetched when the guest speaks)

    # -- fetching ----------------------------------------------------------------

    def release_due(self, now: float) -> None:
        """Put back VMs whose damping or follow-up time has come."""
        for vm_id in self._queue.release(now):
            if self.owned and (not self.events or self._actions.settle_over(vm_id)):
                self._queue.want(vm_id, None)  # (a silent guest: fetch what there is)

    def next_wakeup(self) -> float | None:
        """When :meth:`release_due` will next have something to release."""
        return self._queue.next_wakeup()

    @property
    def wants_fetch(self) -> bool:
        return bool(self._queue)

    def take_batch(self, now: float, limit: int = MAX_FETCH) -> Batch | None:
        """The next VMs to fetch, or None. Each VM taken is in flight until :meth:`on_reply`."""
        if not self._own.ready:
            return None
        chosen, damped = self._queue.take(now, limit, self._actions.is_busy, self._known.is_current)
        self.counters["fetch_damped"] += damped
        if not chosen:
            return None
        generations = {vm: self._actions.generation(vm) for vm in chosen}
        return Batch(tuple(chosen), generations, chosen)

    def on_reply(self, batch: Batch, entries: Sequence[FullListEntry | BadHostMessage]) -> Reply:
        """The host's answer to ``batch``: what to store, and what to fetch again."""
        self._queue.landed(batch.vm_ids)
        reply = Reply()
        answered = {e.vm_id for e in entries if e.vm_id in batch.generations}
        for entry in entries:
            if (dropped := self._entry(entry, batch, reply)) is not None:
                reply.dropped[dropped] += 1
        # Gone from the host since the poll: nothing to store, nothing to ask again.
        if gone := len(set(batch.vm_ids) - answered):
            reply.dropped["not_on_host"] += gone
        return reply

    def _entry(
        self, entry: FullListEntry | BadHostMessage, batch: Batch, reply: Reply
    ) -> str | None:
        """Take one entry in: None if it is to be stored, else why not."""
        if isinstance(entry, BadHostMessage):
            return "bad_report"
        if entry.vm_id not in batch.generations:
            return "not_asked"  # never store what was not asked for
        if isinstance(entry, Deferred):
            self._queue.want_again(entry.vm_id)  # did not fit this reply: the next one
            return "deferred"
        if isinstance(entry, VmError):
            self._known.too_large(entry.vm_id, batch.wanted[entry.vm_id])
            return "vm_error"
        if self.moved(batch, entry.vm_id):
            self._queue.want(entry.vm_id, None)  # an action overlapped the fetch: again
            return "overlapped_action"
        self._known.fetched(entry.vm_id)
        report = report_from_wire(entry)
        agent = self.agents.fetched(entry.vm_id, entry.agent)
        times = self.agents.reported_at(entry.vm_id)
        reply.reports.append(replace(report, agent=agent, reported_at=times))
        return None

    def moved(self, batch: Batch, vm_id: str) -> bool:
        """True if an action began on the VM since ``batch`` was taken."""
        return self._actions.moved(vm_id, batch.generations[vm_id])

    def on_stored(self, reports: Iterable[VmReport]) -> None:
        for report in reports:
            self._known.stored(report.vm_id, report.hash, report.status)
            self.agents.stored(report.vm_id, report.agent)
            if self._known.is_current(report.vm_id, self._digest.reported(report.vm_id)):
                self._digest.caught_up(report.vm_id)

    def on_foreign(self, vm_ids: Iterable[str]) -> None:
        """The database says these VMs belong to another host: ignore them from now on."""
        for vm_id in vm_ids:
            self._known.foreign(vm_id)
            self._queue.withdraw(vm_id)
            self._digest.caught_up(vm_id)
            self.counters["foreign_vm"] += 1

    def on_fetch_failed(self, batch: Batch) -> None:
        """No answer: the VMs stay as they were and are fetched again."""
        self._queue.failed(batch.vm_ids)

    # -- the engine's own actions ---------------------------------------------

    def begin_action(self, vm_id: str) -> None:
        self._actions.begin(vm_id)

    def end_action(self, vm_id: str, now: float, *, settle: bool = False) -> None:
        """The action is over: whatever hash the host reports next is news.

        Without notifications, fetch now and follow up; with them, see
        :func:`.actions.after_action` (``settle``: a hot-plug).
        """
        after = self._actions.end(vm_id, settle=settle)
        self._known.forget(vm_id)
        self._digest.fell_behind(vm_id)
        if not self.owned:
            return
        if not self.events:
            self._queue.want(vm_id, None)
            for delay in self._follow_up_delays:
                self._queue.remind(vm_id, now + delay)
        elif after is After.FETCH:
            self._queue.want(vm_id, None)
        elif after is After.SETTLE:
            self._actions.settle(vm_id, self._queue.withdraw(vm_id))
            self._queue.remind(vm_id, now + self._settle)
