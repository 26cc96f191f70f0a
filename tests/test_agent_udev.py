"""The udev source through real libudev, on a umockdev testbed.

The preload library that fakes /sys and the uevent socket must be there when
a process starts, so each scenario of :mod:`tests.udev_guest` runs in its own
``umockdev-wrapper`` process; this module only starts them and shows what
failed.
"""

from __future__ import annotations

import ctypes.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .udev_guest import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
WRAPPER = shutil.which("umockdev-wrapper")
HAVE_UMOCKDEV = WRAPPER is not None and ctypes.util.find_library("umockdev") is not None

pytestmark = pytest.mark.skipif(
    not HAVE_UMOCKDEV, reason="umockdev is not installed (apt-get install umockdev)"
)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_udev_scenario(scenario: str) -> None:
    assert WRAPPER is not None
    cmd = [WRAPPER, sys.executable, "-m", "tests.udev_guest", scenario]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, f"{scenario} failed:\n{done.stdout}\n{done.stderr}"
    assert f"{scenario}: ok" in done.stdout
