"""schemathesis against a real dev cluster: every check, the stateful phase on, 0 failures.

The document (``/api/openapi.json``) and the API must agree: schema-valid requests
are accepted, invalid ones get a 4xx, no 5xx, every status and header documented,
405s carry ``Allow``, a deleted resource is gone. ``/api/events`` is left out (a
stream never ends). The run needs a network namespace (``unshare -n``, root):
see ``tests/api_fuzz.py``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not _can_unshare(), reason="needs unshare -n (root) for a private network"),
    pytest.mark.skipif(shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None,
                       reason="schemathesis is not installed (pip install -e '.[test]')"),
]  # fmt: skip


async def test_schemathesis_finds_nothing(pg_dsn: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="dnfz"))
    try:
        proc = await asyncio.create_subprocess_exec(
            "unshare", "-n", sys.executable, "-m", "tests.api_fuzz", pg_dsn, str(work),
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output = (await proc.communicate())[0].decode(errors="replace")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = re.search(r"^fuzz: (\d+) cases, (\d+) failures$", output, re.M)
    print(output[-2500:])
    assert proc.returncode == 0 and summary is not None, output[-6000:]
    assert int(summary.group(2)) == 0 and int(summary.group(1)) > 1000
