"""oVirt SDK's own example scripts, taken from its sdist at test time and pointed at us.

The scripts' text never enters this repository: the sdist is downloaded once into
a cache (``.ci/run`` does it; ``DISKNAME_OVIRT_SDK_CACHE`` moves the cache), a
script is read out of it, and only the values of ``url``, ``username``,
``password`` and ``ca_file`` in its ``sdk.Connection(...)`` call are replaced,
in a temporary copy. The patcher works on the script's syntax tree, so it
changes those four values and nothing else, and fails loudly when a script no
longer has them.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "ovirt-engine-sdk-python"
CONNECTION_SETTINGS = ("url", "username", "password", "ca_file")


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "diskname-ovirt-sdk"
    return Path(os.environ.get("DISKNAME_OVIRT_SDK_CACHE", default))


def sdist(version: str | None = None) -> Path | None:
    """The SDK's sdist for the installed version: from the cache, else downloaded there."""
    version = version or metadata.version(DISTRIBUTION)
    folder = cache_dir()
    name = f"{DISTRIBUTION.replace('-', '_')}-{version}.tar.gz"
    if not (folder / name).exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             f"{DISTRIBUTION}=={version}", "-d", str(folder)],
            capture_output=True, timeout=180, check=False,
        )  # fmt: skip
    return folder / name if (folder / name).exists() else None


def example(archive: Path, script: str) -> str:
    """The text of ``examples/<script>`` in the sdist."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and parts[1:] == ("examples", script):
                handle = tar.extractfile(member)
                assert handle is not None
                return handle.read().decode("utf-8")
    raise AssertionError(f"{archive.name} has no examples/{script}")


def with_connection(source: str, settings: dict[str, str]) -> str:
    """``source`` with the values of its ``sdk.Connection(...)`` settings replaced.

    ``settings`` gives every one of :data:`CONNECTION_SETTINGS`; other keywords
    (``debug``, ``log``) and every other line stay as they are.
    """
    assert set(settings) == set(CONNECTION_SETTINGS), settings
    calls = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "Connection"
    ]
    assert len(calls) == 1, f"expected one sdk.Connection(...) call, found {len(calls)}"
    values = {kw.arg: kw.value for kw in calls[0].keywords if kw.arg in settings}
    missing = set(settings) - set(values)
    assert not missing, f"the example's Connection(...) has no {sorted(missing)}"
    lines = source.encode("utf-8").splitlines(keepends=True)
    # Replace from the last value to the first, so earlier offsets stay right.
    for name, value in sorted(
        values.items(), key=lambda item: (item[1].lineno, item[1].col_offset), reverse=True
    ):
        lines = _replace(lines, value, repr(settings[name]).encode())
    return b"".join(lines).decode("utf-8")


def _replace(lines: list[bytes], node: ast.expr, text: bytes) -> list[bytes]:
    """``lines`` with ``node``'s source (ast offsets are UTF-8 byte offsets) made ``text``."""
    assert node.end_lineno is not None and node.end_col_offset is not None
    first, last = node.lineno - 1, node.end_lineno - 1
    joined = lines[first][: node.col_offset] + text + lines[last][node.end_col_offset :]
    return [*lines[:first], joined, *lines[last + 1 :]]


def run(source: str, folder: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a patched example in ``folder`` (it writes its ``example.log`` there)."""
    script = folder / "example.py"
    script.write_text(source, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
