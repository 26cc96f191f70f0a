"""diskname(1) in roff, from the declarations ``--help`` and ``config --show`` use.

    python -m diskname.manpage > diskname.1

Each setting is one entry: its flag (or, without one, its key), what it does
with its default as ``--help`` says it, and its file key and environment
variable with the default as ``config --show`` prints it. The Debian packages
install it (packaging/debian/build); tests/test_manpage.py holds the three to
one another.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import __version__
from .__main__ import DESCRIPTION, EPILOG, HELP, common_options, config_class, parsers
from .config import SECTIONS, Setting, settings
from .flags import describe, metavar

TITLES = {name: f"{name.upper()} SETTINGS" for name in HELP} | {"client": "CLIENT SETTINGS"}


def roff(text: str) -> str:
    """Plain text as roff: backslashes, hyphens and a leading dot escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def bold(text: str) -> str:
    return f"\\fB{roff(text)}\\fR"


def file_value(value: Any) -> str:
    """A default as a TOML file writes it (``config --show`` prints the same in JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def entry(s: Setting) -> list[str]:
    """A setting: its flag (or key), what it does, its file key and its variable."""
    head = bold(s.flag or s.name)
    after = metavar(s) if s.flag else None
    if after:
        head += f" \\fI{roff(after)}\\fR"
    key = bold(s.name) + " (not set)"
    if s.default is not None:
        key = bold(f"{s.name} = {file_value(s.default)}")
    return [".TP", head, roff(describe(s)), ".br", f"File: {key}; environment: {bold(s.env)}."]


def commands() -> list[str]:
    parser = parsers(only="")[0]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = []
    for choice in sub._choices_actions:
        lines += [".TP", bold(choice.dest), roff(choice.help or "")]
    return lines


def options(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for action in parser._actions:
        if action.option_strings:
            help_text = (action.help or "") % {"default": action.default}
            head = bold(", ".join(action.option_strings))
            if action.nargs != 0:
                head += f" \\fI{roff(str(action.metavar or action.dest.upper()))}\\fR"
            lines += [".TP", head, roff(help_text)]
    return lines


def paragraph(text: str) -> list[str]:
    return [roff(line) for line in text.splitlines()]


def render() -> str:
    lines = [
        f'.TH DISKNAME 1 "" "diskname {__version__}" "User Commands"',
        ".SH NAME",
        "diskname \\- the name a guest OS gives each VM disk, reported up to management",
        ".SH SYNOPSIS",
        "\\fBdiskname\\fR \\fICOMMAND\\fR [\\fIOPTION\\fR]...",
        ".SH DESCRIPTION",
        *paragraph(DESCRIPTION),
        ".PP",
        *paragraph(EPILOG),
        ".SH COMMANDS",
        *commands(),
        ".SH COMMON OPTIONS",
        "Every service command (agent, host, engine, dev, bench) and config take:",
        *options(common_options()),
    ]
    for name, title in TITLES.items():
        lines += [f".SH {title}", *paragraph(f"diskname {name}:")]
        for s in settings(config_class(name)):
            lines += entry(s)
    lines += [
        ".SH ENVIRONMENT",
        *paragraph("Each setting's variable is DISKNAME_ and its key in capitals (above)."),
        ".SH FILES",
        *paragraph(
            "A TOML file given with --config (the packages install /etc/diskname/TIER.toml):"
            f" keys at top level or under a service's table: {', '.join(SECTIONS)}."
        ),
        ".SH SEE ALSO",
        *paragraph("/usr/share/doc/diskname-*/deploy.md; diskname COMMAND --help"),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
