"""docs/deploy.md stays true: its commands parse and its TOML files resolve.

tests/test_e2e_processes.py runs the same three-process commands for real.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from diskname.__main__ import TIERS, _flags, build_parser
from diskname.config import resolve

DEPLOY = (Path(__file__).parent.parent / "docs" / "deploy.md").read_text()


def command_lines() -> list[str]:
    text = DEPLOY.replace("\\\n", " ")
    prefix = r"(?:^\s*|`|\|\s*)(?:sudo\s+)?"  # at a line's start, quoted, or piped into
    tiers = "agent|host|engine|dev|config|pki|user"
    pattern = prefix + rf"(diskname (?:{tiers})\b[^&`\n|]*)"
    found = [m.group(1) for m in re.finditer(pattern, text, re.M)]
    return [line.strip() for line in found]


def toml_files() -> list[tuple[str, str]]:
    """Every configuration file the guide writes, as (tier, text); a tier may have several."""
    blocks = re.finditer(r"tee /etc/diskname/(\w+)\.toml <<'TOML'\n(.*?)\nTOML", DEPLOY, re.S)
    return [(m.group(1), m.group(2)) for m in blocks]


def test_the_guide_has_commands_and_files() -> None:
    lines = command_lines()
    assert len(lines) >= 4
    for needed in ("diskname pki init", "diskname pki issue", "diskname user add"):
        assert any(line.startswith(needed) for line in lines), needed
    assert {tier for tier, _ in toml_files()} == {"engine", "host"}


@pytest.mark.parametrize("line", command_lines())
def test_every_command_in_the_guide_parses(line: str) -> None:
    args = build_parser().parse_args(shlex.split(line)[1:])
    if args.command in TIERS:  # services: their flags resolve, too (pki, user: they parse)
        tier = TIERS[args.command]()
        resolve(tier.config_class(), args.command, flags=_flags(args))


@pytest.mark.parametrize(("tier", "text"), toml_files())
def test_every_config_file_in_the_guide_resolves(tier: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / f"{tier}.toml"
    path.write_text(text)
    resolve(TIERS[tier]().config_class(), tier, file=path)
