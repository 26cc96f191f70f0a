"""The seam every device source plugs into (sim, udev)."""

from __future__ import annotations

from typing import Any, Protocol

from ...config import ConfigError
from ..records import DeviceRecord


class Source(Protocol):
    """Something that knows the guest's disks and says when they change."""

    async def start(self) -> None:
        """Begin watching; records may be available right after."""

    async def close(self) -> None:
        """Stop watching and release everything (idempotent)."""

    def snapshot(self) -> list[DeviceRecord]:
        """The disks visible right now."""
        ...

    def filesystems(self) -> list[dict[str, Any]]:
        """Usage of the mounted filesystems on those disks: ``{path, fs, total, used}``."""
        ...

    async def wait_changed(self) -> None:
        """Return once something may have changed since the last return.

        Spurious wake-ups are allowed: the caller compares mappings.
        """


class SourceUnavailable(ConfigError):
    """The requested source cannot run here (yet)."""
