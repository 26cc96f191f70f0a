"""The pure parts of REST security: password hashes, the throttle, credential parsing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskname.connguard.failures import FailureThrottle
from diskname.engine.errors import Unauthenticated
from diskname.engine.http.auth import _basic, media_types
from diskname.engine.http.passwords import dummy_hash, hash_password, verify_password


def test_a_password_hash_verifies_its_password_only() -> None:
    encoded = hash_password("correct horse")
    assert encoded.startswith("$scrypt$ln=15,r=8,p=3$")
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horse ", encoded)
    assert hash_password("correct horse") != encoded  # salted
    assert not verify_password("anything", dummy_hash())


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain",
        "$scrypt$ln=15,r=8,p=3$AAAA",
        "$bcrypt$ln=15,r=8,p=3$AAAA$AAAA",
        "$scrypt$ln=40,r=8,p=1$AAAA$AAAA",  # would need terabytes: refused, not tried
        "$scrypt$ln=x,r=8,p=1$AAAA$AAAA",
        "$scrypt$ln=10,r=8,p=1$!!!!$AAAA",
        "$scrypt$ln=10,r=8,p=1$AAAA$",
    ],
)
def test_a_malformed_hash_never_verifies(encoded: str) -> None:
    assert not verify_password("x", encoded)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_stored_text_is_a_false_or_a_true_never_a_crash(encoded: str) -> None:
    if "ln=" in encoded:
        return  # a well-formed cost would run scrypt for real; covered above
    assert verify_password("x", encoded) is False


def test_basic_credentials_are_decoded_as_utf8() -> None:
    value = base64.b64encode("zoë@internal:pa:ss wörd".encode()).decode()
    assert _basic(value) == ("zoë@internal", "pa:ss wörd")


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(st.text(max_size=60), st.binary(max_size=60).map(base64.b64encode).map(bytes.decode))
)
def test_any_basic_value_is_credentials_or_unauthenticated(value: str) -> None:
    try:
        name, password = _basic(value)
    except Unauthenticated:
        return
    assert isinstance(name, str) and isinstance(password, str)


def test_media_types_of_writes() -> None:
    assert media_types("/api/vms") == ("application/json",)
    assert media_types("/ovirt-engine/api") == ("application/xml",)
    assert media_types("/ovirt-engine/api/vms/x/diskattachments") == ("application/xml",)
    assert media_types("/ovirt-engine/apiary") is None
    assert "application/x-www-form-urlencoded" in (
        media_types("/ovirt-engine/sso/oauth/token") or ()
    )


# -- the throttle --------------------------------------------------------------------


def test_a_key_fails_freely_then_waits_twice_as_long_each_time_up_to_the_cap() -> None:
    t = FailureThrottle(free=3, base=1.0, cap=4.0)
    for now in (0.0, 1.0, 2.0):
        assert t.wait("alice", now) == 0.0
        t.failed("alice", now)
    waits = []
    now = 10.0
    for _ in range(4):
        waits.append(t.wait("alice", now))
        t.failed("alice", now)
    assert waits == [0.0, 2.0, 4.0, 4.0]  # 3 failures: waited out by 10 s; then 2, 4, capped
    assert t.wait("alice", now + 3.9) == pytest.approx(0.1)
    assert t.wait("bob", now) == 0.0


def test_success_clears_and_old_failures_are_forgotten() -> None:
    t = FailureThrottle(free=1, base=10.0, forget=100.0)
    t.failed("alice", 0.0)
    assert t.wait("alice", 1.0) == 9.0
    t.succeeded("alice")
    assert t.wait("alice", 1.0) == 0.0
    t.failed("bob", 0.0)
    assert t.wait("bob", 101.0) == 0.0 and len(t) == 0


def test_the_throttle_remembers_a_bounded_number_of_keys() -> None:
    t = FailureThrottle(free=1, max_keys=100)
    for i in range(10_000):
        t.failed(f"addr-{i}", float(i) / 1000)
    assert len(t) == 100
    assert t.wait("addr-9999", 10.0) > 0  # the newest are kept
