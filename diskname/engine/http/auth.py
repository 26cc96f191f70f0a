"""Who is calling the REST API, and whether they may (SPEC §7, §11).

:func:`guard` is the middleware in front of every route. On ``/api/*`` and
``/ovirt-engine/api*`` it finds the caller (:class:`Principal`) from
``Authorization: Bearer`` (a sign-in token or the static ``api_token``), HTTP
Basic (a user's password), or, on the event stream only, an ``access_token``
query parameter (EventSource cannot send headers); it refuses a viewer's write;
and on every write it checks the media type, so a foreign web page cannot forge
one with a plain form. Routes that want the caller (the oVirt XML API) call
:func:`caller` instead of looking at credentials themselves.

Requests without credentials act as admin only (a) with ``anonymous_admin``
(dev mode, loopback only) or (b) while nothing is configured: no user, no
``api_token``, and the engine on loopback or told ``insecure_no_auth``. Either
way only when the request's Host is loopback too, so a web page whose name
resolves to 127.0.0.1 (DNS rebinding) is not let in. Credentials that are given
are always checked, in any mode.

Everything here raises the engine's own errors (:mod:`..errors`); the edges turn
them into statuses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from ...config import ConfigError
from ...connguard.failures import FailureThrottle
from ...netaddr import is_loopback
from ..config import EngineConfig
from ..db.batching import Coalescer
from ..db.users import NAME as USER_NAME
from ..db.users import User, UserStore
from ..errors import Forbidden, TooManyRequests, Unauthenticated, UnsupportedMediaType
from ..metrics import Metrics
from .fairness import FairSlots, Full
from .passwords import dummy_hash, verify_password
from .sessions import Credential, Sessions

log = logging.getLogger(__name__)

READS = frozenset({"GET", "HEAD", "OPTIONS"})
WRITES_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
SSO_TOKEN = "/ovirt-engine/sso/oauth/token"
SSO_LOGOUT = "/ovirt-engine/services/sso-logout"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
EVENTS = "/api/events"
# Password hashes computed at once: each takes 32 MiB and a core for ~0.3 s.
HASHING_AT_ONCE = 2
# Failed sign-ins let through before the throttle steps in (connguard/failures.py).
PAIR_FAILURES, ADDRESS_FAILURES = 5, 20
# Sign-ins one address may have waiting for a hashing slot (engine/http/fairness.py).
MAX_WAITING = 8
MAX_NAME = 128  # as users.NAME


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request: a user, the static token, or anonymous."""

    name: str
    role: str  # "admin" | "viewer"
    via: str  # "token", "password", "api_token", "anonymous"
    credential: Credential | None = None  # what its event streams end with (.sessions)

    @property
    def may_write(self) -> bool:
        return self.role == "admin"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "role": self.role, "auth": self.via}


# aiohttp 3.14 typed request storage (the reason for that version floor).
_PRINCIPAL = web.RequestKey("diskname_principal", Principal)
ANONYMOUS = Principal("anonymous", "admin", "anonymous")
API_TOKEN = Principal("api_token", "admin", "api_token")


def is_protected(path: str) -> bool:
    """Whether ``path`` needs a principal: the JSON API and the oVirt XML API."""
    return path.startswith("/api/") or _is_ovirt_api(path)


def _is_ovirt_api(path: str) -> bool:
    return path == "/ovirt-engine/api" or path.startswith("/ovirt-engine/api/")


def media_types(path: str) -> tuple[str, ...] | None:
    """The Content-Types a write with a body to ``path`` may have (None: any)."""
    if path.startswith("/api/"):
        return ("application/json",)
    if _is_ovirt_api(path):
        return ("application/xml",)
    if path in (SSO_TOKEN, SSO_LOGOUT):
        return FORM_TYPES
    return None


