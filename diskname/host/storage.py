"""A host's storage domains: where it creates the images of floating disks (SPEC §18).

One kind per hypervisor: memory for ``sim`` (nothing is written; sizes are
remembered), a directory for ``qemu`` (``<state-dir>/images``, where its plugs
look for a disk's image, so a floating disk's image is the one plugged), and
the libvirt storage pools for ``libvirt`` (:mod:`.hypervisors.libvirt_storage`).
A disk's image is named by its disk id in every kind.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Protocol

from ..protocol.storage_wire import ImageRequest, StorageDomainInfo
from .hypervisors.images import StorageError, ensure_qcow2

MEMORY_CAPACITY = 1 << 40  # what a sim domain offers: 1 TiB


class UnknownDomain(StorageError):
    """The host has no storage domain of that name."""


class Domains(Protocol):
    async def list(self) -> list[StorageDomainInfo]:
        """The host's domains with their free and used bytes."""

    async def create(self, request: ImageRequest) -> None:
        """Make the image (idempotent: an image that exists is left alone)."""

    async def delete(self, domain: str, disk_id: str) -> bool:
        """Remove the image; False when there was none."""


class MemoryDomain:
    """``sim``: a domain that remembers the images' sizes and writes nothing."""

    def __init__(self, name: str, capacity: int = MEMORY_CAPACITY) -> None:
        self.name, self.capacity = name, capacity
        self.images: dict[str, int] = {}

    def _check(self, domain: str) -> None:
        if domain != self.name:
            raise UnknownDomain(f"no storage domain {domain!r} on this host (it has {self.name!r})")

    async def list(self) -> list[StorageDomainInfo]:
        used = sum(self.images.values())
        return [StorageDomainInfo(self.name, "memory", max(0, self.capacity - used), used)]

    async def create(self, request: ImageRequest) -> None:
        self._check(request.domain)
        if request.disk_id in self.images:
            return
        if request.size > (await self.list())[0].available:
            raise StorageError(f"storage domain {self.name!r} has no room for {request.size} bytes")
        self.images[request.disk_id] = request.size

    async def delete(self, domain: str, disk_id: str) -> bool:
        self._check(domain)
        return self.images.pop(disk_id, None) is not None


class DirectoryDomain:
    """``qemu``: images as qcow2 files ``<disk_id>.qcow2`` in one directory."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name, self.folder = name, folder

    def path(self, disk_id: str) -> Path:
        return self.folder / f"{disk_id}.qcow2"

    def _check(self, domain: str) -> None:
        if domain != self.name:
            raise UnknownDomain(f"no storage domain {domain!r} on this host (it has {self.name!r})")

    async def list(self) -> list[StorageDomainInfo]:
        return [await asyncio.to_thread(self._usage)]

    def _usage(self) -> StorageDomainInfo:
        self.folder.mkdir(parents=True, exist_ok=True)
        used = sum(p.stat().st_blocks * 512 for p in self.folder.glob("*.qcow2") if p.is_file())
        return StorageDomainInfo(self.name, "directory", shutil.disk_usage(self.folder).free, used)

    async def create(self, request: ImageRequest) -> None:
        self._check(request.domain)
        # qcow2 whatever the format asked: QEMU's plug opens every image as qcow2.
        await ensure_qcow2(self.path(request.disk_id), request.size)

    async def delete(self, domain: str, disk_id: str) -> bool:
        self._check(domain)
        try:
            await asyncio.to_thread(self.path(disk_id).unlink)
        except FileNotFoundError:
            return False
        return True
