"""What the engine refuses, and how: one clear line or a 4xx JSON error (SPEC §19).

A real engine on port 0 (loopback, no users: anonymous admin) with a real
PostgreSQL; the oversized header goes over a raw socket, since no client sends one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re

import aiohttp
import pytest

from diskname.config import password_hidden
from diskname.engine import EngineConfig, EngineService

from .conftest import started
from .test_e2e_security import cli
from .test_settings import run

pytestmark = pytest.mark.timeout(60)
JSON = {"Content-Type": "application/json"}
VM = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def base(pg_dsn: str):  # type: ignore[no-untyped-def]
    service = EngineService(EngineConfig(dsn=pg_dsn, http_port=0))
    async with started(service):
        yield f"http://127.0.0.1:{service.http_port}"


@pytest.mark.parametrize(
    ("method", "path", "body", "where"),
    [
        ("GET", "/api/vms?x=%00", None, "query parameter 'x'"),
        ("GET", "/api/vms?a%1bb=1", None, "a query parameter name"),
        ("GET", f"/api/vms/{VM}%0a", None, "the path"),
        ("GET", "/api/events?access_token=a%00b", None, "query parameter 'access_token'"),
        ("POST", "/api/hosts", {"name": "h\u0001", "address": "a", "port": 1}, "field 'name'"),
        ("POST", "/api/hosts", {"name": "h", "address": "a\u009b", "port": 1}, "field 'address'"),
    ],
)
async def test_a_control_character_is_a_400_json_error(
    base: str, method: str, path: str, body: object, where: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base + path, headers=JSON, data=json.dumps(body)) as response,
    ):
        assert response.status == 400
        error = (await response.json())["error"]
        assert where in error["message"] and "control character" in error["message"]


async def test_a_nul_in_an_ovirt_search_is_a_400_fault(base: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(base + "/ovirt-engine/api/vms?search=name%3Dx%00") as response,
    ):
        assert response.status == 400
        assert "control character" in await response.text()


async def test_a_nul_in_a_sign_in_form_is_invalid_request(base: str) -> None:
    form = {"grant_type": "password", "username": "a\x00b", "password": "p"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(base + "/ovirt-engine/sso/oauth/token", data=form) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_request"


async def test_an_oversized_header_is_431_json_without_a_traceback(
    base: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    secret = "echo-me-" + "x" * 9000
    writer.write(f"GET /api/vms HTTP/1.1\r\nHost: x\r\nX-Big: {secret}\r\n\r\n".encode())
    with caplog.at_level(logging.DEBUG):
        answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].endswith(b" 431 Request Header Fields Too Large")
    assert b"application/json" in head
    error = json.loads(body)["error"]
    assert error["code"] == 431 and "too large" in error["message"]
    assert b"echo-me" not in answer
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_the_page_allows_only_itself_and_takes_no_token_from_its_url(base: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(base + "/") as response:
        page = await response.read()
        headers = response.headers
    policy = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    (script,) = re.findall(rb"<script>(.*?)</script>", page, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert b"location.hash" not in page and b"#token" not in page


async def test_plain_http_off_loopback_with_credentials_exits_2(pg_dsn: str) -> None:
    code, out, err = await cli("engine", "--http", "0.0.0.0:0", "--dsn", pg_dsn, "--api-token", "t")
    assert code == 2, (out, err)
    own = [line for line in err.splitlines() if line.startswith("diskname:")]
    assert len(own) == 1 and "Traceback" not in err
    assert "over plain HTTP" in own[0] and "--insecure-http" in own[0]


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:pw1@a,b:5433/db?target_session_attrs=read-write&password=pw2",
        "postgresql://u@h/db?sslpassword=pw1&password=pw2",
        "host=a,b password=pw1 user=u",
        "host=a password = 'pw1 pw2' user=u",
    ],
)
def test_config_show_masks_every_secret_of_a_dsn(dsn: str) -> None:
    assert "pw" not in password_hidden(dsn)
    out = run("config", "--show", "engine", DISKNAME_DSN=dsn)
    assert out.returncode == 0 and "pw" not in out.stdout, out.stdout
