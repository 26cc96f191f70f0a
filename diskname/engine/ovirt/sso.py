"""oVirt's SSO endpoints (SPEC §11, §14) and ``GET /api/me``.

``POST /ovirt-engine/sso/oauth/token`` (form: ``grant_type=password``,
``username``, ``password``, ``scope``) answers ``{"access_token", "token_type":
"bearer", "expires_in"}``; ``POST /ovirt-engine/services/sso-logout`` (form:
``token``) revokes one and answers ``{}``. These speak OAuth 2.0's error shape
(``{"error": "access_denied", "error_description": ...}``), which oVirt's SDK
turns into its ``AuthError``, so they translate the engine's errors themselves,
through their own table (:data:`OAUTH`), and leave only what is no fault of the
request (the database away) to the API's error middleware.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..errors import (
    DatabaseRefused,
    EngineError,
    Invalid,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)
from ..http.auth import SSO_LOGOUT, SSO_TOKEN, Authenticator, caller, check_media_type
from ..http.errors import ByClass, Headers, retry_after
from ..http.inputs import check_text

GetAuth = Callable[[web.Request], Authenticator]
FORM_FIELDS = frozenset({"grant_type", "username", "password", "scope", "token"})


class UnsupportedGrant(Invalid):
    """A grant type other than ``password``."""


@dataclass(frozen=True, slots=True)
class OAuthError:
    """RFC 6749 §5.2: the status and ``error`` code an engine error is answered with."""

    status: int
    error: str
    headers: Headers | None = None


# None: not the request's fault, answered by the API's error middleware (503, 500).
OAUTH: ByClass[OAuthError | None] = ByClass(
    {
        EngineError: OAuthError(400, "invalid_request"),
        UnsupportedGrant: OAuthError(400, "unsupported_grant_type"),
        Unauthenticated: OAuthError(400, "access_denied"),
        TooManyRequests: OAuthError(429, "access_denied", retry_after),
        UnsupportedMediaType: OAuthError(415, "invalid_request"),
        Unavailable: None,
        DatabaseRefused: None,
    }
)


def routes(get_auth: GetAuth) -> list[web.RouteDef]:
    async def token(request: web.Request) -> web.Response:
        return await _oauth(request, lambda: _token(get_auth(request), request))

    async def logout(request: web.Request) -> web.Response:
        return await _oauth(request, lambda: _logout(get_auth(request), request))

    return [web.post(SSO_TOKEN, token), web.post(SSO_LOGOUT, logout), web.get("/api/me", me)]


async def me(request: web.Request) -> web.Response:
    """Who the caller is: the web page shows it and hides writes from viewers."""
    return _json(caller(request).to_json())


async def _token(auth: Authenticator, request: web.Request) -> web.Response:
    form = await _form(request)
    grant = form.get("grant_type", "")
    if grant != "password":
        raise UnsupportedGrant(f"grant_type must be password, not {grant!r}")
    name, password = _required(form, "username"), _required(form, "password")
    user = await auth.sign_in(name, password, request.remote)
    token, lifetime = await auth.issue_token(user)
    body = {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": lifetime,
        "scope": form.get("scope", "ovirt-app-api"),
    }
    return _json(body)


async def _logout(auth: Authenticator, request: web.Request) -> web.Response:
    await auth.sign_out(_required(await _form(request), "token"))
    return _json({})


async def _form(request: web.Request) -> dict[str, str]:
    check_media_type(request)
    try:
        form = await request.post()
    except ValueError:
        raise Invalid("the form could not be read") from None
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    for name in FORM_FIELDS & fields.keys():  # the others are ignored, never stored
        check_text(fields[name], f"form field {name!r}")
    return fields


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise Invalid(f"missing form field {name!r}")
    return value


async def _oauth(request: web.Request, call: Callable[[], Any]) -> web.Response:
    """Run ``call``; the engine's errors come out in OAuth 2.0's shape."""
    try:
        response: web.Response = await call()
        return response
    except EngineError as exc:
        answer = OAUTH[exc]
        if answer is None:
            raise
        body = {"error": answer.error, "error_description": str(exc)}
        headers = None if answer.headers is None else answer.headers(exc)
        return _json(body, answer.status, headers=headers)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # RFC 6749 §5.1: token responses must not be cached.
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})},
    )
