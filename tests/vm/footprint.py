"""The agent's start-up time and memory in a booted guest: the .pyz against a site-packages install.

:data:`SCRIPT` runs in the guest (through qemu-ga, as root). It starts the
agent as transient systemd units (``Type=notify``), so systemd itself times
exec to READY=1 (``ExecMainStartTimestampMonotonic`` to
``ActiveEnterTimestampMonotonic``), then reads the unit's VmRSS from /proc.
Each way runs ``agent --print`` on the guest's udev source: the archive on the
system python3 with the stdlib JSON (as built, with bytecode for this
Python; and built without it, as a guest of another Python version runs it),
and the files a ``pip install`` puts in a venv (the diskname package and
orjson, byte-compiled) on ``PYTHONPATH``. The
packaged unit's own figures (the archive, as started by udev) come last.

:func:`site_install` makes that second folder on the host for the 9p share.
"""

from __future__ import annotations

import compileall
import py_compile
import shutil
from pathlib import Path

import orjson

import diskname
from diskname.pyz import build

SCRIPT = r"""
import json, statistics, subprocess, time

def show(unit, prop):
    out = subprocess.run(["systemctl", "show", unit, "-p", prop, "--value"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

def figures(unit):
    start = int(show(unit, "ExecMainStartTimestampMonotonic"))
    ready = int(show(unit, "ActiveEnterTimestampMonotonic"))
    return {"ready_ms": round((ready - start) / 1000), "rss_kib": rss_kib(show(unit, "MainPID"))}

def measure(name, env, argv, rounds=3):
    runs = []
    for n in range(rounds):
        unit = f"dn-{name}-{n}"
        subprocess.run(["systemd-run", "--quiet", f"--unit={unit}", "-p", "Type=notify",
                        "-p", "NotifyAccess=main", *(f"--setenv={e}" for e in env), *argv],
                       check=True)
        time.sleep(0.5)  # sync-ok: let it settle after READY before reading its RSS
        runs.append(figures(unit))
        subprocess.run(["systemctl", "stop", unit], check=True)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"runs": runs}

out = {
    "pyz": measure("pyz", [], ["/usr/bin/python3", "/opt/diskname/diskname-agent.pyz",
                               "agent", "--print"]),
    "pyz_source": measure("src", [], ["/usr/bin/python3",
                                      "/opt/diskname/diskname-agent-source.pyz",
                                      "agent", "--print"]),
    "site": measure("site", ["PYTHONPATH=/opt/diskname/site"],
                    ["/usr/bin/python3", "-m", "diskname", "agent", "--print"]),
    "packaged_unit": figures("diskname-agent.service"),
}
print(json.dumps(out))
"""


def site_install(folder: Path) -> Path:
    """``folder/site``: the diskname package and this machine's orjson, byte-compiled.

    Also ``folder/diskname-agent-source.pyz``, the archive without bytecode.
    """
    build(folder / "diskname-agent-source.pyz", compiled=False)
    site = folder / "site"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(diskname.__file__).parent, site / "diskname", ignore=ignore)
    shutil.copytree(Path(orjson.__file__).parent, site / "orjson", ignore=ignore)
    # Checked by hash, not time stamp: the 9p share need not keep mtimes.
    unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
    compileall.compile_dir(site, quiet=1, invalidation_mode=unchecked)
    return site
