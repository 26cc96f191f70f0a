"""A small, blocking client of the engine's REST API, on the standard library alone.

The command-line client runs on admin machines that may have nothing but
``pip install diskname`` (no aiohttp, SPEC §16) and makes one request at a
time, so ``urllib`` serves it better than an event loop would.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT = 60.0  # a plug waits for the host; the engine's own limit is 30 s


class ClientError(Exception):
    """Anything that stops a command; ``str(exc)`` is the one line to show."""


class ApiError(ClientError):
    """The engine answered with an error (``{"error": {"code", "message"}}``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status


class Unreachable(ClientError):
    pass


class Api:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = TIMEOUT,
        ca_file: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        # HTTPS to an engine whose certificate a private CA signed (diskname pki init).
        self._ssl = None if ca_file is None else _context(ca_file)

    def get(self, path: str, **query: str) -> Any:
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return self.call("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("POST", path, body)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(
                request, timeout=self._timeout, context=self._ssl
            ) as response:
                return _decoded(response.read())
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, _error_message(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, socket.timeout | TimeoutError):
                reason = f"no answer within {self._timeout:g} s"
            raise Unreachable(f"cannot reach the engine at {self.url}: {reason}") from None


def _context(ca_file: Path) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ClientError(f"cannot use {ca_file} as the CA: {exc}") from None


def _decoded(payload: bytes) -> Any:
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        raise ClientError("the engine answered something that is not JSON") from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
        return str(error["message"])
    except (ValueError, KeyError, TypeError):
        return str(exc.reason)
