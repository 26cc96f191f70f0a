"""Command line: ``diskname agent|host|engine|dev``.

Each subcommand parses its flags once into the tier's frozen config object and
runs the service until SIGINT/SIGTERM. Tier modules are imported lazily so the
agent, which runs inside guests, never loads the engine's dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .runner import ServiceMain, run_until_signalled, setup_logging


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _agent(args: argparse.Namespace) -> ServiceMain:
    from .agent.service import AgentConfig, AgentService

    cfg = AgentConfig(
        connect=args.connect,
        channel=args.channel,
        source=args.source,
        sim_hw=args.sim_hw,
        report_interval=args.report_interval,
        heartbeat_interval=args.heartbeat_interval,
        name_delay=args.name_delay,
    )
    return AgentService(cfg).run


def _host(args: argparse.Namespace) -> ServiceMain:
    from .host.service import HostConfig, HostService

    host, port = args.listen
    cfg = HostConfig(
        listen_host=host,
        listen_port=port,
        state_dir=args.state_dir,
        channels_dir=args.channels_dir,
        channel_mode=args.channel_mode,
        hypervisor=args.hypervisor,
        host_id=args.host_id,
    )
    return HostService(cfg).run


def _engine(args: argparse.Namespace) -> ServiceMain:
    from .engine.config import EngineConfig
    from .engine.service import EngineService

    host, port = args.http
    cfg = EngineConfig(
        dsn=args.dsn or os.environ.get("DISKNAME_DSN") or None,
        http_host=host,
        http_port=port,
        state_dir=args.state_dir,
        refresh_interval=args.refresh_interval,
        api_token=args.api_token or os.environ.get("DISKNAME_API_TOKEN") or None,
        events=not args.no_events,
    )
    return EngineService(cfg).run


def _dev(args: argparse.Namespace) -> ServiceMain:
    from .dev import DevCluster, DevConfig

    host, port = args.http
    cfg = DevConfig(
        hosts=args.hosts,
        vms=args.vms,
        http_host=host,
        http_port=port,
        state_dir=args.state_dir,
        dsn=args.dsn or os.environ.get("DISKNAME_DSN") or None,
        name_delay=args.name_delay,
        refresh_interval=args.refresh_interval,
        events=not args.no_events,
    )
    return DevCluster(cfg).run


def _add_agent(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agent", help="run inside a guest: report disk names to the host")
    p.add_argument("--connect", help="unix:PATH or tcp:HOST:PORT (instead of a virtio port)")
    p.add_argument("--channel", help="virtio-serial port path")
    p.add_argument("--source", choices=["udev", "sim"], default="udev")
    p.add_argument("--sim-hw", help="sim source: unix:PATH of the host's sim hardware port")
    p.add_argument("--report-interval", type=_positive, default=60.0)
    p.add_argument("--heartbeat-interval", type=_positive, default=5.0)
    p.add_argument("--name-delay", type=float, default=0.0, help="sim: seconds until a disk shows")
    p.set_defaults(build=_agent, what="agent")


def _add_host(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("host", help="run on a hypervisor: VM state and JSON-RPC for the engine")
    p.add_argument("--listen", type=_hostport, default=("127.0.0.1", 54321), metavar="HOST:PORT")
    p.add_argument("--state-dir", type=Path, default=Path("state/host"))
    p.add_argument("--channels-dir", type=Path, default=Path("state/channels"))
    p.add_argument("--channel-mode", choices=["connect", "listen"], default="connect")
    p.add_argument("--hypervisor", choices=["sim"], default="sim")
    p.add_argument("--host-id", default=None)
    p.set_defaults(build=_host, what="host")


def _add_engine(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("engine", help="run management: monitor hosts, store names, serve REST")
    p.add_argument("--dsn", help="PostgreSQL DSN (or DISKNAME_DSN); none: embedded PostgreSQL")
    p.add_argument("--http", type=_hostport, default=("127.0.0.1", 8080), metavar="HOST:PORT")
    p.add_argument("--state-dir", type=Path, default=Path("state/engine"))
    p.add_argument("--refresh-interval", type=_positive, default=3.0)
    p.add_argument("--api-token", help="require 'Authorization: Bearer TOKEN' on /api/*")
    p.add_argument("--no-events", action="store_true", help="ignore host notifications")
    p.set_defaults(build=_engine, what="engine")


def _add_dev(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dev", help="everything in one process with simulated guests")
    p.add_argument("--hosts", type=int, default=1)
    p.add_argument("--vms", type=int, default=2, help="VMs per host")
    p.add_argument("--http", type=_hostport, default=("127.0.0.1", 8080), metavar="HOST:PORT")
    p.add_argument("--state-dir", type=Path, default=Path("state"))
    p.add_argument("--dsn", help="use this PostgreSQL instead of the embedded one")
    p.add_argument("--name-delay", type=float, default=0.05)
    p.add_argument("--refresh-interval", type=_positive, default=3.0)
    p.add_argument("--no-events", action="store_true", help="engine ignores host notifications")
    p.set_defaults(build=_dev, what="dev mode")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diskname", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"diskname {__version__}")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_agent, _add_host, _add_engine, _add_dev):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    build: Callable[[argparse.Namespace], ServiceMain] = args.build
    try:
        asyncio.run(run_until_signalled(build(args), args.what))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
