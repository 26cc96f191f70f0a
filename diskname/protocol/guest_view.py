"""The guest's whole view of a disk (SPEC §17), checked field by field, without I/O.

Besides its name, a mapping entry may say where the disk is linked
(``by_id``, ``by_path``), how big it is (``size``), what sits on it
(``partitions``, ``holders``: LVM, LUKS, md) and where it is mounted
(``mountpoints``). The guest is untrusted, so each value passes a grammar
before the host keeps it and again before the engine stores it; a value that
does not is dropped alone (the rest of the entry stands) and counted under
``bad_<field>``:

- ``by_id``: device paths (:func:`~.names.valid_device_path`) under
  ``/dev/disk/by-id/``; ``by_path`` one under ``/dev/disk/by-path/``;
- ``partitions``: device paths; ``holders``: device paths or bare kernel names
  (``dm-0``);
- ``mountpoints``: absolute paths of plain segments (:func:`valid_linux_mountpoint`)
  or Windows mountpoints (:func:`~.names.valid_windows_mountpoint`);
- ``size``: a whole number of bytes, 0 to 2**63 - 1.

:func:`guest_view` is what the engine serves as ``attachment.guest``: those
fields and ``in_use``, true when the disk, a partition or a holder is mounted
or something holds the disk (a tool about to format it checks that).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from .names import MAX_NAME_CHARS, is_windows_name, valid_device_path, valid_windows_mountpoint

BY_ID = "/dev/disk/by-id/"
BY_PATH = "/dev/disk/by-path/"
MAX_ITEMS = 256
MAX_SIZE = (1 << 63) - 1
LIST_FIELDS = ("by_id", "partitions", "holders", "mountpoints")
VIEW_FIELDS = ("by_id", "by_path", "size", "partitions", "holders", "mountpoints")

_KERNEL_NAME = re.compile(r"[A-Za-z0-9_:+@-][A-Za-z0-9._:+@-]*")
# A Linux mount path's segment: no control character, quote, angle bracket or backslash.
_MOUNT_SEGMENT = re.compile(r"[A-Za-z0-9._:+@,=~%# -]+")

View = dict[str, Any]


def valid_by_id(path: object) -> bool:
    return valid_device_path(path) and str(path).startswith(BY_ID) and len(str(path)) > len(BY_ID)


def valid_by_path(path: object) -> bool:
    return (
        valid_device_path(path) and str(path).startswith(BY_PATH) and len(str(path)) > len(BY_PATH)
    )


def valid_holder(name: object) -> bool:
    """A device path (``/dev/mapper/vg-lv``) or a bare kernel name (``dm-0``)."""
    if valid_device_path(name):
        return True
    return isinstance(name, str) and len(name) <= MAX_NAME_CHARS and _is_kernel_name(name)


def _is_kernel_name(name: str) -> bool:
    return _KERNEL_NAME.fullmatch(name) is not None and name not in (".", "..")


def valid_linux_mountpoint(path: object) -> bool:
    """``/`` or ``/`` then segments of letters, digits, space and ``._:+@,=~%#-``.

    No empty, ``.`` or ``..`` segment and no segment that starts or ends with a
    space: what a user reads is the directory it names.
    """
    if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_NAME_CHARS:
        return False
    if path == "/":
        return True
    return all(_good_segment(s) for s in path[1:].split("/"))


def _good_segment(segment: str) -> bool:
    if _MOUNT_SEGMENT.fullmatch(segment) is None or segment in (".", ".."):
        return False
    return segment == segment.strip()


def valid_mountpoint(path: object) -> bool:
    return valid_linux_mountpoint(path) or valid_windows_mountpoint(path)


_ITEM_RULES: dict[str, Callable[[object], bool]] = {
    "by_id": valid_by_id,
    "partitions": valid_device_path,
    "holders": valid_holder,
    "mountpoints": valid_mountpoint,
}


_REASONS = {
    "by_id": "bad_by_id",
    "partitions": "bad_partition",
    "holders": "bad_holder",
    "mountpoints": "bad_mountpoint",
}


def _clean_list(key: str, raw: Any, dropped: Counter[str]) -> list[str]:
    """The good items (at most :data:`MAX_ITEMS` looked at), sorted, once each."""
    items = raw if isinstance(raw, list) else [raw]
    rule = _ITEM_RULES[key]
    good = [item for item in items[:MAX_ITEMS] if rule(item)]
    if len(good) < len(items):
        dropped[_REASONS[key]] += len(items) - len(good)
    return sorted(set(good))


def _clean_by_path(raw: Any, dropped: Counter[str]) -> str | None:
    items = raw if isinstance(raw, list) else [raw]
    good = [item for item in items[:MAX_ITEMS] if valid_by_path(item)]
    if len(good) < len(items):
        dropped["bad_by_path"] += len(items) - len(good)
    return min(good) if good else None


def _clean_size(raw: Any, dropped: Counter[str]) -> int | None:
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= MAX_SIZE:
        return raw
    dropped["bad_size"] += 1
    return None


def clean_entry(entry: Mapping[str, Any]) -> tuple[dict[str, Any], Counter[str]]:
    """``entry`` with its view fields checked: bad values dropped, and counted by reason.

    Lists come back sorted and without duplicates (the guest's order is not
    ours to hash); a list left empty is left out. Other keys are untouched.
    """
    dropped: Counter[str] = Counter()
    out = {k: v for k, v in entry.items() if k not in VIEW_FIELDS}
    for key in LIST_FIELDS:
        if key in entry:
            kept = _clean_list(key, entry[key], dropped)
            if kept:
                out[key] = kept
    if "by_path" in entry:
        by_path = _clean_by_path(entry["by_path"], dropped)
        if by_path is not None:
            out["by_path"] = by_path
    if "size" in entry:
        size = _clean_size(entry["size"], dropped)
        if size is not None:
            out["size"] = size
    return out, dropped


def clean_mapping(
    mapping: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, dict[str, Any]], Counter[str]]:
    """Every entry of a mapping through :func:`clean_entry`; what was dropped, summed."""
    dropped: Counter[str] = Counter()
    out: dict[str, dict[str, Any]] = {}
    for key, entry in mapping.items():
        if not isinstance(entry, Mapping):
            out[key] = entry  # not a view's business: the name check drops it
            continue
        out[key], bad = clean_entry(entry)
        dropped.update(bad)
    return out, dropped


def guest_view(entry: Mapping[str, Any]) -> tuple[View, Counter[str]]:
    """``attachment.guest`` from the entry the disk was matched by, and what was dropped.

    Keys the guest did not report (or reported only bad values for) are absent;
    ``in_use`` is always there.
    """
    cleaned, dropped = clean_entry({k: entry[k] for k in VIEW_FIELDS if k in entry})
    if is_windows_name(entry.get("name")) and "mountpoints" in cleaned:
        _windows_mountpoints_only(cleaned, dropped)
    view: View = dict(cleaned)
    view["in_use"] = bool(cleaned.get("mountpoints") or cleaned.get("holders"))
    return view, dropped


def _windows_mountpoints_only(cleaned: dict[str, Any], dropped: Counter[str]) -> None:
    """A Windows disk's mountpoints are drive letter, folder or volume paths (SPEC §20)."""
    kept = [p for p in cleaned["mountpoints"] if valid_windows_mountpoint(p)]
    if len(kept) < len(cleaned["mountpoints"]):
        dropped["bad_mountpoint"] += len(cleaned["mountpoints"]) - len(kept)
    if kept:
        cleaned["mountpoints"] = kept
    else:
        del cleaned["mountpoints"]


def in_use_of(view: Mapping[str, Any] | None) -> bool:
    """Whether a stored view says the disk is in use (False when there is none)."""
    return bool(view and view.get("in_use"))
