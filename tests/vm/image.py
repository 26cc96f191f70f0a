"""Build (once) and cache a Debian 12 guest image for the real-VM tests.

The recipe below is everything that decides the image's content; its hash
names the cache folder (``~/.cache/diskname-vm/<hash>/``, or
``$DISKNAME_VM_CACHE``), so changing the recipe builds a new image and an
unchanged recipe never builds twice. A build happens in a scratch folder and
is renamed into place only when complete, under a lock, so a CI step and a
test run never see half an image.

The guest: ``debootstrap --variant=minbase`` of bookworm with systemd, udev,
Python and pyudev from Debian, Debian's ``qemu-guest-agent`` and kernel, and
orjson from a wheel fetched on the host (bookworm has no python3-orjson).
The project itself is not in the image: the guest mounts the checkout over
9p (mount tag ``diskname``) at ``/opt/diskname`` and a udev rule starts the
agent when the ``ovirt-guest-agent.0`` virtio-serial port appears.

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
import zipfile
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
ORJSON = "3.10.7"
IMAGE_SIZE = "2G"
MOUNT_TAG = "diskname"
GUEST_SOURCE = "/opt/diskname"

FILES: dict[str, str] = {
    "etc/hostname": "dnguest\n",
    "etc/fstab": "/dev/vda / ext4 rw,noatime 0 1\n",
    "etc/initramfs-tools/modules": "\n".join(INITRD_MODULES) + "\n",
    "etc/initramfs-tools/conf.d/diskname": "MODULES=list\nCOMPRESS=gzip\n",
    # The host's checkout, read-only, over 9p.
    "etc/systemd/system/opt-diskname.mount": f"""\
[Unit]
Description=diskname checkout from the host (9p)
[Mount]
What={MOUNT_TAG}
Where={GUEST_SOURCE}
Type=9p
Options=trans=virtio,version=9p2000.L,ro
""",
    # Started by the udev rule below when the port appears; gone with it.
    "etc/systemd/system/diskname-agent.service": f"""\
[Unit]
Description=diskname guest agent (from the host's checkout)
BindsTo=dev-virtio\\x2dports-ovirt\\x2dguest\\x2dagent.0.device
After=dev-virtio\\x2dports-ovirt\\x2dguest\\x2dagent.0.device systemd-udevd.service
RequiresMountsFor={GUEST_SOURCE}
[Service]
Environment=PYTHONPATH={GUEST_SOURCE} PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ExecStart=/usr/bin/python3 -m diskname agent --log-level DEBUG
Restart=always
RestartSec=1
""",
    "etc/udev/rules.d/90-diskname-agent.rules": (
        'SUBSYSTEM=="virtio-ports", ATTR{name}=="ovirt-guest-agent.0", '
        'TAG+="systemd", ENV{SYSTEMD_WANTS}+="diskname-agent.service"\n'
    ),
}
# Boot faster: nothing in these tests needs them.
MASKED = ("systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer")


def recipe() -> dict[str, object]:
    return {
        "suite": SUITE,
        "packages": PACKAGES,
        "orjson": ORJSON,
        "files": FILES,
        "masked": MASKED,
        "size": IMAGE_SIZE,
        "version": 1,
    }


def recipe_hash() -> str:
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


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
    (root / GUEST_SOURCE.lstrip("/")).mkdir(parents=True, exist_ok=True)
    # No password: nobody logs in; the console shows the journal.
    (root / "etc/securetty").unlink(missing_ok=True)


def _install_orjson(root: Path, scratch: Path, log: Path) -> None:
    wheels = scratch / "wheels"
    _run(
        sys.executable, "-m", "pip", "download", "-q", f"orjson=={ORJSON}", "--no-deps",
        "--only-binary=:all:", "--python-version", "3.11",
        "--platform", "manylinux2014_x86_64", "-d", str(wheels), log=log,
    )  # fmt: skip
    site = root / "usr/local/lib/python3.11/dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    for wheel in wheels.glob("orjson-*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)


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
        _install_orjson(root, scratch, log)
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
