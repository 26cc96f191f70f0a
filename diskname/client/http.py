"""A small, blocking client of the engine's REST API, on the standard library alone.

The command-line client runs on admin machines that may have nothing but
``pip install diskname`` (no aiohttp, SPEC §16) and makes one request at a
time, so ``urllib`` serves it better than an event loop would. Python 3.9.

An ``http://`` URL aimed at the engine's HTTPS port gets the connection closed
without an answer; the client then tries a TLS handshake there and, when one
answers, says it is an HTTPS port (:func:`_https_hint`).
"""

from __future__ import annotations

import http.client
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


# The exit statuses of the client's commands (README, ``diskname --help``).
EXIT_OK, EXIT_ERROR, EXIT_TIMEOUT = 0, 1, 3
HTTPS_PROBE_TIMEOUT = 3.0


class ClientError(Exception):
    """Anything that stops a command; ``str(exc)`` is the one line to show."""

    exit_code = EXIT_ERROR


class TimedOut(ClientError):
    """What the command waited for (a disk's name) did not come in time: exit 3."""

    exit_code = EXIT_TIMEOUT


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

    @property
    def token(self) -> str | None:
        return self._token

    def get(self, path: str, *, http_timeout: float | None = None, **query: str) -> Any:
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return self.call("GET", path, timeout=http_timeout)

    def form(self, path: str, fields: dict[str, str]) -> Any:
        """POST a form (the SSO endpoints take no JSON), without the bearer token."""
        data = urllib.parse.urlencode(fields).encode()
        headers = {"Accept": "application/json"}
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return self._send(urllib.request.Request(self.url + path, data, headers, method="POST"))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("POST", path, body)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        return self._send(request, timeout)

    def _send(self, request: urllib.request.Request, timeout: float | None = None) -> Any:
        timeout = self._timeout if timeout is None else timeout
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._ssl) as response:
                return _decoded(response.read())
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, _error_message(exc)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, (socket.timeout, TimeoutError)):
                reason = f"no answer within {timeout:g} s"
            elif isinstance(reason, (http.client.RemoteDisconnected, ConnectionResetError)):
                reason = _https_hint(self.url) or reason
            raise Unreachable(f"cannot reach the engine at {self.url}: {reason}") from None


def _https_hint(url: str) -> str | None:
    """For an ``http://`` URL whose port answers a TLS handshake: say so."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        return None
    port = parts.port or 80
    probe = ssl.create_default_context()
    probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE  # only: does TLS answer?
    try:
        address = (parts.hostname, port)
        with socket.create_connection(address, HTTPS_PROBE_TIMEOUT) as raw, probe.wrap_socket(raw):
            pass
    except (OSError, ssl.SSLError):
        return None
    https = parts._replace(scheme="https").geturl()
    return f"this is an HTTPS port: use {https} (and --ca-file for a private CA)"


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
    """The API's ``{"error": {"message"}}``, or OAuth's ``error_description`` (sign-in)."""
    try:
        payload = json.loads(exc.read())
        error = payload["error"]
        if isinstance(error, str):
            return str(payload.get("error_description") or error)
        return str(error["message"])
    except (ValueError, KeyError, TypeError):
        return str(exc.reason)
