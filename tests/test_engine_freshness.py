"""The engine's view of guest agents and confirmations (SPEC §17), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from diskname.engine.core.models import Attachment, GuestAgent
from diskname.engine.core.sync.freshness import GuestAgents, agent_key
from diskname.protocol.guest_wire import AgentInfo, Confirmed, wall_time
from diskname.protocol.host_wire import StatsEntry

VM = "00000000-0000-4000-8000-000000000001"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(status: str, *sources: str) -> StatsEntry:
    return StatsEntry(VM, "Up", "h", AgentInfo(status, 3, wall_time(0), sources))


def test_an_agent_is_written_when_it_comes_or_goes_and_not_while_it_stays() -> None:
    agents = GuestAgents()
    agents.took([entry("up", "agent")], {VM}, T0)
    (change,) = agents.take_changes()
    assert change.agent == GuestAgent("up", datetime.fromtimestamp(0, UTC), ("agent",))
    agents.took([entry("up", "agent")], {VM}, T0)
    assert agents.take_changes() == []  # the same: no write
    agents.took([entry("unresponsive")], {VM}, T0)
    (gone,) = agents.take_changes()
    assert gone.agent.stale and gone.agent.sources == ()
    agents.not_written([gone])  # the database was away: offered again
    assert [c.agent.status for c in agents.take_changes()] == ["unresponsive"]
    agents.load({})  # reloaded, the VM's agent not known: offered again (a guarded write)
    agents.took([entry("unresponsive")], {VM}, T0)
    assert len(agents.take_changes()) == 1


def test_a_reload_says_what_is_stored_so_a_restart_writes_only_what_moved() -> None:
    other = "00000000-0000-4000-8000-000000000002"
    agents = GuestAgents()
    agents.load({VM: ("up", ("agent",)), other: ("up", ("agent",))})
    gone = StatsEntry(other, "Up", "h", AgentInfo("unresponsive", 3, wall_time(0), ()))
    agents.took([entry("up", "agent"), gone], {VM, other}, T0)
    assert [(c.vm_id, c.agent.status) for c in agents.take_changes()] == [(other, "unresponsive")]
    assert agents.fetched(VM, None) is None  # stored as it is: the hash write keeps it


def test_a_flap_back_to_what_is_stored_before_the_write_writes_nothing() -> None:
    agents = GuestAgents()
    agents.load({VM: ("up", ("agent",))})
    agents.took([entry("unresponsive")], {VM}, T0)
    agents.took([entry("up", "agent")], {VM}, T0)
    assert agents.take_changes() == []


def test_agents_in_the_same_state_share_one_key() -> None:
    agents = GuestAgents()
    a = "00000000-0000-4000-8000-00000000000a"
    b = "00000000-0000-4000-8000-00000000000b"
    agents.load({a: ("up", ("agent",)), b: ("up", ("agent",))})
    assert agents._known[a] is agents._known[b]


def test_an_unregistered_vm_waits_for_its_hash_and_a_change_stored_with_it_is_announced() -> None:
    agents = GuestAgents()
    agents.took([entry("up", "agent")], set(), T0)
    assert agents.take_changes() == []
    agents.stored(VM, agents.fetched(VM, None))
    assert agents.take_changes() == [] and agents.take_announced() == []
    later = AgentInfo("unresponsive", 3, wall_time(5), ())
    agents.stored(VM, agents.fetched(VM, later))
    (announced,) = agents.take_announced()
    assert announced.agent.status == "unresponsive"
    assert agents.take_changes() == []  # written with the hash already


def test_confirmations_keep_the_newest_time_per_source_and_the_cursor() -> None:
    agents = GuestAgents()
    t0 = round(T0.timestamp() * 1000)
    other = "00000000-0000-4000-8000-0000000000ff"  # not registered on this host
    ours = {VM}.__contains__
    agents.confirmed(Confirmed("r:1", {"agent": {VM: t0, other: t0}}), ours)
    day = 86_400_000
    agents.confirmed(Confirmed("r:2", {"agent": {VM: t0 - day}, "qemu-ga": {VM: t0}}), ours)
    assert agents.cursor == "r:2"
    assert agents.reported_at(VM) == {"agent": T0, "qemu-ga": T0}
    assert agents.reported_at(other) == {}  # a host confirms its own VMs alone
    att = Attachment(VM, "d", "dev", "virtio", True, None, "/dev/vdb", "serial", T0)
    assert att.confirmed(agents.reported_at(VM)).reported_at == T0
    later = T0 + timedelta(seconds=60)
    stored = att.confirmed({"agent": later})
    assert stored.confirmed({"agent": T0}).reported_at == later  # never backwards
    assert att.confirmed({"qemu-ga": later}).reported_at is None  # another source's
    assert stored.to_json()["reported_at"] == later.isoformat()


def test_an_agent_key_is_the_same_whatever_order_or_iterable_its_sources_come_in() -> None:
    key = agent_key("up", ("agent", "qemu-ga"))
    assert agent_key("up", ["qemu-ga", "agent"]) is key
    assert agent_key("up", iter(["qemu-ga", "agent", "agent"])) is key
    assert agent_key("up", filter(None, ["agent", "", "qemu-ga"])) == key
