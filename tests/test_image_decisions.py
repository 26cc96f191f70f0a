"""The pure decisions of resuming a floating disk's image creation (SPEC §18, §19):
who resolves a left creation and how, and what a creation's failure means."""

from __future__ import annotations

import pytest

from diskname.engine.core.images import LeftImage, Outcome, Step, outcome, plan
from diskname.engine.errors import (
    EngineError,
    HostCallFailed,
    HostConflict,
    HostNotConnected,
    HostRefused,
    HostTimeout,
    HypervisorFailed,
    Invalid,
)

HOST = "7f3c1e9a-0000-4000-8000-000000000001"


def left(status: str = "locked", host: str | None = HOST, domain: str | None = "data") -> LeftImage:
    return LeftImage("d1", status, host, domain, 1 << 30, "cow", True)


@pytest.mark.parametrize("ready", [True, False])
def test_a_disk_no_longer_locked_only_loses_its_intent(ready: bool) -> None:
    for status in ("ok", "illegal"):
        assert plan(left(status), lambda _: ready) is Step.FORGET


def test_a_disk_whose_domain_is_gone_is_illegal_whoever_sweeps() -> None:
    assert plan(left(host=None, domain=None), lambda _: False) is Step.ILLEGAL
    assert plan(left(domain=None), lambda _: True) is Step.ILLEGAL


def test_only_the_connected_owner_of_the_host_creates_it_again() -> None:
    asked: list[str] = []

    def ready(host: str) -> bool:
        asked.append(host)
        return host == HOST

    assert plan(left(), ready) is Step.CREATE
    assert plan(left(host="another"), ready) is Step.WAIT
    assert asked == [HOST, "another"]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (None, Outcome.OK),
        (HostRefused("no storage domain 'data'"), Outcome.ILLEGAL),
        (HypervisorFailed("pool is full"), Outcome.ILLEGAL),
        (HostConflict("busy"), Outcome.ILLEGAL),
        (Invalid("size"), Outcome.ILLEGAL),
        (EngineError("anything else"), Outcome.ILLEGAL),
        (HostNotConnected("host h is not connected"), Outcome.RELEASE),
        (HostCallFailed("connection lost"), Outcome.RELEASE),
        (HostTimeout("no answer"), Outcome.HOLD),
    ],
)
def test_what_a_creation_ending_so_means(exc: Exception | None, expected: Outcome) -> None:
    assert outcome(exc) is expected
