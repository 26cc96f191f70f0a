"""The qcow2 image the host makes for a disk it plugs (QEMU and libvirt backends).

``qemu-img create`` writes under a temporary name that is renamed into place,
so a crash or a failed run never leaves half an image where the next plug of
the disk would take it for a whole one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ...protocol.disks import DEFAULT_DISK_SIZE
from .base import HypervisorError


class StorageError(HypervisorError):
    """The image for a disk could not be made or removed."""


async def ensure_qcow2(path: Path, size: int = DEFAULT_DISK_SIZE) -> bool:
    """Make ``path`` a new qcow2 image of ``size`` bytes unless it exists; True if made now."""
    tmp = _temporary_for(path)
    if tmp is None:
        return False
    try:
        proc = await asyncio.create_subprocess_exec(
            "qemu-img", "create", "-q", "-f", "qcow2", str(tmp), str(size),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    except OSError as exc:
        raise StorageError(f"cannot run qemu-img: {exc}") from exc
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"qemu-img create failed: {output.decode(errors='replace').strip()}")
    tmp.rename(path)
    return True


def _temporary_for(path: Path) -> Path | None:
    """Where qemu-img writes ``path``'s image first; None if the image exists."""
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp")
