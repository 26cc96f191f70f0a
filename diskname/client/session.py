"""``diskname login`` / ``logout``: a sign-in token kept for later commands (SPEC §18).

``login`` asks the engine's SSO endpoint for a token (the password from a prompt,
or the first line of stdin when that is not a terminal) and keeps it, per engine
URL, in ``tokens.json`` in the user's config directory (``$XDG_CONFIG_HOME/diskname``,
``~/.config/diskname``; ``%APPDATA%\\diskname`` on Windows), mode 0600 in a 0700
directory. A later command without ``--token``/``DISKNAME_TOKEN`` uses the token
kept for its URL; one past its expiry is an error that says to sign in again.
``logout`` revokes the token on the engine and forgets it. Python 3.9.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from .http import Api, ClientError

TOKEN_PATH = "/ovirt-engine/sso/oauth/token"
LOGOUT_PATH = "/ovirt-engine/services/sso-logout"
FILE_NAME = "tokens.json"


def config_dir(env: Mapping[str, str] = os.environ) -> Path:
    if sys.platform == "win32" and env.get("APPDATA"):
        return Path(env["APPDATA"]) / "diskname"
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "diskname"


class Tokens:
    """The tokens kept per engine URL: ``{url: {"token", "user", "expires_at"}}``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME

    def _read(self) -> dict[str, Any]:
        try:
            kept = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ClientError(f"cannot read {self.path}: {exc}") from None
        return kept if isinstance(kept, dict) else {}

    def _write(self, kept: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        part = self.path.with_name(FILE_NAME + ".part")
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        # Created 0600 from the start: the token is never readable by others, even briefly.
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(kept, out, indent=1)
        os.replace(part, self.path)

    def keep(self, url: str, token: str, user: str, lifetime: float) -> None:
        kept = self._read()
        kept[url] = {"token": token, "user": user, "expires_at": time.time() + lifetime}
        self._write(kept)

    def forget(self, url: str) -> dict[str, Any] | None:
        kept = self._read()
        entry = kept.pop(url, None)
        if entry is not None:
            self._write(kept)
        return entry if isinstance(entry, dict) else None

    def token_for(self, url: str, now: float | None = None) -> str | None:
        """The token kept for ``url``; :class:`ClientError` once it has expired."""
        entry = self._read().get(url)
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return None
        expires_at = entry.get("expires_at")
        if isinstance(expires_at, (int, float)) and expires_at <= (now or time.time()):
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires_at))
            raise ClientError(f"your sign-in to {url} expired at {when}: run diskname login again")
        token: str = entry["token"]
        return token


def read_password(stdin: TextIO, prompt: str) -> str:
    if stdin.isatty():
        return getpass.getpass(prompt)
    return stdin.readline().rstrip("\r\n")


def login(api: Api, args: argparse.Namespace, out: TextIO) -> None:
    user = args.user
    password = read_password(sys.stdin, f"password for {user} at {api.url}: ")
    if not password:
        raise ClientError("no password given")
    answer = api.form(
        TOKEN_PATH,
        {
            "grant_type": "password",
            "username": user,
            "password": password,
            "scope": "ovirt-app-api",
        },
    )
    token, lifetime = answer.get("access_token"), answer.get("expires_in", 3600)
    if not isinstance(token, str) or not isinstance(lifetime, (int, float)):
        raise ClientError("the engine's sign-in answer has no token")
    store = Tokens(config_dir())
    store.keep(api.url, token, user, lifetime)
    print(f"signed in to {api.url} as {user} (token kept in {store.path})", file=out)


def logout(api: Api, args: argparse.Namespace, out: TextIO) -> None:
    entry = Tokens(config_dir()).forget(api.url)
    if entry is None:
        print(f"not signed in to {api.url}", file=out)
        return
    try:
        api.form(LOGOUT_PATH, {"token": str(entry.get("token"))})
    except ClientError as exc:  # revoked or expired already, or unreachable: forgotten here
        print(f"signed out of {api.url}; the engine did not revoke the token: {exc}", file=out)
        return
    print(f"signed out of {api.url}", file=out)
