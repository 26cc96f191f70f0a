"""The grammar of a disk name a guest may report (SPEC §12), in one place.

A name is stored, and even kept by the host, only if it is a device path:
``/dev/`` then path segments of ``[A-Za-z0-9._:+@-]``, with no empty, ``.`` or
``..`` segment, at most 255 characters in all; or Windows' ``\\\\.\\PHYSICALDRIVE<n>``.
Nothing else reaches the database or the API, so a guest cannot smuggle markup,
control characters or path tricks into what a user's browser or script shows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_NAME_CHARS = 255
_SEGMENT = re.compile(r"[A-Za-z0-9._:+@-]+")
_WINDOWS = re.compile(r"\\\\\.\\PHYSICALDRIVE[0-9]{1,4}", re.IGNORECASE)


def valid_device_path(name: object) -> bool:
    """True if ``name`` is a disk name the project accepts from a guest."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        return False
    if _WINDOWS.fullmatch(name):
        return True
    if not name.startswith("/dev/"):
        return False
    segments = name[len("/dev/") :].split("/")
    return all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments)


def keep_valid(mapping: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], int]:
    """The entries of a guest mapping whose name is valid, and how many were not."""
    kept = {k: v for k, v in mapping.items() if valid_device_path(v.get("name"))}
    return kept, len(mapping) - len(kept)
