"""Command line: ``diskname agent|host|engine|dev|bench|config`` and the client.

Each service subcommand resolves its configuration once (defaults < TOML file
< ``DISKNAME_*`` < flags, see :mod:`diskname.config`) into the tier's frozen
config object and runs the service until SIGINT/SIGTERM. Tier modules are
imported lazily so the agent, which runs inside guests, never loads the
engine's dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__, admin, client
from .binding import BindError
from .compat import BaseExceptionGroup, ExceptionGroup, jsonlib
from .config import ConfigError, resolve, settings, show
from .extras import MissingExtra
from .extras import check as check_installed
from .flags import add_flags, given

if TYPE_CHECKING:  # the services' imports wait until a service runs: the client starts fast
    from .runner import ServiceMain


@dataclass(frozen=True)
class Tier:
    config_class: Callable[[], type[Any]]
    service: Callable[[Any], ServiceMain]


def _agent_tier() -> Tier:
    from .agent import service as m

    # Made inside the event loop: before 3.10 an asyncio.Event binds to the
    # loop current when it is made, which is not the one asyncio.run starts.
    return Tier(lambda: m.AgentConfig, lambda cfg: lambda ready: m.AgentService(cfg).run(ready))


def _host_tier() -> Tier:
    from .host import service as m

    return Tier(lambda: m.HostConfig, lambda cfg: m.HostService(cfg).run)


def _engine_tier() -> Tier:
    from .engine import service as m
    from .engine.config import EngineConfig

    def service(cfg: EngineConfig) -> ServiceMain:
        m.tune_gc()  # the engine's own process (not dev mode's, nor a test's)
        return m.EngineService(cfg).run

    return Tier(lambda: EngineConfig, service)


def _bench_tier() -> Tier:
    from .bench import run as m

    return Tier(lambda: m.BenchConfig, _bench_main)


def _bench_main(cfg: Any) -> ServiceMain:
    from .bench.run import Bench

    async def main(ready: asyncio.Event) -> None:
        ready.set()
        result = await Bench(cfg).run()
        print(jsonlib.dumps(result).decode(), flush=True)

    return main


def _dev_tier() -> Tier:
    from . import dev as m

    return Tier(lambda: m.DevConfig, lambda cfg: m.DevCluster(cfg).run)


TIERS: dict[str, Callable[[], Tier]] = {
    "agent": _agent_tier,
    "host": _host_tier,
    "engine": _engine_tier,
    "dev": _dev_tier,
    "bench": _bench_tier,
}


HELP = {
    "agent": "run inside a guest: report disk names to the host",
    "host": "run on a hypervisor: VM state and JSON-RPC for the engine",
    "engine": "run management: monitor hosts, store names, serve REST and the web page",
    "dev": "everything in one process, simulated guests, embedded PostgreSQL",
    "bench": "measure the whole system; prints one JSON object last",
}


def config_class(name: str) -> type[Any]:
    """The config class of a service, or of the client."""
    return client.ClientConfig if name == "client" else TIERS[name]().config_class()


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags given on the command line, as config field names."""
    return given(args, config_class(args.command))


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line that names the (sub)command and where its help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


