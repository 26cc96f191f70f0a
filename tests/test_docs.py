"""docs/deploy.md stays true: its commands parse and its TOML files resolve.

tests/test_e2e_processes.py runs the same three-process commands for real.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from diskname.__main__ import TIERS, _flags, build_parser, parse
from diskname.config import resolve

ROOT = Path(__file__).parent.parent
DEPLOY = (ROOT / "docs" / "deploy.md").read_text()
README = (ROOT / "README.md").read_text()


def command_lines() -> list[str]:
    text = DEPLOY.replace("\\\n", " ")
    prefix = r"(?:^\s*|`|\|\s*)(?:sudo\s+)?"  # at a line's start, quoted, or piped into
    tiers = "agent-pyz|agent|host|engine|dev|config|pki|user"
    pattern = prefix + rf"(diskname (?:{tiers})\b[^&`\n|#]*)"  # up to a shell comment
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


def test_the_readme_installs_what_ci_installs() -> None:
    """One `apt-get install` line, the same packages as .ci/setup installs."""
    script = (ROOT / ".ci" / "setup").read_text()
    uncommented = "\n".join(line.split("#", 1)[0] for line in script.splitlines())
    listed = re.search(r"APT_PACKAGES=\((.*?)\)", uncommented, re.S)
    assert listed is not None
    ci = set(listed.group(1).split())
    # .ci/run's steps that install packages of their own (libvirt).
    for helper in sorted((ROOT / ".ci").glob("*-setup")):
        for found in re.finditer(r"apt-get install ((?:\\\n|[^\n])*)", helper.read_text()):
            words = found.group(1).replace("\\\n", " ").split()
            ci |= {w for w in words if not w.startswith(("-", "$", "\\"))}
    lines = [line for line in README.splitlines() if "apt-get install" in line]
    assert len(lines) == 1, lines
    readme = {w for w in lines[0].split() if not w.startswith("-")} - {"apt-get", "install"}
    assert readme == ci


def test_the_readme_test_command_is_one_line_that_ci_runs() -> None:
    """The README's test command is one line; .ci/run runs its two halves in order."""
    command = "bash .ci/setup && .venv/bin/python -m pytest"
    assert f"\n    {command}\n" in README
    run = (ROOT / ".ci" / "run").read_text()
    assert run.index("bash .ci/setup") < run.index("\n.venv/bin/python -m pytest\n")


def test_docs_point_only_at_files_in_the_repository() -> None:
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert "SPEC.md" not in text and "FACTS.md" not in text and "shared/" not in text, doc
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (doc.parent / target).exists(), (doc.name, target)


def test_every_client_command_in_the_readme_parses() -> None:
    lines = re.findall(
        r"^(diskname (?:vms|disks|plug|unplug|wait|which|history|login|logout)\b[^#\n]*)",
        README,
        re.M,
    )
    assert len(lines) >= 6
    for line in lines:
        parse(shlex.split(line)[1:])


def test_the_path_of_one_name_names_real_functions() -> None:
    """docs/design.md's hops each name a file and a function that exist, at most 15."""
    design = (ROOT / "docs" / "design.md").read_text()
    section = design.split("The path of one name", 1)[1].split("\n\n", 2)[1]
    hops = re.findall(r"^\d+\. ", section, re.M)
    assert 1 <= len(hops) <= 15
    for path, name in re.findall(r"`([\w/]+\.py): ([\w.]+)`", section):
        candidates = [ROOT / "diskname" / path, ROOT / "diskname" / "engine" / path]
        source = next(p for p in candidates if p.exists()).read_text()
        assert re.search(rf"\bdef {name.split('.')[-1]}\(", source), (path, name)


AUTOMATING = (ROOT / "docs" / "automating.md").read_text()
EXAMPLES = sorted((ROOT / "docs" / "examples").iterdir())


def fenced_blocks(text: str) -> list[str]:
    """The contents of every fenced code block of a Markdown text."""
    return re.findall(r"^```\w*\n(.*?)^```$", text, re.S | re.M)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_automating_shows_each_example_file_as_it_is(example: Path) -> None:
    """docs/automating.md's playbooks and scripts are the files the tests run, verbatim."""
    assert example.read_text() in fenced_blocks(AUTOMATING), f"{example.name} differs"


def test_automating_is_linked_and_its_examples_are_run() -> None:
    assert "docs/automating.md" in README
    run_by = {
        "attach-disk.yml": "ansible_run.py",
        "remove-disk.yml": "ansible_run.py",
        "attach_disk.py": "test_ovirt_sdk.py",
        "format-disk.sh": "test_libvirt_pool_vm.py",
    }
    assert sorted(run_by) == sorted(p.name for p in EXAMPLES)
    for name, test in run_by.items():
        assert name in (ROOT / "tests" / test).read_text(), (name, test)
