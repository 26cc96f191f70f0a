"""oVirt's SSO endpoints (SPEC §11, §14) and ``GET /api/me``.

``POST /ovirt-engine/sso/oauth/token`` (form: ``grant_type=password``,
``username``, ``password``, ``scope``) answers ``{"access_token", "token_type":
"bearer", "expires_in"}``; ``POST /ovirt-engine/services/sso-logout`` (form:
``token``) revokes one and answers ``{}``. These speak OAuth 2.0's error shape
(``{"error": "access_denied", "error_description": ...}``), which oVirt's SDK
turns into its ``AuthError``, so they translate the engine's errors themselves
instead of leaving them to the JSON API's error middleware.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from ..errors import EngineError, Invalid, TooManyRequests, http_headers
from ..http.auth import SSO_LOGOUT, SSO_TOKEN, Authenticator, caller, check_media_type

GetAuth = Callable[[web.Request], Authenticator]


class UnsupportedGrant(Invalid):
    """A grant type other than ``password``."""


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
    return {k: v for k, v in form.items() if isinstance(v, str)}


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
        code = "access_denied" if exc.status in (401, 429) else "invalid_request"
        if isinstance(exc, UnsupportedGrant):
            code = "unsupported_grant_type"
        status = exc.status if isinstance(exc, TooManyRequests) or exc.status == 415 else 400
        body = {"error": code, "error_description": str(exc)}
        return _json(body, status, headers=http_headers(exc) if status == 429 else None)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # RFC 6749 §5.1: token responses must not be cached.
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})},
    )
