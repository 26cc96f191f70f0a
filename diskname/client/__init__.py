"""The command-line client (SPEC §15): ``diskname vms|disks|plug|unplug|which|history``.

It speaks only the REST API and imports nothing of the engine: on an admin
machine ``pip install diskname`` is enough. VMs may be given by name or id.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .. import config
from ..compat import SLOTS
from ..config import ConfigError, hidden, setting
from ..flags import add_flags, given
from . import commands
from .http import DEFAULT_URL, Api, ClientError

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


def _which(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "disk",
        metavar="SERIAL|DISK_ID|NAME",
        help="a disk id, or a serial as the guest shows it (prefixed, padded or cut short);"
        " with --vm, the guest's name for it, now or before (/dev/vdb)",
    )
    p.add_argument(
        "--vm", metavar="VM", help="find the disk by the name this VM's guest gives or gave it"
    )


def _history(p: argparse.ArgumentParser) -> None:
    _vm_disk(p)
    p.add_argument("--max", type=int, default=100, help="newest entries shown (default: 100)")


COMMANDS: dict[str, tuple[Command, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "vms": (commands.vms, "client: list the VMs", None),
    "disks": (commands.disks, "client: a VM's disks and the guest's name of each", _vm),
    "plug": (commands.plug, "client: hot-plug a disk into a VM and show its name", _plug),
    "unplug": (commands.unplug, "client: hot-unplug a VM's disk", _vm_disk),
    "which": (commands.which, "client: which VM has a disk, and the guest's name for it", _which),
    "history": (commands.history, "client: the names a VM's disk has had", _history),
}


@dataclass(frozen=True, **SLOTS)
class ClientConfig:
    """Where the engine is and how to sign in: flags, else ``DISKNAME_*``."""

    url: str = setting(DEFAULT_URL, "the engine")
    token: str | None = setting(None, "bearer token for the API", mask=hidden)
    ca_file: Path | None = setting(
        None, "the CA that signed the engine's HTTPS certificate", unset="the system's CAs"
    )


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
        parser = sub.add_parser(name, parents=[parent], help=help_text, description=help_text)
        if add is not None:
            add(parser)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one client command: 0 on success, 1 with one line on stderr otherwise."""
    command = COMMANDS[args.command][0]
    try:
        # config.resolve: the name resolve is this package's module (VM names to ids).
        flags = given(args, ClientConfig)
        cfg = config.resolve(ClientConfig, "client", env=os.environ, flags=flags)
        api = Api(cfg.url, cfg.token, ca_file=cfg.ca_file)
        command(api, args, out or sys.stdout)
    except (ClientError, ConfigError) as exc:
        print(f"diskname {args.command}: {exc}", file=err or sys.stderr)
        return 1
    except BrokenPipeError:  # `diskname vms | head`
        return 0
    return 0
