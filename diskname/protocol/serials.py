"""What a guest reports as a disk serial, cleaned the same way by every tier.

Serials reach us through the agent (udev, sysfs, WMI) and through qemu-ga, and
Windows in particular hands them over damaged in known ways (FACTS §10):

- padded with spaces and NULs: storage descriptors carry fixed-size fields and
  qemu-ga copies them untrimmed. :func:`trim` removes both, at both ends.
- ``0`` after a boot or a hot-plug (virtio-win#362), or one value shared by
  several disks (virtio-win#353, harvester#5697). Neither names a disk, so
  :func:`clean` and :func:`drop_shared` turn them into "no serial" and the
  address fallback of SPEC §2 decides.
- ATA serials with every two bytes swapped (Windows 7 and older read the
  IDENTIFY words in the wrong byte order). Which form is right cannot be told
  from the text alone, so :func:`candidates` yields both; the matcher tries
  each against the serials it knows.

Pure functions, no I/O; the agent runs this on Python 3.9.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TypeVar

# What Windows and its drivers write when a disk has no usable serial: virtio-win's
# zero, and oVirt's Windows agent's own marker for "the SMART ioctl found none".
NO_SERIAL = frozenset({"0", "NO SERIAL NUMBER"})
# ATA IDENTIFY's serial field: 20 bytes, the unit the byte swap works on.
ATA_SERIAL_BYTES = 20

K = TypeVar("K")


def _padding(char: str) -> bool:
    return char.isspace() or char == "\x00"


def trim(raw: str | bytes | None) -> str | None:
    """The serial without leading or trailing white space and NULs; None when nothing is left.

    Bytes are read as UTF-8 (undecodable bytes replaced). White space inside
    the serial is kept: it is part of some vendors' serials.
    """
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    start, end = 0, len(text)
    while start < end and _padding(text[start]):
        start += 1
    while end > start and _padding(text[end - 1]):
        end -= 1
    return text[start:end] or None


def clean(raw: str | bytes | None) -> str | None:
    """:func:`trim`, and None for the values that mean "no serial" (``0``...)."""
    text = trim(raw)
    if text is None or text.upper() in NO_SERIAL:
        return None
    return text


def swap_pairs(text: str) -> str:
    """Every two characters swapped (``ab cd`` -> ``ba dc``); an odd last one stays."""
    chars = list(text)
    for i in range(0, len(chars) - 1, 2):
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


def candidates(raw: str | bytes | None) -> Iterator[str]:
    """The forms a reported serial may stand for, the reported one first, no repeats.

    The reported form, trimmed; then, byte-swapped: the untrimmed text if the
    guest kept the padding, else the trimmed text with the one space of padding
    an odd length lost, on either side. A matcher should accept a swapped form
    only when the reported one matches nothing.
    """
    first = clean(raw)
    if first is None:
        return
    seen = {first}
    yield first
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    forms = [text, first]
    if len(first) % 2:
        forms += [first + " ", " " + first]
    for form in forms:
        swapped = clean(swap_pairs(form))
        if swapped is not None and swapped not in seen:
            seen.add(swapped)
            yield swapped


def drop_shared(serials: Mapping[K, str | None]) -> dict[K, str | None]:
    """The same mapping with every serial that several keys share replaced by None.

    A serial two disks report names neither of them (virtio-win#353).
    Comparison is on the cleaned text, so ``"AB "`` and ``"AB"`` are shared.
    """
    cleaned = {key: clean(value) for key, value in serials.items()}
    counts = Counter(value for value in cleaned.values() if value is not None)
    return {k: v if v is not None and counts[v] == 1 else None for k, v in cleaned.items()}
