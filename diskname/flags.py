"""A config class's flags, made from its declarations (:mod:`diskname.config`).

Flags left off the command line are not set at all (``default=SUPPRESS``), so a
flag never hides the same setting from the TOML file or the environment. Values
stay text until :func:`diskname.config.resolve` converts them (its errors name
the flag); a ``Literal`` mode becomes ``choices``, a ``HOST:PORT`` flag sets
two settings. Imported by the agent too: standard library and Python 3.9 only.
"""

from __future__ import annotations

import argparse
from typing import Any

from .config import Setting, settings


def hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def describe(s: Setting) -> str:
    """What the setting does and, unless its flag is a switch, its default."""
    return s.doc.help if s.type is bool else f"{s.doc.help} (default: {s.shown})"


def metavar(s: Setting) -> str | None:
    """What follows the flag (None: a switch)."""
    if s.type is bool:
        return None
    if s.doc.port is not None:
        return s.doc.metavar or "HOST:PORT"
    if s.words:
        return "{" + ",".join(s.words) + "}"
    return s.doc.metavar or s.name.upper()


def add_flags(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """One flag per setting of ``cls`` that has one."""
    for s in settings(cls):
        if s.flag is None:
            continue
        options: dict[str, Any] = {"dest": s.name, "default": argparse.SUPPRESS}
        if s.type is bool:
            options["action"] = "store_false" if s.default is True else "store_true"
        else:
            options["metavar"] = metavar(s)
        if s.doc.port is not None:
            options["type"] = hostport
        elif s.words:
            options["choices"] = s.words
        parser.add_argument(s.flag, help=describe(s).replace("%", "%%"), **options)


def given(args: argparse.Namespace, cls: type[Any]) -> dict[str, Any]:
    """The settings of ``cls`` given as flags (a ``HOST:PORT`` flag gives two)."""
    found: dict[str, Any] = {}
    for s in settings(cls):
        if s.flag is not None and hasattr(args, s.name):
            value = getattr(args, s.name)
            if s.doc.port is not None:
                found[s.name], found[s.doc.port] = value
            else:
                found[s.name] = value
    return found
