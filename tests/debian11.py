"""A Debian 11 (bullseye) root with its python3 (3.9) and python3-pyudev, built once and cached.

The oldest Python the agent supports, as a guest has it: the distribution's
interpreter and pyudev, no pip, no orjson. ``debootstrap --variant=minbase``
into ``~/.cache/diskname-py39/<recipe hash>/`` (or ``$DISKNAME_PY39_CACHE``),
about 70 s once. :func:`chroot_command` runs a command in it inside a private
mount namespace with the given folders bound in, so nothing stays mounted.

``python -m tests.debian11`` builds it and prints its folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .vm.image import _locked, _run, debian_mirror

SUITE = "bullseye"
PACKAGES = ("python3", "python3-pyudev")
TOOLS = ("debootstrap", "unshare", "chroot", "mount")


def recipe_hash() -> str:
    blob = json.dumps({"suite": SUITE, "packages": PACKAGES, "version": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_root() -> Path:
    configured = os.environ.get("DISKNAME_PY39_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "diskname-py39"


def root_folder() -> Path:
    return cache_root() / recipe_hash()


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "a Debian 11 chroot needs root"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (apt: debootstrap)" if missing else None


def ensure_root() -> tuple[Path, float]:
    """The cached root for the current recipe, built if needed; and the build seconds."""
    root = root_folder()
    if (root / "usr/bin/python3").exists():
        return root, 0.0
    cache_root().mkdir(parents=True, exist_ok=True)
    with _locked(cache_root() / ".lock"):
        if (root / "usr/bin/python3").exists():
            return root, 0.0
        started = time.monotonic()
        scratch = Path(tempfile.mkdtemp(prefix="build-", dir=cache_root()))
        try:
            _run(
                "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                SUITE, str(scratch / "root"), debian_mirror(),
                log=cache_root() / f"{recipe_hash()}.log",
            )  # fmt: skip
            (scratch / "root").rename(root)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return root, time.monotonic() - started


def chroot_command(root: Path, argv: list[str], binds: dict[Path, str]) -> list[str]:
    """``argv`` run in ``root`` with /proc, /sys and each ``binds`` folder (host -> guest path)."""
    mounts = [("/proc", "/proc"), ("/sys", "/sys"), *((str(h), g) for h, g in binds.items())]
    script = " && ".join(
        f"mkdir -p {shlex.quote(str(root) + guest)} && "
        f"mount --bind {shlex.quote(host)} {shlex.quote(str(root) + guest)}"
        for host, guest in mounts
    )
    run = shlex.join(["chroot", str(root), *argv])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{script} && exec {run}"]


def main() -> int:
    reason = skip_reason()
    if reason:
        print(f"cannot build the Debian 11 root: {reason}", file=sys.stderr)
        return 1
    root, seconds = ensure_root()
    print(f"{root} ({f'built in {seconds:.0f}s' if seconds else 'cached'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
