"""The host's view of a VM's guest sources and their confirmations (SPEC §17), without I/O."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.host.api import agent_info
from diskname.host.confirmations import Confirmations
from diskname.host.freshness import Change, Freshness
from diskname.host.vm import Vm, VmState
from diskname.protocol import guest_wire as gw
from diskname.protocol.host_wire import BadHostMessage, StatsReply, parse_stats_reply

VM1 = "00000000-0000-4000-8000-000000000001"
VM2 = "00000000-0000-4000-8000-000000000002"


def test_a_vm_no_source_spoke_to_is_none_since_it_was_first_seen() -> None:
    fresh = Freshness(wall=100.0)
    assert (fresh.status, fresh.since, fresh.sources) == ("none", 100.0, ())
    assert fresh.expire(now=1e9, timeout=15, wall=200.0) == []
    assert fresh.gone("agent", 200.0) is None  # never up: nothing goes


def test_the_agent_comes_goes_by_silence_and_comes_back() -> None:
    fresh = Freshness(wall=0.0)
    came = fresh.seen("agent", now=10.0, wall=1000.0, heartbeats=True)
    assert came == Change("agent", True, "spoke", "none", "up")
    assert (fresh.status, fresh.since, fresh.sources) == ("up", 1000.0, ("agent",))
    assert fresh.seen("agent", now=14.0, wall=1004.0, heartbeats=True) is None
    assert fresh.next_expiry(timeout=15) == 29.0
    assert fresh.expire(now=29.0, timeout=15, wall=1019.0) == []  # not *more* than 15 s yet
    (went,) = fresh.expire(now=29.5, timeout=15, wall=1019.5)
    assert went == Change("agent", False, "no heartbeat for 15 s", "up", "unresponsive")
    assert (fresh.status, fresh.since, fresh.sources) == ("unresponsive", 1019.5, ())
    assert fresh.next_expiry(timeout=15) is None
    assert fresh.seen("agent", now=40.0, wall=1030.0, heartbeats=True) is not None
    assert (fresh.status, fresh.since) == ("up", 1030.0)


def test_the_vm_stays_up_while_one_source_is_and_qemu_ga_never_expires() -> None:
    fresh = Freshness(wall=0.0)
    fresh.seen("qemu-ga", now=0.0, wall=10.0, heartbeats=False)
    fresh.confirm("agent", now=0.0, wall=11.0, heartbeats=True)
    assert fresh.sources == ("agent", "qemu-ga")
    change = fresh.gone("agent", wall=12.0)
    assert change == Change("agent", False, "channel closed", "up", "up")
    assert (fresh.status, fresh.since) == ("up", 10.0)  # the status did not move
    assert fresh.expire(now=1e6, timeout=15, wall=13.0) == []
    fresh.gone("qemu-ga", wall=14.0, why="qemu-ga connection lost")
    assert (fresh.status, fresh.since) == ("unresponsive", 14.0)
    assert fresh.confirmed == {"agent": 11.0}  # the names stay confirmed when they were


def test_confirmations_after_a_cursor_list_each_vm_once_oldest_first() -> None:
    conf = Confirmations(run="r1")
    start = conf.cursor
    assert conf.after(start) == ("r1:0", [])
    for vm in (VM1, VM2, VM1):
        conf.note(vm)
    assert conf.after(start) == ("r1:3", [VM2, VM1])
    assert conf.after("r1:2") == ("r1:3", [VM1])
    assert conf.after("r1:3") == ("r1:3", [])
    # Another run's cursor, or garbage: every VM that ever confirmed.
    assert conf.after("r0:99")[1] == [VM2, VM1]
    assert conf.after("nonsense")[1] == [VM2, VM1]
    cursor, first = conf.after(start, limit=1)
    assert (cursor, first) == ("r1:2", [VM2])
    assert conf.after(cursor, limit=1) == ("r1:3", [VM1])
    conf.forget(VM1)
    assert conf.after(start) == ("r1:3", [VM2])


def test_agent_info_round_trips_and_an_old_hosts_unknown_reads_as_none() -> None:
    since = gw.wall_time(0.0)
    info = gw.AgentInfo("up", 3, since, ("agent",))
    assert info.to_wire() == {"status": "up", "apiVersion": 3, "since": since, "sources": ["agent"]}
    assert gw.parse_agent(info.to_wire()) == info
    old = gw.parse_agent({"status": "unknown", "apiVersion": None})
    assert old is not None and (old.state, old.since) == ("none", None)
    # A bad since or source keeps the status, and drops what does not read.
    odd = gw.parse_agent({"status": "up", "since": "yesterday", "sources": ["x"]})
    assert odd == gw.AgentInfo("up")


def test_a_vms_agent_part_is_built_again_only_when_its_sources_move() -> None:
    """Every poll asks for every VM's agent part: a heartbeat must not rebuild it,
    and anything that moves status, since or sources must."""
    vm = Vm(VmState.new(VM1, "vm1"))
    first = agent_info(vm)
    assert first.status == "none" and agent_info(vm) is first
    vm.heartbeat(now=1.0, reported_version=3)
    up = agent_info(vm)
    assert (up.status, up.api_version, up.sources) == ("up", 3, ("agent",))
    vm.heartbeat(now=2.0, reported_version=3)  # a guest repeating itself
    vm.source_confirmed("agent", now=2.5)
    assert agent_info(vm) is up
    vm.source_seen("qemu-ga", now=3.0, heartbeats=False)
    both = agent_info(vm)
    assert both.sources == ("agent", "qemu-ga") and both.since == up.since
    vm.sources_reset("reboot")
    assert agent_info(vm).status == "unresponsive" and agent_info(vm).sources == ()
    vm.heartbeat(now=4.0, reported_version=2)  # a reset agent vouches for nothing yet
    assert agent_info(vm).api_version == 2 and agent_info(vm).status == "unresponsive"


def test_the_stats_reply_carries_the_confirmations_beside_the_digest() -> None:
    seconds = {VM1: {"agent": 1e9 + 0.0123}, VM2: {"agent": 1e9, "qemu-ga": 2e9}}
    wire = {"digest": "d1", "confirmed": gw.confirmed_wire("r:7", seconds)}
    reply = parse_stats_reply(wire)
    assert reply.vms is None and reply.confirmed is not None
    assert reply.confirmed.cursor == "r:7"
    # Per source, each VM's time in milliseconds since the epoch.
    assert reply.confirmed.at == {
        "agent": {VM1: 1_000_000_000_012, VM2: 1_000_000_000_000},
        "qemu-ga": {VM2: 2_000_000_000_000},
    }
    back = StatsReply("d1", None, 0, gw.Confirmed("r:8", {"qemu-ga": {VM2: 1000 * 1767322800}}))
    assert parse_stats_reply(back.to_wire()) == back
    # A time that is no count of milliseconds, or an unknown source, is left out;
    # VM ids are the engine's to match against its registered VMs; an unreadable
    # part is a bad reply.
    odd = {"agent": {"x": 5, VM1: "2026-01-01T00:00:00+00:00", VM2: -1}, "nope": {VM1: 5}}
    partial = {"digest": "d", "confirmed": {"cursor": "c", "ms": odd}}
    assert parse_stats_reply(partial).confirmed == gw.Confirmed("c", {"agent": {"x": 5}})
    huge = {"cursor": "c", "ms": {"agent": {VM1: 10**20, VM2: True}}}
    assert gw.parse_confirmed(huge) == gw.Confirmed("c", {"agent": {}})
    with pytest.raises(BadHostMessage):
        parse_stats_reply({"digest": "d", "confirmed": ["no"]})


@given(
    st.recursive(
        st.none() | st.text() | st.integers(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_any_confirmed_part_parses_or_is_refused_as_a_bad_host_message(raw: object) -> None:
    with contextlib.suppress(BadHostMessage):
        gw.parse_confirmed(raw)
    assert gw.asked_cursor({"confirmed": raw}) in (None, raw)
