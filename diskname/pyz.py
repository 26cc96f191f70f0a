"""Build ``diskname-agent.pyz``: the agent in one file for a guest's own python3 (SPEC §16).

The archive holds the agent, the shared protocol code and the few modules on
their import path, nothing of the host or the engine, and no third-party
code: the guest brings pyudev (its distribution's ``python3-pyudev``) and,
if it has it, orjson (else the standard json module serves, see
:mod:`diskname.compat.jsonlib`). It runs on Python 3.9+:

    python3 diskname-agent.pyz agent --once --print

The build is the stdlib's :mod:`zipapp` over a copy of those files with one
fixed time stamp, so the same sources give the same bytes. Each module also
goes in compiled by the building Python (``module.pyc`` beside
``module.py``, hash-based and unchecked, where zipimport looks): a guest with
that same Python version starts without compiling anything (in a TCG guest
that halved the start-up), any other version finds a foreign magic number,
skips the .pyc and compiles the source as before.
"""

from __future__ import annotations

import os
import py_compile
import shutil
import tempfile
import zipapp
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
INTERPRETER = "/usr/bin/python3"
# What the agent imports at run time (the vermin step in .ci/run checks these
# files for 3.9; tests/test_pyz.py runs the agent from the archive alone).
AGENT_MODULES = (
    "__init__.py",
    "__main__.py",
    "admin.py",  # registers pki/user on the command line; imports their needs lazily
    "binding.py",
    "client",  # the CLI client's commands, registered on the same command line
    "config.py",
    "extras.py",
    "flags.py",
    "logctx.py",
    "runner.py",
    "sdnotify.py",
    "streams.py",
    "compat",
    "protocol",
    "agent",
)
# zip time stamps start in 1980; SOURCE_DATE_EPOCH wins when a build sets it.
STAMP = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
LAUNCHER = """\
import sys

if sys.version_info < (3, 9):
    sys.exit("diskname-agent.pyz needs Python 3.9 or later, this is %d.%d" % sys.version_info[:2])

from diskname.__main__ import main

sys.exit(main())
"""


def agent_files(package: Path = PACKAGE) -> Iterator[Path]:
    """Every source file of the agent build, relative to the package folder."""
    for name in AGENT_MODULES:
        path = package / name
        if path.is_file():
            yield Path(name)
        else:
            yield from sorted(p.relative_to(package) for p in path.rglob("*.py"))


def _stage(root: Path, package: Path, compiled: bool) -> None:
    for rel in agent_files(package):
        target = root / "diskname" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package / rel, target)
        if compiled:
            py_compile.compile(
                str(target),
                cfile=str(target.with_suffix(".pyc")),
                dfile=f"diskname/{rel}",
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
    (root / "__main__.py").write_text(LAUNCHER)
    for path in root.rglob("*"):
        os.utime(path, (STAMP, STAMP))


def build(
    output: Path, interpreter: str = INTERPRETER, package: Path = PACKAGE, compiled: bool = True
) -> int:
    """Write the archive to ``output`` (executable, ``#!interpreter``); its size in bytes."""
    with tempfile.TemporaryDirectory(prefix="diskname-pyz-") as scratch:
        root = Path(scratch)
        _stage(root, package, compiled)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".part")
        zipapp.create_archive(root, partial, interpreter=interpreter, compressed=True)
        partial.chmod(0o755)  # zipapp makes it executable for its owner only
        partial.replace(output)
    return output.stat().st_size
