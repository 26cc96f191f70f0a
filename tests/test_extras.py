"""A tier whose extra is not installed says which to install: one line, exit 2.

Each case runs ``diskname`` in a fresh interpreter where the extra's modules
cannot be found (``sys.modules[name] = None`` is what importlib reads as "not
installed"), so no traceback can hide behind an import made earlier.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diskname import extras


def run_without(hidden: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"for name in {hidden!r}: sys.modules[name] = None\n"
        "from diskname.__main__ import main\n"
        f"sys.exit(main({list(args)!r}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("hidden", "args", "line"),
    [
        (
            ["aiohttp"],
            ["engine"],
            "engine needs the [engine] extra (aiohttp not installed): "
            "pip install 'diskname[engine]'",
        ),
        (
            ["aiohttp", "asyncpg"],
            ["config", "engine"],
            "engine needs the [engine] extra (aiohttp, asyncpg not installed): "
            "pip install 'diskname[engine]'",
        ),
        (
            ["asyncpg"],
            ["dev"],
            "dev needs the [all] extra (asyncpg not installed): pip install 'diskname[all]'",
        ),
        (
            ["asyncpg"],
            ["bench"],
            "bench needs the [all] extra (asyncpg not installed): pip install 'diskname[all]'",
        ),
    ],
)
def test_a_missing_extra_is_one_line_and_exit_2(
    hidden: list[str], args: list[str], line: str
) -> None:
    out = run_without(hidden, *args)
    assert (out.returncode, out.stderr, out.stdout) == (2, f"diskname: {line}\n", "")


def test_the_agent_and_the_host_need_no_extra_module() -> None:
    out = run_without(["aiohttp", "asyncpg", "pgserver"], "config", "host")
    assert out.returncode == 0, out.stderr
    out = run_without(["aiohttp", "asyncpg", "pgserver"], "config", "agent")
    assert out.returncode == 0, out.stderr


def test_an_engine_without_dsn_or_pgserver_says_so(short_dir: Path) -> None:
    out = run_without(
        ["pgserver"], "engine", "--state-dir", str(short_dir), "--http", "127.0.0.1:0"
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines()[-1] == (
        "diskname: no dsn is set and the embedded PostgreSQL (pgserver) is not installed: "
        "set dsn, or pip install 'diskname[engine]'"
    )


def test_the_extras_in_pyproject_match_diskname_extras() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    optional = pyproject["project"]["optional-dependencies"]
    assert set(extras.EXTRAS) <= set(optional)
    (everything,) = optional["all"]
    assert {"host", "engine"} <= set(everything.removeprefix("diskname[").rstrip("]").split(","))
    assert "diskname[all]" in optional["test"]
    bare = " ".join(pyproject["project"]["dependencies"])
    for heavy in ("aiohttp", "asyncpg", "pgserver"):
        assert heavy not in bare
