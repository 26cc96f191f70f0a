"""REST security end to end: a real engine on port 0, real users in real PostgreSQL.

One table (acceptance 3 of issue 12) says, for each kind of caller and request,
what the engine must answer; the other tests cover what a table cannot: a token
that expires by itself, the sign-in throttle, anonymous access and its limits.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diskname.config import ConfigError
from diskname.engine.config import EngineConfig
from diskname.engine.db.users import UserStore
from diskname.engine.http.auth import check_exposure
from diskname.engine.http.passwords import hash_password
from diskname.engine.service import EngineService
from diskname.pki import init

from .conftest import started, wait_until

API_TOKEN = "static-automation-token"
PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
SSO = "/ovirt-engine/sso/oauth/token"
LOGOUT = "/ovirt-engine/services/sso-logout"
JSON = {"Content-Type": "application/json"}


@dataclass
class Engine:
    service: EngineService
    users: UserStore
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, data: Any = None
    ) -> tuple[int, Any, Any]:
        async with self.http.request(method, self.base + path, headers=headers, data=data) as r:
            if r.content_type == "application/xml":  # oVirt's XML API: a <fault> or a value
                root = ET.fromstring(await r.read())
                return r.status, {root.tag: root.findtext("detail")}, r.headers
            body = await r.json(content_type=None) if r.content_length != 0 else None
            return r.status, body, r.headers

    async def sign_in(self, user: str, password: str) -> tuple[int, Any]:
        form = {"grant_type": "password", "scope": "ovirt-app-api"}
        status, body, _ = await self.request(
            "POST", SSO, data={**form, "username": user, "password": password}
        )
        return status, body

    async def token(self, user: str) -> str:
        status, body = await self.sign_in(user, PASSWORDS[user])
        assert status == 200, body
        return str(body["access_token"])


@contextlib.asynccontextmanager
async def engine(pg_dsn: str, **settings: Any) -> AsyncIterator[Engine]:
    stores: list[UserStore] = []

    async def setup(users: UserStore) -> None:
        stores.append(users)
        await users.add("alice", "admin", hash_password(PASSWORDS["alice"]))
        await users.add("bob", "viewer", hash_password(PASSWORDS["bob"]))

    config = EngineConfig(dsn=pg_dsn, http_port=0, refresh_interval=0.2, **settings)
    service = EngineService(config, users_setup=setup)
    async with started(service), aiohttp.ClientSession() as http:
        yield Engine(service, stores[0], http)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# (what, method, path, credentials, body kind, status, error): credentials and bodies
# are names resolved in the test, since tokens exist only once the engine runs.
CASES = [
    ("no credentials", "GET", "/api/vms", None, None, 401, None),
    ("no credentials on the oVirt API", "GET", "/ovirt-engine/api/vms", None, None, 401, None),
    ("garbage bearer token", "GET", "/api/vms", "garbage", None, 401, None),
    ("unknown scheme", "GET", "/api/vms", "digest", None, 401, None),
    ("malformed Basic", "GET", "/api/vms", "bad-basic", None, 401, None),
    ("wrong password over Basic", "GET", "/api/vms", "basic-wrong", None, 401, None),
    ("wrong password", "POST", SSO, None, "login-wrong", 400, "access_denied"),
    ("unknown user", "POST", SSO, None, "login-nobody", 400, "access_denied"),
    ("grant type not password", "POST", SSO, None, "login-code", 400, "unsupported_grant_type"),
    ("no user name", "POST", SSO, None, "login-empty", 400, "invalid_request"),
    ("JSON to the token endpoint", "POST", SSO, None, "json", 415, "invalid_request"),
    ("expired token", "GET", "/api/vms", "expired", None, 401, None),
    ("revoked token", "GET", "/api/vms", "revoked", None, 401, None),
    ("token of a removed user", "GET", "/api/vms", "removed", None, 401, None),
    ("viewer reads", "GET", "/api/vms", "viewer", None, 200, None),
    ("viewer reads events", "GET", "/api/events?access_token={viewer}", None, None, 200, None),
    ("viewer write", "POST", "/api/hosts", "viewer", "json", 403, None),
    ("viewer delete", "DELETE", "/api/vms/{missing}", "viewer", None, 403, None),
    ("viewer over Basic writes", "POST", "/api/hosts", "basic-viewer", "json", 403, None),
    ("admin over Basic reads", "GET", "/api/vms", "basic-admin", None, 200, None),
    ("admin text/plain POST", "POST", "/api/hosts", "admin", "text", 415, None),
    ("admin form POST", "POST", "/api/hosts", "admin", "form", 415, None),
    ("admin JSON to the oVirt API", "POST", "/ovirt-engine/api/vms", "admin", "json", 415, None),
    ("admin write", "POST", "/api/hosts", "admin", "json", 201, None),
    ("static api_token writes", "DELETE", "/api/vms/{missing}", "api_token", None, 404, None),
    ("wrong token in the event stream", "GET", "/api/events?access_token=x", None, None, 401, None),
]

BODIES: dict[str, tuple[dict[str, str], Any]] = {
    "json": (JSON, b'{"name": "h1", "address": "127.0.0.1", "port": 1}'),
    "text": ({"Content-Type": "text/plain"}, b'{"name": "h1", "address": "127.0.0.1", "port": 1}'),
    "form": ({}, {"name": "h1", "address": "127.0.0.1", "port": "1"}),
    "login-wrong": ({}, {"grant_type": "password", "username": "alice", "password": "nope"}),
    "login-nobody": ({}, {"grant_type": "password", "username": "carol", "password": "x"}),
    "login-code": ({}, {"grant_type": "authorization_code", "username": "alice"}),
    "login-empty": ({}, {"grant_type": "password", "password": "x"}),
}


async def credentials(e: Engine) -> dict[str, dict[str, str]]:
    revoked = await e.token("alice")
    status, _, _ = await e.request("POST", LOGOUT, data={"token": revoked})
    assert status == 200
    await e.users.add("dave", "admin", hash_password("dave-password"))
    removed = await e.users.issue_token("dave", 3600)
    await e.users.remove("dave")
    return {
        "admin": bearer(await e.token("alice")),
        "viewer": bearer(await e.token("bob")),
        "expired": bearer(await e.users.issue_token("alice", -1.0)),
        "revoked": bearer(revoked),
        "removed": bearer(removed),
        "api_token": bearer(API_TOKEN),
        "garbage": bearer("not-a-token"),
        "digest": {"Authorization": "Digest username=alice"},
        "bad-basic": {"Authorization": "Basic !!!"},
        "basic-wrong": basic("alice", "wrong"),
        "basic-admin": basic("alice", PASSWORDS["alice"]),
        "basic-viewer": basic("bob", PASSWORDS["bob"]),
    }


async def test_who_may_do_what(pg_dsn: str) -> None:
    async with engine(pg_dsn, api_token=API_TOKEN) as e:
        creds = await credentials(e)
        viewer_token = creds["viewer"]["Authorization"].removeprefix("Bearer ")
        names = {"viewer": viewer_token, "missing": "00000000-0000-4000-8000-000000000000"}
        failures = []
        for what, method, path, who, kind, status, error in CASES:
            headers, data = BODIES[kind] if kind else ({}, None)
            headers = {**headers, **(creds[who] if who else {})}
            if path.startswith("/api/events"):
                got, body = await _events_status(e, path.format(**names), headers)
            else:
                got, body, _ = await e.request(method, path.format(**names), headers, data)
            shape_ok = body is None or (
                body.get("error") == error if error else {"error", "fault"} & set(body) or got < 400
            )
            if got != status or not shape_ok:
                failures.append((what, got, body))
        assert failures == []


async def _events_status(e: Engine, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """The status of the event stream (it stays open: read its first line only)."""
    async with e.http.get(e.base + path, headers=headers) as resp:
        if resp.status == 200:
            assert (await resp.content.readline()).startswith(b":")
            return 200, None
        return resp.status, await resp.json()


async def test_a_token_lives_session_lifetime_seconds(pg_dsn: str) -> None:
    async with engine(pg_dsn, session_lifetime=1.0) as e:
        status, body = await e.sign_in("bob", PASSWORDS["bob"])
        assert status == 200 and body["expires_in"] == 1 and body["token_type"] == "bearer"
        headers = bearer(body["access_token"])
        assert (await e.request("GET", "/api/me", headers))[1] == {
            "name": "bob",
            "role": "viewer",
            "auth": "token",
        }

        async def expired() -> bool:
            return (await e.request("GET", "/api/vms", headers))[0] == 401

        await wait_until(expired, timeout=5, interval=0.1)


async def test_failed_sign_ins_are_counted_and_then_refused_with_429(pg_dsn: str) -> None:
    async with engine(pg_dsn) as e:
        for _ in range(5):
            assert (await e.sign_in("alice", "guess"))[0] == 400
        # Locked now: even the right password is refused, without being checked.
        status, body, headers = await e.request(
            "POST", SSO, data={"grant_type": "password", "username": "alice", "password": "x"}
        )
        assert status == 429 and body["error"] == "access_denied"
        assert int(headers["Retry-After"]) >= 1
        status, body, _ = await e.request("GET", "/api/vms", basic("alice", PASSWORDS["alice"]))
        assert status == 429, body
        # Bob signs in from the same address: an address has more free failures.
        assert (await e.sign_in("bob", PASSWORDS["bob"]))[0] == 200
        async with e.http.get(e.base + "/metrics") as resp:
            text = await resp.text()
        assert 'diskname_engine_login_failures_total{reason="password"} 5' in text
        assert 'diskname_engine_login_failures_total{reason="throttled"} 2' in text


async def test_without_users_loopback_is_open_but_not_to_other_host_names(pg_dsn: str) -> None:
    config = EngineConfig(dsn=pg_dsn, http_port=0)
    service = EngineService(config)
    async with started(service), aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{service.http_port}"
        async with http.get(base + "/api/me") as resp:
            assert (await resp.json()) == {
                "name": "anonymous",
                "role": "admin",
                "auth": "anonymous",
            }
        # A page on a name that resolves to 127.0.0.1 (DNS rebinding) is not let in.
        async with http.get(base + "/api/vms", headers={"Host": "evil.example:80"}) as resp:
            assert resp.status == 401


async def test_anonymous_admin_acts_as_admin_yet_checks_given_credentials(pg_dsn: str) -> None:
    async with engine(pg_dsn, anonymous_admin=True) as e:
        status, body, _ = await e.request("GET", "/api/me")
        assert status == 200 and body["role"] == "admin"
        assert (await e.request("POST", "/api/hosts", JSON, b"{}"))[0] == 400  # got in
        assert (await e.request("GET", "/api/vms", bearer("wrong")))[0] == 401
        viewer = bearer(await e.token("bob"))
        assert (await e.request("POST", "/api/hosts", {**JSON, **viewer}, b"{}"))[0] == 403


@pytest.mark.parametrize(
    ("settings", "users", "refused"),
    [
        ({"http_host": "0.0.0.0"}, False, "no user and no api_token"),
        ({"http_host": "0.0.0.0"}, True, "over plain HTTP"),
        ({"http_host": "0.0.0.0", "api_token": "t"}, False, "over plain HTTP"),
        ({"http_host": "0.0.0.0", "insecure_http": True}, True, None),
        ({"http_host": "0.0.0.0", "api_token": "t", "insecure_http": True}, False, None),
        ({"http_host": "0.0.0.0", "https_cert": "c", "https_key": "k"}, True, None),
        ({"http_host": "0.0.0.0", "insecure_no_auth": True}, False, None),
        ({"http_host": "127.0.0.1"}, False, None),
        ({"http_host": "::1"}, False, None),
        ({"http_host": "0.0.0.0", "anonymous_admin": True}, True, "loopback only"),
        ({"http_host": "localhost", "anonymous_admin": True}, False, None),
    ],
)
def test_the_engine_refuses_to_serve_a_network_unprotected(
    settings: dict[str, Any], users: bool, refused: str | None
) -> None:
    config = EngineConfig(**settings)
    if refused is None:
        check_exposure(config, users)
    else:
        with pytest.raises(ConfigError, match=refused):
            check_exposure(config, users)


async def test_https_with_the_engine_certificate_of_pki_init(pg_dsn: str, tmp_path: Path) -> None:
    init(tmp_path / "pki", "engine.lab", ["127.0.0.1"])
    cert, key = tmp_path / "pki" / "engine.pem", tmp_path / "pki" / "engine.key"
    async with engine(pg_dsn, https_cert=cert, https_key=key) as e:
        url = f"https://127.0.0.1:{e.service.http_port}"
        trust = ssl.create_default_context(cafile=tmp_path / "pki" / "ca.pem")
        async with e.http.get(url + "/api/me", ssl=trust, headers=bearer(API_TOKEN)) as resp:
            assert resp.status == 401  # served over TLS; this engine has no api_token
        token = await _token_over(e.http, url, trust)
        async with e.http.get(url + "/api/me", ssl=trust, headers=bearer(token)) as resp:
            assert (await resp.json())["name"] == "alice"
        with pytest.raises(aiohttp.ClientError):  # a client that does not trust the engine CA
            async with e.http.get(url + "/healthz", ssl=ssl.create_default_context()):
                pass
        with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
            async with e.http.get(f"http://127.0.0.1:{e.service.http_port}/healthz"):
                pass


async def _token_over(http: aiohttp.ClientSession, url: str, trust: ssl.SSLContext) -> str:
    form = {"grant_type": "password", "username": "alice", "password": PASSWORDS["alice"]}
    async with http.post(url + SSO, data=form, ssl=trust) as resp:
        return str((await resp.json())["access_token"])


def test_https_needs_a_certificate_and_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both https_cert and https_key"):
        EngineService(EngineConfig(https_cert=tmp_path / "engine.pem"))
    with pytest.raises(ConfigError, match="cannot load"):
        EngineService(EngineConfig(https_cert=tmp_path / "x.pem", https_key=tmp_path / "x.key"))
