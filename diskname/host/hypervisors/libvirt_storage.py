"""Images for disks the libvirt backend plugs: qcow2 files in the state dir, or pool volumes.

A disk's image is named by its disk id, created on its first plug and kept for
re-plugs; it is removed when the disk leaves the VM for good (``discard``) or
when libvirt refused the plug it was created for. Images the host did not
create (a ``virsh attach-disk`` disk's) are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ...protocol.disks import DEFAULT_DISK_SIZE
from ...protocol.storage_wire import ImageRequest, StorageDomainInfo
from .base import HypervisorError
from .images import StorageError, ensure_qcow2
from .libvirt_xml import FileImage, PoolVolume, volume_xml

VOLUME_PREFIX = "diskname-"

Call = Callable[..., Awaitable[Any]]


class FileImages:
    """qcow2 files under ``<state-dir>/images`` (made with ``qemu-img``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, disk_id: str) -> Path:
        return self.folder / f"{disk_id}.qcow2"

    async def ensure(self, disk_id: str, size: int = DEFAULT_DISK_SIZE) -> tuple[FileImage, bool]:
        """The disk's image, and whether it was created just now."""
        path = self.path(disk_id)
        created = await ensure_qcow2(path, size)
        return FileImage(path), created

    async def remove(self, disk_id: str) -> bool:
        try:
            await asyncio.to_thread(self.path(disk_id).unlink)
        except FileNotFoundError:
            return False
        return True

    def owns(self, source: str) -> bool:
        return source.startswith(f"file:{self.folder}/")


class PoolImages:
    """qcow2 volumes ``diskname-<diskId>.qcow2`` in a libvirt storage pool."""

    def __init__(self, pool: str, call: Call, conn: Callable[[], Any]) -> None:
        self.pool = pool
        self._call, self._conn = call, conn

    @staticmethod
    def volume(disk_id: str) -> str:
        return f"{VOLUME_PREFIX}{disk_id}.qcow2"

    async def _pool(self) -> Any:
        try:
            return await self._call(self._conn().storagePoolLookupByName, self.pool)
        except HypervisorError as exc:
            raise StorageError(f"libvirt storage pool {self.pool!r}: {exc}") from exc

    async def ensure(self, disk_id: str, size: int = DEFAULT_DISK_SIZE) -> tuple[PoolVolume, bool]:
        pool, name = await self._pool(), self.volume(disk_id)
        with contextlib.suppress(HypervisorError):
            await self._call(pool.storageVolLookupByName, name)
            return PoolVolume(self.pool, name), False
        try:
            await self._call(pool.createXML, volume_xml(name, size), 0)
        except HypervisorError as exc:
            raise StorageError(f"cannot create volume {name} in pool {self.pool!r}: {exc}") from exc
        return PoolVolume(self.pool, name), True

    async def remove(self, disk_id: str) -> bool:
        pool = await self._pool()
        try:
            volume = await self._call(pool.storageVolLookupByName, self.volume(disk_id))
        except HypervisorError:
            return False
        await self._call(volume.delete, 0)
        return True

    def owns(self, source: str) -> bool:
        return source.startswith(f"volume:{self.pool}/{VOLUME_PREFIX}")


Images = FileImages | PoolImages


class PoolDomains:
    """Every active libvirt storage pool as a storage domain (SPEC §18).

    A floating disk's image is the volume ``diskname-<diskId>.qcow2`` in its
    pool: the one a plug of that disk (its device names the pool) attaches.
    """

    def __init__(self, call: Call, conn: Callable[[], Any]) -> None:
        self._call, self._conn = call, conn

    def images(self, pool: str) -> PoolImages:
        return PoolImages(pool, self._call, self._conn)

    async def list(self) -> list[StorageDomainInfo]:
        found = []
        for pool in await self._call(self._conn().listAllStoragePools, 0):
            if not await self._call(pool.isActive):
                continue
            _state, _capacity, allocation, available = await self._call(pool.info)
            found.append(StorageDomainInfo(pool.name(), "pool", available, allocation))
        return found

    async def create(self, request: ImageRequest) -> None:
        await self.images(request.domain).ensure(request.disk_id, request.size)

    async def delete(self, domain: str, disk_id: str) -> bool:
        return await self.images(domain).remove(disk_id)
