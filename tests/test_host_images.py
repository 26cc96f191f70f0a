"""The qcow2 image a host makes for a plugged disk, with the real qemu-img."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from diskname.host.hypervisors.images import StorageError, ensure_qcow2
from diskname.protocol.disks import DEFAULT_DISK_SIZE

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed"),
]


async def test_an_image_is_made_once_at_the_default_size(tmp_path: Path) -> None:
    path = tmp_path / "images" / "disk.qcow2"
    assert await ensure_qcow2(path) is True
    assert await ensure_qcow2(path) is False  # kept for re-plugs
    info = await asyncio.create_subprocess_exec(
        "qemu-img", "info", "--output=json", str(path), stdout=asyncio.subprocess.PIPE
    )
    details = json.loads((await info.communicate())[0])
    assert details["format"] == "qcow2" and details["virtual-size"] == DEFAULT_DISK_SIZE
    assert os.listdir(path.parent) == ["disk.qcow2"]


async def test_a_refused_image_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "disk.qcow2"
    with pytest.raises(StorageError, match="qemu-img create failed"):
        await ensure_qcow2(path, size=-1)
    assert os.listdir(tmp_path) == []