def check_media_type(request: web.Request) -> None:
    if request.method not in WRITES_WITH_BODY:
        return
    if not request.body_exists and "Content-Type" not in request.headers:
        return
    allowed = media_types(request.path)
    if allowed is not None and request.content_type not in allowed:
        raise UnsupportedMediaType(
            f"{request.method} {request.path} needs Content-Type: {allowed[0]}"
            f" (got {request.headers.get('Content-Type', 'none')})"
        )


def caller(request: web.Request) -> Principal:
    """The principal :func:`guard` found for this request."""
    try:
        return request[_PRINCIPAL]
    except KeyError:
        raise Unauthenticated("this route is not behind the guard") from None


def check_exposure(config: EngineConfig, has_users: bool) -> None:
    """Refuse (:class:`ConfigError`) to serve in a way that leaves the API open to a network:
    no credentials at all, or credentials crossing it in clear text (SPEC §11, §19)."""
    loopback = is_loopback(config.http_host)
    where = f"{config.http_host}:{config.http_port}"
    if config.anonymous_admin and not loopback:
        raise ConfigError(
            f"anonymous_admin is for loopback only, not {config.http_host}: "
            "sign in with users instead (diskname user add)"
        )
    if loopback:
        return
    credentials = bool(config.api_token) or has_users
    if not (config.insecure_no_auth or credentials):
        raise ConfigError(
            f"refusing to serve the REST API on {where} with no user and no api_token: add "
            "one with `diskname user add NAME --role admin --password-stdin`, set api_token, "
            "or pass --insecure-no-auth"
        )
    https = config.https_cert is not None and config.https_key is not None
    if credentials and not https and not config.insecure_http:
        raise ConfigError(
            f"refusing to serve the REST API on {where} over plain HTTP: passwords and tokens "
            "would cross the network in clear text; set https_cert and https_key, or pass "
            "--insecure-http"
        )


