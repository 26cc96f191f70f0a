"""The systemd units are valid and wired the way operators expect."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).parent.parent / "packaging" / "systemd").glob("*.service"))


def test_there_is_a_unit_per_service() -> None:
    assert [u.name for u in UNITS] == [
        "diskname-agent.service",
        "diskname-engine.service",
        "diskname-host.service",
    ]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_is_notify_with_watchdog_and_restart(unit: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(unit)
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert "--config /etc/diskname/" in service["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_systemd_analyze_verify() -> None:
    out = subprocess.run(
        ["systemd-analyze", "verify", *map(str, UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("diskname-engine.service", {"pki_dir", "https_cert", "https_key"}),
        ("diskname-host.service", {"tls_cert", "tls_key", "tls_ca"}),
    ],
)
def test_the_units_run_secure_by_default(name: str, expected: set[str]) -> None:
    """The engine and host units pass the PKI files: TLS on both hops, whatever the TOML says."""
    from diskname.__main__ import _flags, build_parser

    text = (UNITS[0].parent / name).read_text().replace("\\\n", " ")
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[:2] == ["/usr/bin/env", "diskname"]
    flags = _flags(build_parser().parse_args(argv[2:]))
    assert expected <= set(flags)
    assert all(str(flags[key]).startswith("/etc/diskname/pki") for key in expected)


@pytest.mark.parametrize("name", ["diskname-engine.service", "diskname-host.service"])
def test_the_servers_have_room_for_their_connections(name: str) -> None:
    """SPEC §19: LimitNOFILE=65536, room for the default 16,384 connections and more."""
    from diskname.connguard import GuardLimits, connection_budget

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(UNITS[0].parent / name)
    limit = int(parser["Service"]["LimitNOFILE"])
    assert limit == 65536
    wanted = GuardLimits().max_connections
    assert connection_budget(wanted, soft_limit=limit) == wanted
