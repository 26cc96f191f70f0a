"""Each setting is declared once: ``--help``, ``config --show`` and ``man diskname`` agree.

The three are read as a user reads them (subprocesses, the roff text) and held
to one another, so a default retyped anywhere, or a flag that lost its entry,
shows up here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from diskname.__main__ import HELP, config_class, parse
from diskname.config import ConfigError, resolve, settings, text
from diskname.dev import DevConfig
from diskname.engine.config import EngineConfig
from diskname.flags import given
from diskname.host.service import HostConfig
from diskname.manpage import render

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).parent.parent
CONFIGS = [*HELP, "client"]
NOT_SETTINGS = {"-h", "--config", "--log-level", "--log-format", "--json"}


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISKNAME_")}
    return subprocess.run(
        [sys.executable, "-m", "diskname", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**clean, "COLUMNS": "1000", **env},  # one line per flag: nothing to unwrap
    )  # fmt: skip


def help_defaults(name: str) -> dict[str, str | None]:
    """Each flag of ``diskname NAME --help``, with the default its help states."""
    out = run("vms" if name == "client" else name, "--help")
    assert out.returncode == 0, out.stderr
    found: dict[str, str | None] = {}
    options = out.stdout.split("options:\n", 1)[1]
    for entry in re.split(r"\n(?=  -)", options):  # a long flag's help is on the next line
        said = re.search(r"\(default: (.*)\)$", " ".join(entry.split()))
        found[entry.split()[0].rstrip(",")] = said.group(1) if said else None
    return found


@dataclass
class ManEntry:
    flag: str | None
    default: str | None  # as the description says it
    key: str
    value: Any  # as the file line says it (None: not set)
    env: str


def unroff(line: str) -> str:
    for code, plain in (("\\fB", ""), ("\\fR", ""), ("\\fI", ""), ("\\-", "-"), ("\\&", "")):
        line = line.replace(code, plain)
    return line.replace("\\e", "\\")


def man_entries(page: str, name: str) -> list[ManEntry]:
    section = page.split(f"\n.SH {name.upper()} SETTINGS\n", 1)[1].split("\n.SH ", 1)[0]
    entries = []
    for block in section.split(".TP\n")[1:]:
        head, description, _, where = (unroff(line) for line in block.splitlines())
        said = re.search(r"\(default: (.*)\)$", description)
        file = re.fullmatch(r"File: (\w+)(?: = (.*)| \(not set\)); environment: (\w+)\.", where)
        assert file is not None, where
        key, value, env = file.groups()
        entries.append(
            ManEntry(
                head.split()[0] if head.startswith("--") else None,
                said.group(1) if said else None,
                key,
                None if value is None else tomllib.loads(f"v = {value}")["v"],
                env,
            )
        )
    return entries


@pytest.fixture(scope="module")
def page() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "diskname.manpage"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout == render()
    return out.stdout


@pytest.mark.parametrize("name", CONFIGS)
def test_help_config_show_and_the_man_page_agree_on_every_default(page: str, name: str) -> None:
    shown = json.loads(run("config", "--show", name).stdout)
    helped = help_defaults(name)
    entries = man_entries(page, name)
    assert [e.key for e in entries] == list(shown)  # every setting, in one order
    for e in entries:
        assert e.env == f"DISKNAME_{e.key.upper()}"
        assert e.value == shown[e.key], e  # the man page's file default is config --show's
        if e.flag is None:
            continue
        assert helped.pop(e.flag) == e.default, e  # --help's default is the man page's
        value = shown[e.key]
        if e.default is not None and value is not None:
            port = shown.get(e.key.replace("_host", "_port"))
            assert e.default in (text(value), f"{value}:{port}"), e
    assert set(helped) <= NOT_SETTINGS, helped  # no flag without its entry


def test_the_man_page_is_clean_roff(page: str, tmp_path: Path) -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff not installed")
    path = tmp_path / "diskname.1"
    path.write_text(page)
    out = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (out.returncode, out.stderr) == (0, "")


def test_no_default_is_written_in_a_help_text() -> None:
    """The declarations say a default once, as the value; the help adds it."""
    for name in CONFIGS:
        for s in settings(config_class(name)):
            assert s.doc.help and "default" not in s.doc.help, (name, s.name)


def test_dev_mode_reuses_the_engines_declarations() -> None:
    engine = {s.name: s for s in settings(EngineConfig)}
    for s in settings(DevConfig):
        if s.name in ("http_host", "http_port", "refresh_interval"):
            assert (s.default, s.doc) == (engine[s.name].default, engine[s.name].doc)


def test_a_mode_is_checked_when_resolved(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(HostConfig, "host", env={"DISKNAME_HYPERVISOR": "xen"})
    assert str(info.value) == (
        "environment: DISKNAME_HYPERVISOR = 'xen' is not valid: expected one of sim, qemu, libvirt"
    )
    path = tmp_path / "host.toml"
    path.write_text('[host]\nchannel_mode = "both"\n')
    with pytest.raises(ConfigError, match=r"channel_mode = 'both' .* one of connect, listen"):
        resolve(HostConfig, "host", file=path)
    out = run("host", "--hypervisor", "xen")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "invalid choice: 'xen'" in out.stderr


def test_the_client_resolves_flags_over_the_environment() -> None:
    args = parse(["vms", "--url", "http://flag:1"])
    env = {"DISKNAME_URL": "http://env:2", "DISKNAME_TOKEN": "t", "DISKNAME_CA_FILE": "/ca.pem"}
    cfg = resolve(
        config_class("client"), "client", env=env, flags=given(args, config_class("client"))
    )
    assert (cfg.url, cfg.token, cfg.ca_file) == ("http://flag:1", "t", Path("/ca.pem"))


def test_config_show_masks_the_clients_token() -> None:
    out = run("config", "--show", "client", DISKNAME_TOKEN="s3cret")
    assert out.returncode == 0 and "s3cret" not in out.stdout
    assert json.loads(out.stdout)["token"] == "***"


def test_a_ca_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    out = run("vms", "--ca-file", str(tmp_path / "none.pem"))
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"diskname vms: cannot use {tmp_path / 'none.pem'} as the CA")
