"""The grammar of a disk name a guest may report (SPEC §12), in one place.

A name is stored, and even kept by the host, only if it is a device path:
``/dev/`` then path segments of ``[A-Za-z0-9._:+@-]``, with no empty, ``.`` or
``..`` segment, at most 255 characters in all; or Windows' ``\\\\.\\PHYSICALDRIVE<n>``.
Nothing else reaches the database or the API, so a guest cannot smuggle markup,
control characters or path tricks into what a user's browser or script shows.

Windows names are kept as the guest gives them (``\\\\.\\PhysicalDrive1`` from
qemu-ga, ``\\\\.\\PHYSICALDRIVE1`` from WMI) and compared without case
(:func:`name_key`). Every other Windows namespace path (``\\\\?\\GLOBALROOT\\...``,
``\\\\.\\C:``, ``\\??\\...``) is refused: :func:`refusal` says why, for counting.
Windows mountpoints (SPEC §17, §20) have a grammar of their own
(:func:`valid_windows_mountpoint`): a drive letter path or a volume GUID path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_NAME_CHARS = 255
_SEGMENT = re.compile(r"[A-Za-z0-9._:+@-]+")
_WINDOWS = re.compile(r"\\\\\.\\PHYSICALDRIVE[0-9]{1,4}", re.IGNORECASE)
# Paths in a Windows namespace: \\.\ (devices), \\?\ (raw), \??\ (NT), \Device\.
_WINDOWS_NAMESPACE = re.compile(r"^(\\\\[.?]\\|\\\?\?\\|\\device\\)", re.IGNORECASE)
_DRIVE_PATH = re.compile(r"[A-Za-z]:\\((?:[A-Za-z0-9 ._()+,=@#$!~{}\[\]-]+\\)*)")
_VOLUME_PATH = re.compile(
    r"\\\\\?\\Volume\{[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}\}\\", re.IGNORECASE
)


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


def is_windows_name(name: object) -> bool:
    """True for ``\\\\.\\PHYSICALDRIVE<n>`` in any case."""
    return isinstance(name, str) and _WINDOWS.fullmatch(name) is not None


def name_key(name: str) -> str:
    """What two names are compared by: Windows names without case, device paths as they are."""
    return name.upper() if is_windows_name(name) else name


def refusal(name: object) -> str | None:
    """Why ``name`` is refused (a stable reason to count under), or None if it is valid.

    ``None`` exactly when :func:`valid_device_path` is true.
    """
    if not isinstance(name, str) or not name:
        return "not_text"
    if len(name) > MAX_NAME_CHARS:
        return "too_long"
    if valid_device_path(name):
        return None
    if not name.isprintable():
        return "control"
    if _WINDOWS_NAMESPACE.match(name):
        return "windows_namespace"
    if ".." in name.replace("\\", "/").split("/"):
        return "dot_segment"
    return "not_device_path"


def valid_windows_mountpoint(path: object) -> bool:
    """True for ``D:\\``, ``D:\\some\\folder\\`` or ``\\\\?\\Volume{GUID}\\``.

    Folder names are limited to letters, digits, space and ``._()+,=@#$!~{}[]-``,
    none of them ``.`` or ``..`` or ending in a dot or a space (Windows drops
    those, so such a name is not the folder it seems to be).
    """
    if not isinstance(path, str) or len(path) > MAX_NAME_CHARS:
        return False
    if _VOLUME_PATH.fullmatch(path):
        return True
    match = _DRIVE_PATH.fullmatch(path)
    if match is None:
        return False
    folders = match.group(1).split("\\")[:-1]
    return all(f.strip() and not f.endswith((".", " ")) for f in folders)


def drive_letters(mountpoints: object) -> list[str]:
    """The drive letters among a disk's mountpoints (``["D:"]``), for showing beside its name."""
    if not isinstance(mountpoints, list):
        return []
    found = {
        p[:2].upper()
        for p in mountpoints
        if isinstance(p, str) and len(p) == 3 and valid_windows_mountpoint(p)
    }
    return sorted(found)