def guard(get_auth: Callable[[web.Request], Authenticator]) -> Middleware:
    """The middleware: authenticate protected routes, authorise writes, check media types.

    (The SSO endpoints check their own media type, to answer in OAuth's shape.)
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if is_protected(request.path):
            principal = await get_auth(request).authenticate(request)
            request[_PRINCIPAL] = principal
            if request.method not in READS and not principal.may_write:
                raise Forbidden(f"{principal.name} is a viewer: viewers may only read")
            check_media_type(request)
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


class Authenticator:
    """Checks credentials against the static token and the users in the database."""

    def __init__(
        self,
        config: EngineConfig,
        users: UserStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config, self.users, self._metrics, self._clock = config, users, metrics, clock
        # Many people may share an address (NAT): it gets more free failures than a
        # (user, address) pair. Nothing is keyed by the user alone (SPEC §19).
        self.pair_throttle = FailureThrottle(free=PAIR_FAILURES)
        self.address_throttle = FailureThrottle(free=ADDRESS_FAILURES)
        self._hashing = FairSlots(HASHING_AT_ONCE, MAX_WAITING, self._address_failures)
        self.sessions = Sessions(users)
        # "Is there any user yet?" for open (loopback, no token) engines: requests that
        # arrive together share one query instead of taking a pool connection each.
        self._any_user: Coalescer[None, bool] = Coalescer(self._any_users)
        self._open = config.api_token is None and (
            is_loopback(config.http_host) or config.insecure_no_auth
        )

    async def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization")
        if header is not None:
            return await self._from_header(header, request)
        if request.path == EVENTS and "access_token" in request.query:
            return await self.from_token(request.query["access_token"])
        if await self._anonymous_allowed(request):
            return ANONYMOUS
        raise Unauthenticated(
            "sign in: send Authorization: Bearer TOKEN (POST /ovirt-engine/sso/oauth/token "
            "gives one) or HTTP Basic with a user's password"
        )

    async def _from_header(self, header: str, request: web.Request) -> Principal:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return await self.from_token(value.strip())
        if scheme.lower() == "basic":
            name, password = _basic(value)
            user = await self.sign_in(name, password, request.remote)
            credential = Credential.password(user.name, user.password_hash)
            return Principal(user.name, user.role, "password", credential)
        raise Unauthenticated("the Authorization header must be Bearer or Basic")

    async def from_token(self, token: str) -> Principal:
        """The principal of a bearer token: the static ``api_token`` or a live sign-in token."""
        static = self._config.api_token
        if static is not None and _same(token, static):
            return API_TOKEN
        user = await self.users.token_user(token)
        if user is None:
            self._metrics.login_failures["token"] += 1
            raise Unauthenticated("the token is unknown, expired or revoked: sign in again")
        return Principal(user.name, user.role, "token", Credential.token(token))

    def _address_failures(self, address: str) -> int:
        return self.address_throttle.failures(address, self._clock())

    async def _anonymous_allowed(self, request: web.Request) -> bool:
        loopback_request = is_loopback(request.url.host or "")
        if self._config.anonymous_admin:
            return loopback_request
        if not self._open or await self._any_user.submit(None):
            return False
        return self._config.insecure_no_auth or loopback_request

    async def _any_users(self, items: Sequence[None]) -> list[bool]:
        return [await self.users.any()] * len(items)

    async def sign_in(self, name: str, password: str, client: str | None) -> User:
        """The user whose name and password these are; slowed down after failures.

        The throttle is asked again once a hashing slot is free, so tries sent in
        parallel still see each other's failures. Slots go to addresses in turn,
        those failing least first (:mod:`.fairness`).
        """
        address = client or "?"
        pair = f"{name[:MAX_NAME]}\n{address}"  # throttle keys stay small
        self._check_throttle(pair, address)  # cheap refusal before queueing
        # A name that cannot exist costs no query (and a NUL would be PostgreSQL's error).
        user = await self.users.get(name) if USER_NAME.fullmatch(name) else None
        async with self._hashing_slot(address):
            self._check_throttle(pair, address)
            encoded = user.password_hash if user else dummy_hash()
            good = await asyncio.to_thread(verify_password, password, encoded)
            if user is None or not good:
                now = self._clock()
                self.pair_throttle.failed(pair, now)
                self.address_throttle.failed(address, now)
        if user is None or not good:
            self._metrics.login_failures["password"] += 1
            log.info("failed sign-in as %r from %s", name[:MAX_NAME], address)
            raise Unauthenticated("wrong user name or password")
        self.pair_throttle.succeeded(pair)
        return user

    @contextlib.asynccontextmanager
    async def _hashing_slot(self, address: str) -> AsyncIterator[None]:
        try:
            async with self._hashing.slot(address):
                yield
        except Full:
            self._metrics.login_failures["throttled"] += 1
            raise TooManyRequests(
                f"{MAX_WAITING} sign-ins from {address} are already waiting: try again in a second",
                retry_after=1.0,
            ) from None

    def _check_throttle(self, pair: str, address: str) -> None:
        now = self._clock()
        wait = max(self.pair_throttle.wait(pair, now), self.address_throttle.wait(address, now))
        if wait > 0:
            self._metrics.login_failures["throttled"] += 1
            raise TooManyRequests(
                f"too many failed sign-ins: try again in {math.ceil(wait)} s", retry_after=wait
            )

    async def issue_token(self, user: User) -> tuple[str, int]:
        """A new sign-in token for ``user`` and its lifetime in whole seconds."""
        lifetime = self._config.session_lifetime
        return await self.users.issue_token(user.name, lifetime), int(lifetime)

    async def sign_out(self, token: str) -> None:
        await self.users.revoke(token)
        self.sessions.signed_out(token)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _basic(value: str) -> tuple[str, str]:
    """The user name and password of HTTP Basic credentials (RFC 7617, UTF-8)."""
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # not ASCII, not base64 (binascii.Error) or not UTF-8
        raise Unauthenticated("malformed HTTP Basic credentials") from None
    name, colon, password = text.partition(":")
    if not colon:
        raise Unauthenticated("malformed HTTP Basic credentials")
    return name, password
