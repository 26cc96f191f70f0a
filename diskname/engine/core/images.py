"""What to do with a floating disk's image creation, as pure decisions (SPEC §18, §19).

A floating disk is "locked" while its image is made; the engine making it writes
an *image intent* with the disk and removes it with the outcome
(:mod:`..db.images`). An intent left by an engine that is gone is *left*: the
engine that owns the disk's host resolves it (:func:`plan`) by creating the image
again, which the host does idempotently (an image that exists is left alone), or
marks the disk "illegal" when there is no host to ask. What a creation's failure
means (:func:`outcome`) is the same for the first engine and for the one that
resumes it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import HostCallFailed, HostNotConnected, HostTimeout

DOMAIN_GONE = "its storage domain is gone (its host was removed) before the image was made"


@dataclass(frozen=True, slots=True)
class LeftImage:
    """A creation whose engine is gone, as the database has it now."""

    disk_id: str
    status: str  # the disk's status: "locked" unless it was resolved meanwhile
    host_id: str | None  # its domain's host; None once the domain (its host) is removed
    domain: str | None  # the domain's name
    size: int
    format: str
    sparse: bool


class Step(enum.Enum):
    FORGET = "forget"  # the disk is not locked any more: drop the intent alone
    ILLEGAL = "illegal"  # nobody can make the image: the disk is illegal
    CREATE = "create"  # ask the host to create the image again (idempotent there)
    WAIT = "wait"  # not this engine's to resolve, or its host is not connected now


def plan(left: LeftImage, ready: Callable[[str], bool]) -> Step:
    """The step for ``left``; ``ready(host_id)``: this engine owns that host and is
    connected to it. A domain that is gone has no owner: any engine marks it."""
    if left.status != "locked":
        return Step.FORGET
    if left.host_id is None or left.domain is None:
        return Step.ILLEGAL
    return Step.CREATE if ready(left.host_id) else Step.WAIT


class Outcome(enum.Enum):
    OK = "ok"  # the image exists
    ILLEGAL = "illegal"  # the host's word: it cannot make it
    RELEASE = "release"  # unknown (no connection, or it broke): let the owner retry
    HOLD = "hold"  # the host is slow: it may still be making it; keep the intent


def outcome(exc: Exception | None) -> Outcome:
    """What ``Image.create`` ending with ``exc`` (None: it answered) means for the disk."""
    if exc is None:
        return Outcome.OK
    if isinstance(exc, HostNotConnected | HostCallFailed):
        return Outcome.RELEASE
    if isinstance(exc, HostTimeout):
        return Outcome.HOLD
    return Outcome.ILLEGAL
