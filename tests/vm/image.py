"""Build (once) and cache a Debian 12 guest image for the real-VM tests.

The recipe below is everything that decides the image's content; its hash
names the cache folder (``~/.cache/diskname-vm/<hash>/``, or
``$DISKNAME_VM_CACHE``), so changing the recipe builds a new image and an
unchanged recipe never builds twice. A build happens in a scratch folder and
is renamed into place only when complete, under a lock, so a CI step and a
test run never see half an image.

The guest: ``debootstrap --variant=minbase`` of bookworm with systemd, udev,
python3 and python3-pyudev from Debian, Debian's ``qemu-guest-agent`` and
kernel, ``fdisk`` and ``lvm2`` (the guest-view proof partitions, formats and
stacks LVM on hot-plugged disks); no pip, no venv, no orjson. The agent is
installed as SPEC §16 says a guest gets it: ``diskname-agent.pyz`` on the
system python3. The archive is not in the image: each test run builds it into
a folder the guest mounts over 9p (mount tag ``diskname``) at
``/opt/diskname`` (:func:`agent_share`), and
the project's own udev rule and unit (packaging/, ExecStart pointed at the
archive) start it as user ``diskname`` when the ``ovirt-guest-agent.0``
virtio-serial port appears.

``python -m tests.vm.image`` builds the image and prints its folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
PACKAGES = (
    "systemd-sysv",
    "udev",
    "python3",
    "python3-pyudev",
    "qemu-guest-agent",
    "kmod",
    "initramfs-tools",
    "linux-image-amd64",
    # For the guest-view proof (tests/vm/view.py): sfdisk, LVM (mkfs.ext4 is in minbase).
    "fdisk",
    "lvm2",
)
INITRD_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_console",
    "sd_mod",
    "ext4",
    "9p",
    "9pnet_virtio",
)
IMAGE_SIZE = "2G"
MOUNT_TAG = "diskname"
GUEST_SHARE = "/opt/diskname"
PYZ = "diskname-agent.pyz"
PACKAGING = Path(__file__).resolve().parents[2] / "packaging"


def _agent_unit() -> str:
    """The packaged unit, started from the archive on the share (with debug logs)."""
    unit = (PACKAGING / "systemd" / "diskname-agent.service").read_text()
    start = f"ExecStart=/usr/bin/python3 {GUEST_SHARE}/{PYZ} agent"
    unit = re.sub(r"^ExecStart=\S+ diskname agent", start, unit, flags=re.M)
    return unit.replace(
        "--config /etc/diskname/agent.toml", "--config /etc/diskname/agent.toml --log-level DEBUG"
    )


FILES: dict[str, str] = {
    "etc/hostname": "dnguest\n",
    "etc/fstab": "/dev/vda / ext4 rw,noatime 0 1\n",
    "etc/initramfs-tools/modules": "\n".join(INITRD_MODULES) + "\n",
    "etc/initramfs-tools/conf.d/diskname": "MODULES=list\nCOMPRESS=gzip\n",
    # The folder with the agent's archive, read-only, over 9p.
    "etc/systemd/system/opt-diskname.mount": f"""\
[Unit]
Description=diskname agent archive from the host (9p)
[Mount]
What={MOUNT_TAG}
Where={GUEST_SHARE}
Type=9p
Options=trans=virtio,version=9p2000.L,ro
""",
    "etc/systemd/system/diskname-agent.service": _agent_unit(),
    "etc/systemd/system/diskname-agent.service.d/share.conf": f"""\
