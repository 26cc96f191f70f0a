"""The command line explains itself: help in plain text with every default, and mistakes
(a bad flag, a busy port) are one line on stderr with exit status 2 that names the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskname.__main__ import HELP, TIERS, parsers
from diskname.dev import banner

ROOT = Path(__file__).parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "diskname", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_help_lists_every_command_in_plain_text() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in [*HELP, "config", "vms", "disks", "plug", "unplug", "which", "history"]:
        assert re.search(rf"^\s+{command}\s", out.stdout, re.M), command
    assert "``" not in out.stdout and ":mod:" not in out.stdout


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "version"):
            yield action


@pytest.mark.parametrize("command", sorted(parsers()[1]))
def test_every_flag_is_described_with_its_default(command: str) -> None:
    parser = parsers()[1][command]
    for action in _options(parser):
        assert action.help, (command, action.option_strings)
        if not isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            assert "(default: " in action.help, (command, action.option_strings, action.help)


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_the_defaults_in_the_help_are_the_real_ones(tier: str) -> None:
    """A number or word given as the default equals the config class's default."""
    config = TIERS[tier]().config_class()
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for action in _options(parsers()[1][tier]):
        said = re.search(r"\(default: ([\w./]+)\)$", action.help or "")
        if said is None or action.dest not in defaults:
            continue
        real = defaults[action.dest]
        if isinstance(real, int | float) and not isinstance(real, bool):
            assert float(said.group(1)) == real, (tier, action.dest)
        elif isinstance(real, str | Path):
            assert said.group(1) == str(real), (tier, action.dest)


def test_a_bad_flag_after_a_command_is_that_commands_one_line() -> None:
    out = run("agent", "--bogus")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("diskname agent: error: unrecognized arguments: --bogus")
    assert "diskname agent --help" in out.stderr


def test_a_bad_flag_value_is_one_line_naming_the_flag() -> None:
    out = run("dev", "--hosts", "many")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "--hosts" in out.stderr and "'many'" in out.stderr
    out = run("engine", "--http", "nowhere")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "diskname engine: error: argument --http" in out.stderr


def test_a_busy_port_is_one_line_naming_the_port_and_its_flag(busy_port: int) -> None:
    out = run("engine", "--http", f"127.0.0.1:{busy_port}", "--dsn", "postgresql://unused/")
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert f"127.0.0.1:{busy_port}" in out.stderr and "--http HOST:PORT" in out.stderr

    out = run("host", "--listen", f"127.0.0.1:{busy_port}", "--state-dir", "/nonexistent/x")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"127.0.0.1:{busy_port}" in out.stderr and "--listen HOST:PORT" in out.stderr


def test_dev_mode_names_the_flag_of_each_port_it_opens(busy_port: int, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    state = str(tmp_path / "state")
    out = run("dev", "--http", f"127.0.0.1:{busy_port}", "--state-dir", state)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "--http HOST:PORT" in out.stderr
    # The hosts' ports come from --rpc-port (by default the HTTP port + 1, + 2...).
    out = run(
        "dev", "--http", f"127.0.0.1:{free}", "--rpc-port", str(busy_port), "--state-dir", state
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"127.0.0.1:{busy_port}" in out.stderr and "--rpc-port PORT" in out.stderr
    assert not (tmp_path / "state").exists()  # nothing was started


def test_dev_mode_says_where_it_is_and_what_to_try() -> None:
    text = banner("http://127.0.0.1:8080")
    assert "http://127.0.0.1:8080/" in text and "/api/openapi.json" in text
    assert (
        " vms" in text
        and "plug host0-vm0" in text
        and "curl -s http://127.0.0.1:8080/api/vms" in text
    )
    assert "--url" not in text and "password" not in text
    other = banner("http://127.0.0.1:9000", admin=("admin@internal", "pw-once"))
    assert "--url http://127.0.0.1:9000" in other
    assert "admin@internal" in other and "pw-once" in other
