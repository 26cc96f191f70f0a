"""What the host and the engine agree a disk is, besides its name.

The serial a hypervisor gives a disk is its id's first :data:`SERIAL_CHARS`
characters: virtio-blk hands the guest at most 20 bytes of serial (FACTS §1),
and the engine matches the serial the guest reports against the same prefix.
A disk created without a size gets :data:`DEFAULT_DISK_SIZE` bytes, both in the
engine's records and in the image a host makes for it.
"""

from __future__ import annotations

SERIAL_CHARS = 20
DEFAULT_DISK_SIZE = 1 << 30


def disk_serial(disk_id: str) -> str:
    """The serial the hypervisor gives a disk: its id's first 20 characters."""
    return disk_id[:SERIAL_CHARS]