DESCRIPTION = """\
diskname reports the name a guest OS gives each VM disk (/dev/vdb, /dev/sdc) up to
management. Services: agent (in a guest), host (on a hypervisor), engine
(management), dev (all in one process) and bench. Client: vms, disks, plug,
unplug, which, history (against a running engine's REST API).
"""
EPILOG = """\
Each service reads its settings from defaults, then a TOML file (--config), then
DISKNAME_* environment variables, then flags. 'diskname COMMAND --help' describes
a command's flags; 'diskname config --show TIER' prints a service's settings.

The client's commands (vms, disks, plug, unplug, wait, which, history, login,
logout) exit with 0 when done, 1 on an error (one line on stderr), 2 on a wrong
command line, 3 when the guest did not name the disk in time (wait, plug).
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    return parsers(only)[0]


def parsers(
    only: str | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each subcommand's own (for its usage errors).

    A service's flags come from its config class, whose module imports the
    service's dependencies: given ``only``, no other service's flags are made.
    """
    parser = _Parser(
        prog="diskname",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"diskname {__version__}")
    common = common_options()
    sub: Any = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, about in HELP.items():
        tier = sub.add_parser(name, parents=[common], help=about, description=about)
        if only in (None, name):
            add_flags(tier, config_class(name))
    admin.register(sub, common)  # pki init|issue, user add|list|remove
    about = "print a service's (or the client's) effective configuration (secrets masked)"
    cfg = sub.add_parser("config", parents=[common], help=about, description=about)
    cfg.add_argument("--show", action="store_true", help="(the default action)")
    cfg.add_argument(
        "tier", nargs="?", choices=[*HELP, "client"], default="engine", help="(default: engine)"
    )
    about = "build diskname-agent.pyz: the agent as one file for a guest's own python3 (3.9+)"
    pyz = sub.add_parser("agent-pyz", help=about, description=about)
    pyz.add_argument(
        "--output",
        type=Path,
        default=Path("diskname-agent.pyz"),
        help="where to write it (default: %(default)s)",
    )
    client.add_commands(sub)
    return parser, dict(sub.choices)


def common_options() -> argparse.ArgumentParser:
    """What every service command takes besides its settings."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML configuration file (default: none)")
    common.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING (default: %(default)s)"
    )
    common.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text, or JSON lines (default: %(default)s)",
    )
    return common


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    words = client.flags_first(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), "")
    if command in TIERS:  # its flags import its modules: first say if they are missing
        try:
            check_installed(command)
        except MissingExtra as exc:
            print(f"diskname: {exc}", file=sys.stderr)
            sys.exit(2)
    parser, subs = parsers(only=command)
    args, extra = parser.parse_known_args(words)
    if extra:
        subs[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.command in client.COMMANDS:
        return client.run(args)
    tier_name = args.tier if args.command == "config" else args.command
    if tier_name == "client":
        return _show(resolve(client.ClientConfig, "client", env=os.environ))
    try:
        check_installed(tier_name)
    except MissingExtra as exc:
        print(f"diskname: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "tool", None) is not None:
        return admin.run(args)
    if args.command == "agent-pyz":
        return _agent_pyz(args.output)
    tier = TIERS[tier_name]()
    try:
        flags = _flags(args) if args.command != "config" else {}
        cfg = resolve(tier.config_class(), tier_name, file=args.config, env=os.environ, flags=flags)
    except ConfigError as exc:
        print(f"diskname: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        return _show(cfg)
    from .runner import run_until_signalled, setup_logging

    setup_logging(args.log_level, args.log_format)
    if sys.platform == "win32" and getattr(cfg, "windows_service", False):
        from .agent.sources.windows.win32 import run_as_service

        return run_as_service(tier.service(cfg), tier_name)
    try:
        asyncio.run(run_until_signalled(tier.service(cfg), tier_name))
    except KeyboardInterrupt:
        return 130
    except (ConfigError, ExceptionGroup) as exc:  # novermin (diskname.compat names it)
        errors = _config_errors(exc)
        if not errors:
            raise
        for line in dict.fromkeys(_explained(tier_name, e) for e in errors):
            print(line, file=sys.stderr)
        return 2
    return 0


def _show(cfg: Any) -> int:
    print(jsonlib.dumps(show(cfg), option=jsonlib.OPT_INDENT_2).decode())
    return 0


def _explained(command: str, error: BaseException) -> str:
    line = f"diskname: {error}"
    if isinstance(error, BindError):
        for s in settings(config_class(command)):
            if s.flag is not None and error.setting in (s.name, s.doc.port):
                line += f"; choose another with {s.flag} {s.doc.metavar or 'HOST:PORT'}"
    return line


def _config_errors(exc: BaseException) -> list[BaseException]:
    """The ConfigErrors in ``exc``, even when a TaskGroup wrapped them in groups."""
    if isinstance(exc, ConfigError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _config_errors(sub)]
    return []


def _agent_pyz(output: Path) -> int:
    from .pyz import build

    size = build(output)
    print(f"{output}: {size} bytes; run it as: python3 {output} agent", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
