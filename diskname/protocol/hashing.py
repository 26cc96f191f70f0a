"""A stable digest of a VM's devices and guest disk mapping.

VDSM hashed with Python's ``hash()``, which is salted per process, so every
restart looked like a change to the engine. This digest is BLAKE2b over
canonical JSON (sorted keys, no whitespace): same content, same hash, in any
process, on any day.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..compat import jsonlib


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` with sorted keys and no insignificant whitespace."""
    return jsonlib.dumps(value, option=jsonlib.OPT_SORT_KEYS)


def stable_hash(value: Any) -> str:
    """Hex digest (32 characters) of the canonical JSON of ``value``."""
    return hashlib.blake2b(canonical_json(value), digest_size=16).hexdigest()


def vm_hash(devices: Sequence[Mapping[str, Any]], mapping: Mapping[str, Any]) -> str:
    """The hash the host reports for a VM: its devices *and* its guest mapping.

    Devices are ordered by ``deviceId`` so that the order in which they were
    added does not matter; the mapping is a dict, whose keys get sorted anyway.
    """
    ordered = sorted(devices, key=lambda d: str(d.get("deviceId", "")))
    return stable_hash({"devices": ordered, "guestDiskMapping": mapping})
