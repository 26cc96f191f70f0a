"""The command-line client (SPEC §15, §18): ``diskname vms|disks|plug|unplug|wait|which|
history|login|logout``.

It speaks only the REST API and imports nothing of the engine: on an admin
machine ``pip install diskname`` is enough (Python 3.9, the standard library).
VMs may be given by name or id. Exit statuses: :data:`EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .. import config
from ..compat import SLOTS
from ..config import ConfigError, hidden, setting
from ..flags import add_flags, given
from . import commands, session
from .http import DEFAULT_URL, EXIT_ERROR, EXIT_OK, Api, ApiError, ClientError
from .output import safe

EXIT_CODES = """exit status: 0 done; 1 an error (one line on stderr: the engine unreachable or
refusing, a VM or disk not found, a sign-in expired); 2 a wrong command line;
3 the guest did not name the disk in time (wait, plug)"""

Command = Callable[[Api, argparse.Namespace, TextIO], None]


def _vm(p: argparse.ArgumentParser) -> None:
    p.add_argument("vm", metavar="VM", help="the VM's name or id")


def _disk(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "disk", metavar="DISK", help="the disk's id (or its start), or the guest's name (/dev/vdb)"
    )


def _vm_disk(p: argparse.ArgumentParser) -> None:
    _vm(p)
    _disk(p)


def _plug(p: argparse.ArgumentParser) -> None:
    _vm(p)
    p.add_argument(
        "--interface",
        choices=commands.INTERFACES,
        default="virtio",
        help="the bus of a new disk (default: virtio)",
    )
    p.add_argument("--disk", metavar="ID", help="plug this existing disk (default: a new disk)")
    p.add_argument(
        "--lun", metavar="SERIAL", help="a new direct-LUN disk with this serial (default: none)"
    )
    p.add_argument(
        "--wait",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="wait this long for the guest's name; 0 returns at once (default: 5)",
    )


def _wait(p: argparse.ArgumentParser) -> None:
    _vm_disk(p)
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="give up after this long, with exit status 3 (default: 60)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"not a number of seconds above 0: {text!r}")
    return value


def _login(p: argparse.ArgumentParser) -> None:
    p.add_argument("user", metavar="USER", help="the user to sign in as (diskname user add)")


def _which(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "disk",
        metavar="SERIAL|DISK_ID|NAME",
        help="a disk id, or a serial as the guest shows it (prefixed, padded or cut short);"
        " with --vm, the guest's name for it, now or before (/dev/vdb)",
    )
    p.add_argument(
        "--vm",
        metavar="VM",
        help="find the disk by the name this VM's guest gives or gave it (default: none,"
        " by id or serial)",
    )


def _history(p: argparse.ArgumentParser) -> None:
    _vm_disk(p)
    p.add_argument("--max", type=int, default=100, help="newest entries shown (default: 100)")


COMMANDS: dict[str, tuple[Command, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "vms": (commands.vms, "client: list the VMs", None),
    "disks": (commands.disks, "client: a VM's disks and the guest's name of each", _vm),
    "plug": (commands.plug, "client: hot-plug a disk into a VM and show its name", _plug),
    "unplug": (commands.unplug, "client: hot-unplug a VM's disk", _vm_disk),
    "wait": (commands.wait, "client: wait for the guest's name of a VM's disk, print it", _wait),
    "which": (commands.which, "client: which VM has a disk, and the guest's name for it", _which),
    "history": (commands.history, "client: the names a VM's disk has had", _history),
    "login": (session.login, "client: sign in, keep the token for later commands", _login),
    "logout": (session.logout, "client: revoke and forget the kept token", None),
}
# Commands that never send a kept token (login replaces it; logout sends it itself).
SIGN_IN = frozenset({"login", "logout"})


@dataclass(frozen=True, **SLOTS)
class ClientConfig:
    """Where the engine is and how to sign in: flags, else ``DISKNAME_*``."""

    url: str = setting(DEFAULT_URL, "the engine")
    token: str | None = setting(None, "bearer token for the API", mask=hidden)
    ca_file: Path | None = setting(
        None, "the CA that signed the engine's HTTPS certificate", unset="the system's CAs"
    )


def flags_first(words: Sequence[str]) -> list[str]:
    """``diskname --ca-file ca.pem login USER``: the client's flags written before a
    client command are moved after it, where its parser takes them."""
    valued = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(ClientConfig)}
    moved: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in valued and i + 1 < len(words):
            moved += words[i : i + 2]
            i += 2
        elif word.split("=", 1)[0] in valued or word == "--json":
            moved.append(word)
            i += 1
        else:
            break
    if moved and i < len(words) and words[i] in COMMANDS:
        return [words[i], *moved, *words[i + 1 :]]
    return list(words)


def common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    add_flags(parent, ClientConfig)
    parent.add_argument(
        "--json", action="store_true", help="print the API's JSON instead of a table"
    )
    return parent


def add_commands(sub: Any) -> None:
    """Register the client's subcommands on the ``diskname`` parser's subparsers."""
    parent = common()
    for name, (_, help_text, add) in COMMANDS.items():
        parser = sub.add_parser(
            name,
            parents=[parent],
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if add is not None:
            add(parser)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one client command: 0 on success, else one line on stderr and
    1, or 3 when what it waited for did not come (:data:`EXIT_CODES`)."""
    command = COMMANDS[args.command][0]
    try:
        # config.resolve: the name resolve is this package's module (VM names to ids).
        flags = given(args, ClientConfig)
        cfg = config.resolve(ClientConfig, "client", env=os.environ, flags=flags)
        token, kept = cfg.token, False
        if token is None and args.command not in SIGN_IN:
            token = session.Tokens(session.config_dir()).token_for(cfg.url.rstrip("/"))
            kept = token is not None
        api = Api(cfg.url, token, ca_file=cfg.ca_file)
        try:
            command(api, args, out or sys.stdout)
        except ApiError as exc:
            if kept and exc.status == 401:
                raise ClientError(
                    f"the engine refused the token diskname login kept ({exc}):"
                    " it expired or was revoked; run diskname login again"
                ) from None
            raise
    except ConfigError as exc:
        print(f"diskname {args.command}: {safe(str(exc))}", file=err or sys.stderr)
        return EXIT_ERROR
    except ClientError as exc:
        print(f"diskname {args.command}: {safe(str(exc))}", file=err or sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `diskname vms | head`
        return EXIT_OK
    return EXIT_OK