[Unit]
RequiresMountsFor={GUEST_SHARE}
""",
    "etc/udev/rules.d/70-diskname-agent.rules": (
        PACKAGING / "udev" / "70-diskname-agent.rules"
    ).read_text(),
    "etc/diskname/agent.toml": "[agent]\n",
}
# Boot faster: nothing in these tests needs them.
USER = [
    "useradd",
    "--system",
    "--user-group",
    "--no-create-home",
    "--shell",
    "/usr/sbin/nologin",
    "diskname",
]
MASKED = (
    "systemd-timesyncd.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "lvm2-monitor.service",  # dmeventd: no snapshots or mirrors to watch
)


def recipe() -> dict[str, object]:
    return {
        "suite": SUITE,
        "packages": PACKAGES,
        "files": FILES,
        "masked": MASKED,
        "size": IMAGE_SIZE,
        "user": USER,
        "version": 2,
    }


def recipe_hash() -> str:
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def agent_share(folder: Path) -> Path:
    """``folder`` holding a fresh diskname-agent.pyz: what a guest mounts at /opt/diskname.

    Boot the image with this folder as the 9p share with mount tag
    :data:`MOUNT_TAG` (QEMU: ``-virtfs local,path=FOLDER,mount_tag=diskname,...``).
    """
    from diskname.pyz import build

    folder.mkdir(parents=True, exist_ok=True)
    build(folder / PYZ)
    return folder


def cache_root() -> Path:
    configured = os.environ.get("DISKNAME_VM_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "diskname-vm"


@dataclass(frozen=True, slots=True)
class Image:
    folder: Path

    @property
    def rootfs(self) -> Path:
        return self.folder / "rootfs.img"

    @property
    def kernel(self) -> Path:
        return self.folder / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.folder / "initrd.img"

    def exists(self) -> bool:
        return all(p.is_file() for p in (self.rootfs, self.kernel, self.initrd))


def missing_tools() -> list[str]:
    tools = ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4")
    return [tool for tool in tools if shutil.which(tool) is None]


def debian_mirror() -> str:
    """The Debian mirror apt is configured with on this machine."""
    texts = [p.read_text() for p in Path("/etc/apt").glob("sources.list*") if p.is_file()]
    texts += [p.read_text() for p in Path("/etc/apt/sources.list.d").glob("*") if p.is_file()]
    for text in texts:
        for url in re.findall(r"(?:URIs:|^deb)\s+(\S+)", text, re.M):
            if "debian" in url and "security" not in url:
                return str(url)
    return "http://deb.debian.org/debian"


def _run(*args: str, log: Path) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(args)}\n".encode())
        out.flush()
        result = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{tail}")


def _configure(root: Path) -> None:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for unit in MASKED:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (root / GUEST_SHARE.lstrip("/")).mkdir(parents=True, exist_ok=True)
    # No password: nobody logs in; the console shows the journal.
    (root / "etc/securetty").unlink(missing_ok=True)


def _slim(root: Path) -> None:
    for rel in ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt/archives"):
        shutil.rmtree(root / rel, ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _build(target: Path, log: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    try:
        root = scratch / "root"
        _run(
            "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
            SUITE, str(root), debian_mirror(), log=log,
        )  # fmt: skip
        _configure(root)
        _run("chroot", str(root), *USER, log=log)
        _run("chroot", str(root), "update-initramfs", "-u", "-k", "all", log=log)
        out = scratch / "image"
        out.mkdir()
        shutil.copy(max((root / "boot").glob("vmlinuz-*")), out / "vmlinuz")
        shutil.copy(max((root / "boot").glob("initrd.img-*")), out / "initrd.img")
        _slim(root)
        _run(
            "mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root),
            str(out / "rootfs.img"), IMAGE_SIZE, log=log,
        )  # fmt: skip
        (out / "recipe.json").write_text(json.dumps(recipe(), indent=2, sort_keys=True))
        out.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_image(root: Path | None = None) -> tuple[Image, float]:
    """The cached image for the current recipe, built if needed; and the build seconds."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    image = Image(root / recipe_hash())
    if image.exists():
        return image, 0.0
    with _locked(root / ".lock"):
        if image.exists():
            return image, 0.0
        started = time.monotonic()
        _build(image.folder, root / f"{recipe_hash()}.log")
        return image, time.monotonic() - started


def main() -> int:
    missing = missing_tools()
    if missing:
        print(f"cannot build the guest image, missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    image, seconds = ensure_image()
    note = f"built in {seconds:.0f}s" if seconds else "cached"
    print(f"{image.folder} ({note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
