"""``diskname pki init|issue`` and ``diskname user add|list|remove`` (SPEC §11).

:func:`register` adds the parsers; what a command needs (cryptography for the
PKI, PostgreSQL for users) is imported only when it runs, so the agent's
command line never loads it. Refusals are one line on stderr: exit 2 for what
the command line asked wrongly, 1 for what the system refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .config import ConfigError

MIN_PASSWORD = 8


class Refused(Exception):
    """The command cannot be done; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``pki`` and ``user`` to the ``diskname`` sub-command parsers ``sub``."""
    _register_pki(sub)
    _register_user(sub, common)


def _register_pki(sub: Any) -> None:
    pki = sub.add_parser("pki", help="the engine CA: init once, then a certificate per host")
    actions = pki.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="create ca.pem/ca.key and engine.pem/engine.key")
    init.add_argument("--dir", type=Path, required=True, help="where the CA lives (created 0700)")
    init.add_argument("--name", help="the engine's DNS name (default: this machine's FQDN)")
    init.add_argument(
        "--address", action="append", default=[], help="another name or IP of the engine (repeat)"
    )
    init.set_defaults(tool=_pki_init)
    issue = actions.add_parser("issue", help="write host.pem, host.key and ca.pem for one host")
    issue.add_argument("--dir", type=Path, required=True, help="the CA of diskname pki init")
    issue.add_argument("--host", required=True, help="the host's name (a DNS name or an IP)")
    issue.add_argument(
        "--address", action="append", default=[], help="an address the engine uses (repeat)"
    )
    issue.add_argument("--out", type=Path, required=True, help="where to write the three files")
    issue.set_defaults(tool=_pki_issue)


def _register_user(sub: Any, common: argparse.ArgumentParser) -> None:
    user = sub.add_parser("user", help="REST users: add, list, remove (in the engine's database)")
    actions = user.add_subparsers(dest="action", required=True)
    for name, text in (("add", "add a user"), ("list", "list users"), ("remove", "remove a user")):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("--dsn", help="PostgreSQL DSN; none: the engine's embedded one")
        action.add_argument("--state-dir", help="the engine's state dir (embedded PostgreSQL)")
        if name != "list":
            action.add_argument("name", help="user name, e.g. alice or admin@internal")
        action.set_defaults(tool=_user)
    add = actions.choices["add"]
    add.add_argument("--role", choices=["admin", "viewer"], required=True)
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (else it is asked on the terminal)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the tool ``args`` chose; print a refusal as one line."""
    try:
        args.tool(args)
    except Refused as exc:
        print(f"diskname {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"diskname {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


# -- pki -----------------------------------------------------------------------


def _pki_init(args: argparse.Namespace) -> None:
    from . import pki

    name = args.name or socket.getfqdn()
    try:
        pki.init(args.dir, name, args.address)
    except pki.PkiError as exc:
        raise Refused(str(exc)) from None
    print(f"engine CA and certificate ({name}) written to {args.dir}; ca.key never leaves it")


def _pki_issue(args: argparse.Namespace) -> None:
    from . import pki

    try:
        pki.issue(args.dir, args.host, args.address, args.out)
    except pki.PkiError as exc:
        raise Refused(str(exc)) from None
    files = ", ".join(str(args.out / f) for f in (pki.HOST_CERT, pki.HOST_KEY, pki.CA_CERT))
    print(f"{files}: copy them to {args.host} (the key with mode 0600)")


# -- user ----------------------------------------------------------------------


def _user(args: argparse.Namespace) -> None:
    from .config import resolve
    from .engine.config import EngineConfig

    flags = {k: getattr(args, k) for k in ("dsn", "state_dir") if getattr(args, k) is not None}
    config = resolve(EngineConfig, "engine", file=args.config, env=os.environ, flags=flags)
    password = _password(args) if args.action == "add" else ""
    asyncio.run(_user_action(args, config, password))


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise Refused("the two passwords differ")
    else:
        raise Refused("give the password on standard input with --password-stdin")
    if len(password) < MIN_PASSWORD:
        raise Refused(f"the password must have at least {MIN_PASSWORD} characters")
    return password


async def _user_action(args: argparse.Namespace, config: Any, password: str) -> None:
    from .engine.db.users import UserStore, check_user
    from .engine.errors import Conflict, Invalid
    from .engine.http.passwords import hash_password

    if args.action == "add":
        try:
            check_user(args.name, args.role)
        except Invalid as exc:
            raise Refused(str(exc)) from None
        encoded = await asyncio.to_thread(hash_password, password)
    async with _database(config) as conn:
        users = UserStore(conn)
        if args.action == "add":
            try:
                await users.add(args.name, args.role, encoded)
            except Conflict as exc:
                raise Refused(f"{exc} (remove it first to change it)", 1) from None
            print(f"added {args.name} ({args.role})")
        elif args.action == "remove":
            if not await users.remove(args.name):
                raise Refused(f"no user {args.name!r}", 1)
            print(f"removed {args.name}; its tokens no longer work")
        else:
            _print_users(await users.list(), await users.tokens())


def _print_users(users: list[Any], tokens: dict[str, int]) -> None:
    if not users:
        print("no users (add one with: diskname user add NAME --role admin --password-stdin)")
        return
    width = max(len(u.name) for u in users)
    print(f"{'NAME':<{width}}  ROLE    TOKENS  CREATED")
    for u in users:
        created = u.created_at.strftime("%Y-%m-%d %H:%M")
        print(f"{u.name:<{width}}  {u.role:<6}  {tokens.get(u.name, 0):>6}  {created}")


@contextlib.asynccontextmanager
async def _database(config: Any) -> AsyncIterator[Any]:
    """A migrated connection to the engine's database (starting its embedded one if need be)."""
    import asyncpg

    from .engine.db.migrate import apply_migrations
    from .pgembed import EmbeddedPostgres

    pg = EmbeddedPostgres(config.state_dir / "pg") if config.dsn is None else None
    try:
        dsn = config.dsn if pg is None else await pg.start()
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if pg is not None:
            await pg.stop()
        raise Refused(f"cannot reach the engine's database: {exc}", 1) from None
    try:
        await apply_migrations(conn)
        yield conn
    finally:
        await conn.close()
        if pg is not None:
            await pg.stop()
