"""The .pyz imports nothing Linux-only when ``sys.platform == "win32"`` (SPEC §20).

A Python on Linux plays Windows: the archive is imported with ``sys.platform``
forced to ``win32`` and every Linux-only module refused by an import hook, so
a module-level ``import termios`` (or pyudev, fcntl...) anywhere on the
agent's import path fails the test. ``win32.py`` itself (ctypes' Windows-only
calls) is left out: it is imported only to open the port or run the service,
and is checked by ``mypy --platform win32`` instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from diskname.pyz import build

PROBE = textwrap.dedent(
    """
    import asyncio, importlib.abc, json, sys

    LINUX_ONLY = {"pyudev", "fcntl", "termios", "tty", "pty", "grp", "pwd", "resource"}

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in LINUX_ONLY:
                raise ImportError(f"Linux-only module {name} imported on Windows")
            return None

    for name in list(sys.modules):
        if name.partition(".")[0] in LINUX_ONLY:
            del sys.modules[name]
    sys.meta_path.insert(0, Refuse())
    sys.platform = "win32"
    sys.path.insert(0, sys.argv[1])

    import diskname
    from diskname import __main__ as cli
    from diskname.agent import service, transport
    from diskname.agent.sources.windows import port, query, wmi

    args = cli.parse(["agent", "--source", "windows", "--windows-service"])
    source = service.make_source(service.AgentConfig())
    endpoint = transport.resolve_endpoint(None, None)
    print(json.dumps({
        "file": diskname.__file__,
        "source": type(source).__name__,
        "ports": list(endpoint.paths),
        "flags": [args.source, args.windows_service],
        "udev": "diskname.agent.sources.udev" in sys.modules,
    }))
    """
)


def test_the_pyz_imports_on_windows_without_linux_modules(tmp_path: Path) -> None:
    pyz = tmp_path / "diskname-agent.pyz"
    build(pyz, compiled=False)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(pyz)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr

    seen = json.loads(proc.stdout)
    assert seen["file"].startswith(str(pyz))
    assert seen["source"] == "WindowsSource"
    assert seen["ports"] == [
        "\\\\.\\Global\\ovirt-guest-agent.0",
        "\\\\.\\Global\\com.redhat.rhevm.vdsm",
    ]
    assert seen["flags"] == ["windows", True]
    assert seen["udev"] is False
