"""The web page in a real headless Chromium, driven over the DevTools protocol.

A dev cluster (engine, a host, simulated guests) serves the page; the test
clicks "Hot-plug a new disk" with real mouse events and waits, polling the DOM
with a deadline, for the guest's name of the new disk to appear on the page
without a reload (it arrives through ``/api/events``). A screenshot is left
in ``/tmp/diskname-web.png`` for people to look at.

Chromium comes from the Debian packages ``chromium`` and ``chromium-driver``
(installed by ``.ci/run``); without it the test is skipped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diskname.dev import DevCluster, DevConfig
from diskname.engine.config import EngineConfig
from diskname.engine.db.users import UserStore
from diskname.engine.http.passwords import hash_password
from diskname.engine.service import EngineService
from diskname.protocol.simhw import GuestLayout

from .conftest import started, wait_until
from .fleet import announced, sim_hosts
from .rest import Rest

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)"),
    pytest.mark.timeout(90),
]
SCREENSHOT = Path("/tmp/diskname-web.png")
SCREENSHOT_STALE = Path("/tmp/diskname-web-stale.png")


class DevTools:
    """A minimal Chrome DevTools Protocol client over one websocket (flat sessions)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.console: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            data = message.json()
            future = self._pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append(str(data["params"]["exceptionDetails"]))
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"]["args"]
                self.console.append(" ".join(str(a.get("value", a)) for a in args))

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        message_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_json(message)
        answer = await asyncio.wait_for(future, 20)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    def __init__(self, tools: DevTools, session: str) -> None:
        self.tools, self.session = tools, session

    async def js(self, expression: str) -> Any:
        result = await self.tools.call(
            "Runtime.evaluate",
            self.session,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (press, release).

        First the page's refresh in flight, if any, is awaited: its redraw replaces the
        buttons, and one replaced between press and release gets no click.
        """
        box = await self.js(
            "(async () => { while (typeof refreshing !== 'undefined' && refreshing)"
            " await refreshing.catch(() => null);"
            f" const e = document.querySelector({selector!r});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.tools.call(
                "Input.dispatchMouseEvent",
                self.session,
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    async def screenshot(self, path: Path) -> None:
        shot = await self.tools.call("Page.captureScreenshot", self.session, format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[str]:
    """A headless Chromium; yields its browser-level DevTools websocket URL."""
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with announced(proc, r"DevTools listening on (ws://\S+)") as url:
        yield url


@contextlib.asynccontextmanager
async def open_page(ws_url: str, url: str) -> AsyncIterator[Page]:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        tools = DevTools(ws)
        try:
            target = await tools.call("Target.createTarget", url="about:blank")
            attached = await tools.call(
                "Target.attachToTarget", targetId=target["targetId"], flatten=True
            )
            page = Page(tools, attached["sessionId"])
            for domain in ("Page.enable", "Runtime.enable"):
                await tools.call(domain, page.session)
            await tools.call(
                "Emulation.setDeviceMetricsOverride",
                page.session,
                width=1280,
                height=720,
                deviceScaleFactor=1,
                mobile=False,
            )
            await tools.call("Page.navigate", page.session, url=url)
            yield page
        finally:
            await tools.close()


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


async def test_hot_plug_from_the_page_shows_the_name_without_reload(
    pg_dsn: str, tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    # A short state dir: the agent channels are UNIX sockets (a path has ~100 bytes).
    state = stack.enter_context(tempfile.TemporaryDirectory(prefix="dnw"))
    cluster = DevCluster(DevConfig(hosts=1, vms=2, http_port=0, state_dir=Path(state), dsn=pg_dsn))
    async with (
        started(cluster),
        aiohttp.ClientSession(base_url=cluster.base_url) as http,
        chromium(tmp_path / "profile") as ws_url,
        open_page(ws_url, cluster.base_url + "/") as page,
    ):
        rest = Rest(http)
        vms = sorted((await rest.ok("GET", "/api/vms"))["vm"], key=lambda vm: vm["name"])
        vm = vms[0]["id"]
        root = (await rest.ok("GET", f"/api/vms/{vm}/diskattachments"))["disk_attachment"][0]
        await rest.wait_name(vm, root["id"])

        async def shows(expression: str) -> Any:
            try:
                return await page.js(expression)
            except RuntimeError:
                return None  # the page is still loading

        root_cell = f"document.getElementById('name-{vm}-{root['id']}')?.textContent"
        await wait_until(lambda: shows(f"{root_cell} === '/dev/vda'"), timeout=10)
        await wait_until(lambda: shows("document.getElementById('live').textContent === 'live'"))
        # Every VM's root named: no event left to redraw the page under the click.
        cells = []
        for other in vms:
            path = f"/api/vms/{other['id']}/diskattachments"
            first = (await rest.ok("GET", path))["disk_attachment"][0]
            await rest.wait_name(other["id"], first["id"])
            cells.append(f"document.getElementById('name-{other['id']}-{first['id']}')")
        shown = " && ".join(f"{c}?.textContent.startsWith('/dev/')" for c in cells)
        await wait_until(lambda: shows(shown), timeout=10)
        await page.js("window.notReloaded = true")

        await page.click(f'button[data-action="hotplug"][data-vm="{vm}"]')

        async def new_disk() -> str | None:
            atts = (await rest.ok("GET", f"/api/vms/{vm}/diskattachments"))["disk_attachment"]
            return next((a["id"] for a in atts if a["id"] != root["id"]), None)

        disk = await wait_until(new_disk, timeout=5)
        cell = f"document.getElementById('name-{vm}-{disk}')?.textContent"
        loop = asyncio.get_running_loop()
        clicked = loop.time()
        await wait_until(lambda: shows(f"{cell} === '/dev/vdb'"), timeout=5, interval=0.02)
        print(f"name on the page {1000 * (loop.time() - clicked):.0f} ms after the click")
        assert (await rest.attachment(vm, disk))["logical_name"] == "/dev/vdb"
        assert await page.js("window.notReloaded === true"), "the page was reloaded"
        summary = await page.js("document.getElementById('summary').textContent")
        assert summary == "2 VMs · 3 plugged disks · 3 named", summary

        # The guest mounts it: the row is marked "in use" live, and Details shows the view.
        layout = GuestLayout(1, ("/data",), ())
        cluster.hosts[0].hypervisor.set_guest_layout(vm, disk, layout)  # type: ignore[attr-defined]
        mark = f"!!document.querySelector('[data-in-use=\"{disk}\"]')"
        await wait_until(lambda: shows(mark), timeout=5)
        # The root disk holds the guest's / (in use for the rest of the test).
        root_layout = GuestLayout(1, ("/",), ())
        cluster.hosts[0].hypervisor.set_guest_layout(vm, root["id"], root_layout)  # type: ignore[attr-defined]
        root_in_use = f"!!document.querySelector('[data-in-use=\"{root['id']}\"]')"
        await wait_until(lambda: shows(root_in_use), timeout=5)
        await page.click(f'button[data-details="{disk}"]')
        fact = f"document.querySelector('#details-{vm}-{disk} [data-fact=\"{{}}\"]')?.textContent"
        await wait_until(lambda: shows(f"{fact.format('mountpoints')} === '/data'"), timeout=5)
        by_id = await page.js(fact.format("by-id"))
        assert by_id == f"/dev/disk/by-id/virtio-{disk[:20]}", by_id
        assert await page.js(fact.format("serial")) == disk[:20]
        assert await page.js(fact.format("partitions")) == "/dev/vdb1"
        assert await page.js("window.notReloaded === true")
        await page.screenshot(SCREENSHOT)
        await page.click(f'button[data-details="{disk}"]')  # closed again

        # Unplug from the page: the name goes, the row offers to plug it again.
        await page.click(f'button[data-action="unplug"][data-disk="{disk}"]')
        await wait_until(lambda: shows(f"{cell} === '—'"), timeout=5)
        plug = f'!!document.querySelector(\'button[data-action="plug"][data-disk="{disk}"]\')'
        await wait_until(lambda: shows(plug), timeout=5)
        assert await page.js("window.notReloaded === true")

        # The disk's names, newest first, in a small list that opens under its row.
        await page.click(f'button[data-history="{disk}"]')
        items = f"[...document.querySelectorAll('#history-{vm}-{disk} li')].map(e => e.textContent)"
        listed = await wait_until(
            lambda: shows(f"(() => {{ const i = {items}; return i.length === 2 && i; }})()"),
            timeout=5,
        )
        assert listed[0].startswith("no name (unplug)"), listed
        assert listed[1].startswith("/dev/vdb from agent, by serial"), listed

        # The guest's agent goes (its channel closes): the name stays, marked stale,
        # and the VM's agent pill says so, live (SPEC §17).
        agent = f"document.getElementById('agent-{vm}')?.textContent"
        assert await page.js(agent) == "agent up"
        guest = cluster.hosts[0]._running[vm].tasks[-1]  # the in-process agent
        guest.cancel()

        async def stale_in_the_api() -> bool:
            return bool((await rest.attachment(vm, root["id"]))["stale"])

        await wait_until(stale_in_the_api, timeout=10)
        stale = f"document.getElementById('name-{vm}-{root['id']}')?.dataset.stale === 'true'"
        await wait_until(lambda: shows(stale), timeout=10)
        assert await page.js(agent) == "agent unresponsive"
        assert await page.js(root_cell) == "/dev/vdastalein use"  # the name, both marks
        assert await page.js("window.notReloaded === true")
        # A stale VM whose disk is in use, as an administrator sees it (SPEC §17).
        assert await page.js(root_in_use), "the in-use mark went with the agent"
        await page.screenshot(SCREENSHOT_STALE)
        # Controls, bidi and zero-width characters reach the DOM only as escapes (SPEC §19).
        raw = await page.js(r"el('b', {title: 'x\u2066'}, '\u001b[31mx\u202e\u200b').outerHTML")
        assert raw == r'<b title="x\u2066">\x1b[31mx\u202e\u200b</b>', raw
        assert page.tools.console == [], page.tools.console


async def sign_in(page: Page, user: str, password: str) -> None:
    """Type into the sign-in form and press its button, as a person would."""
    for field, text in (("username", user), ("password", password)):
        await page.click(f"#{field}")
        await page.js(f"document.getElementById({field!r}).select()")
        await page.tools.call("Input.insertText", page.session, text=text)
    await page.click('#signin button[type="submit"]')


async def test_sign_in_hot_plug_and_a_viewer_who_cannot_write(pg_dsn: str, tmp_path: Path) -> None:
    async def users(store: UserStore) -> None:
        await store.add("alice", "admin", hash_password("alice-password"))
        await store.add("bob", "viewer", hash_password("bob-password"))

    engine = EngineService(
        EngineConfig(dsn=pg_dsn, http_port=0, refresh_interval=0.2), users_setup=users
    )
    async with sim_hosts(1) as hosts, started(engine):
        base = f"http://127.0.0.1:{engine.http_port}"
        admin = {"Authorization": "Basic " + base64.b64encode(b"alice:alice-password").decode()}
        async with aiohttp.ClientSession(base_url=base, headers=admin) as http:
            rest = Rest(http)
            body = {"name": "h1", "address": "127.0.0.1", "port": hosts[0].port}
            host = await rest.ok("POST", "/api/hosts", body, status=201)
            vm = (await rest.ok("POST", "/api/vms", {"name": "vm1", "host": host}, status=201))[
                "id"
            ]
            root = (await rest.ok("GET", f"/api/vms/{vm}/diskattachments"))["disk_attachment"][0]
            await rest.wait_name(vm, root["id"], timeout=10)
        async with chromium(tmp_path / "profile") as ws_url, open_page(ws_url, base + "/") as page:

            async def shows(expression: str) -> Any:
                try:
                    return await page.js(expression)
                except RuntimeError:
                    return None  # the page is still loading

            signin_shown = "!document.getElementById('signin').hidden"
            await wait_until(lambda: shows(signin_shown), timeout=10)
            await sign_in(page, "alice", "wrong password")
            error = "document.getElementById('signin-error').textContent"
            await wait_until(lambda: shows(f"{error} === 'wrong user name or password'"))

            await sign_in(page, "alice", "alice-password")
            who = "document.getElementById('who').textContent.trim()"
            await wait_until(lambda: shows(f"{who} === 'alice admin'"), timeout=10)
            assert await page.js("!!sessionStorage.getItem('diskname.token')")
            root_cell = f"document.getElementById('name-{vm}-{root['id']}')?.textContent"
            await wait_until(lambda: shows(f"{root_cell} === '/dev/vda'"), timeout=10)
            await wait_until(
                lambda: shows("document.getElementById('live').textContent === 'live'")
            )
            await page.click(f'button[data-action="hotplug"][data-vm="{vm}"]')
            await wait_until(lambda: shows("document.querySelectorAll('td.name').length === 2"))
            await wait_until(
                lambda: shows("[...document.querySelectorAll('td.name')].some("
                              "td => td.textContent === '/dev/vdb')"),
                timeout=5,
            )  # fmt: skip

            await page.click("#signout")
            await wait_until(lambda: shows(signin_shown))
            assert await page.js("sessionStorage.getItem('diskname.token') === null")

            await sign_in(page, "bob", "bob-password")
            await wait_until(lambda: shows(f"{who} === 'bob viewer'"), timeout=10)
            await wait_until(lambda: shows("document.querySelectorAll('td.name').length === 2"))
            assert await page.js("document.querySelectorAll('button[data-action]').length") == 0
            forged = await page.js(
                f"fetch('/api/vms/{vm}/diskattachments', {{method: 'POST', headers: "
                "{'Authorization': 'Bearer ' + sessionStorage.getItem('diskname.token'), "
                "'Content-Type': 'application/json'}, body: '{\"interface\": \"virtio\"}'})"
                ".then(r => r.status)"
            )
            assert forged == 403
            await page.screenshot(Path("/tmp/diskname-web-viewer.png"))
            assert page.tools.console == [], page.tools.console
