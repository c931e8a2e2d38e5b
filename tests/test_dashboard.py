"""The live ``/dashboard`` page, rendered by headless Chromium (Debian's ``chromium``) against a real Site.

Chromium runs as a subprocess in a thread (``deferToThread``) so the reactor keeps serving the page's
fetches. Without a chromium binary the browser tests skip; ``RESTMQ_CHROMIUM`` names another one.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from html.parser import HTMLParser
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, threads
from twisted.web.resource import Resource

from restmq.frontends.http.routes import build_site


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def chromium_binary() -> str | None:
    """The headless browser to use, or None."""
    named = os.environ.get("RESTMQ_CHROMIUM")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = chromium_binary()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")


async def chromium(url: str, *extra: str, budget_ms: int = 3200) -> str:
    """Run headless Chromium on ``url`` with ``extra`` flags; answer its stdout (the DOM with --dump-dom)."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="restmq-chromium-") as profile:
        command = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}", *extra, url,
        ]  # fmt: skip
        done = await threads.deferToThread(subprocess.run, command, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode("utf-8", "replace")


class Site:
    """A RestMQ Site on a free loopback port, and a tiny treq client for it."""

    def __init__(self, dispatcher: Any) -> None:
        self.site = build_site(dispatcher, reactor=_reactor())
        self.port = _reactor().listenTCP(0, self.site, interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        response = await treq.request(method, self.base + path, persistent=False, **kwargs)
        return response.code, await response.content()

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        code, body = await self.call(method, path, **kwargs)
        assert code in (200, 201), (method, path, code, body)
        return json.loads(body)


@pytest_twisted.async_yield_fixture
async def site(dispatcher):
    """A Site with three queues: ``jobs`` (3 ready, 1 reserved), ``paused`` (paused), ``poison`` (1 dead)."""
    s = Site(dispatcher)
    for value in ("a", "b", "c", "d"):
        await s.json("POST", "/q/jobs", json={"value": value})
    await s.json("GET", "/q/jobs?lease=60")
    await s.json("POST", "/q/paused", json={"value": "x"})
    await s.json("POST", "/control/paused", data={"status": "stop"})
    await s.json("PUT", "/q/poison/config", json={"max_attempts": 1})
    await s.json("POST", "/q/poison", json={"value": "bad"})
    got = await s.json("GET", "/q/poison?lease=60")
    assert (await s.json("POST", "/q/poison/nack", data={"receipt": got["receipt"]}))["state"] == "dead"
    yield s
    await s.port.stopListening()


class Dom(HTMLParser):
    """The dashboard's queue rows from a DOM dump: ``rows[name][field]`` texts and ``buttons[name]`` attrs."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.buttons: dict[str, list[dict[str, str]]] = {}
        self.ids: dict[str, str] = {}
        self._queue: str | None = None
        self._field: str | None = None
        self._id: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-queue" in a:
            self._queue = a["data-queue"]
            self.rows[self._queue] = {}
            self.buttons[self._queue] = []
        elif tag == "td" and self._queue is not None and "data-field" in a:
            self._field = a["data-field"]
            self.rows[self._queue][self._field] = ""
        elif tag == "button" and self._queue is not None:
            self.buttons[self._queue].append(a)
        if "id" in a:
            self._id = a["id"]
            self.ids[self._id] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._queue = None
        if tag == "td":
            self._field = None
        if tag in ("div", "span", "p"):
            self._id = None

    def handle_data(self, data: str) -> None:
        if self._queue is not None and self._field is not None:
            self.rows[self._queue][self._field] += data
        if self._id is not None:
            self.ids[self._id] += data


def png_facts(path: str) -> tuple[int, int, int]:
    """Width, height and how many distinct pixels (as raw scanline bytes) a PNG has; stdlib only."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    # No need to undo the scanline filters: distinct filtered scanlines already tell a blank image apart.
    lines = {raw[i * stride : (i + 1) * stride] for i in range(height)}
    return width, height, len(lines)


# -- the page itself (no browser) ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_page_is_self_contained_and_lists_queues_without_javascript(site):
    """GET /dashboard is one HTML page with no external resource, no innerHTML, and first rows from the server."""
    code, body = await site.call("GET", "/dashboard")
    page = body.decode()
    assert code == 200
    assert "<script src" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert "http://" not in page and "https://" not in page  # nothing loaded from elsewhere
    assert "innerHTML" not in page and "outerHTML" not in page and "insertAdjacentHTML" not in page
    for name in ("jobs", "paused", "poison"):
        assert f'href="/j/{name}"' in page
    assert "<!--rows-->" not in page
    code, head = await site.call("HEAD", "/dashboard")
    assert code == 200 and head == b""


@pytest_twisted.ensureDeferred
async def test_actions_the_buttons_use_work_over_http(site):
    """The requests the buttons send (pause/resume, purge, redrive) do what they say through the routes."""
    assert (await site.json("POST", "/control/jobs", data={"status": "stop"}))["state"] == "paused"
    assert (await site.json("POST", "/control/paused", data={"status": "start"}))["state"] == "running"
    assert (await site.json("DELETE", "/q/jobs"))["purged"] >= 3
    assert (await site.json("POST", "/q/poison/redrive", data={})) == {"queue": "poison", "moved": 1}
    stats = await site.json("GET", "/stats")
    assert stats["queues"]["jobs"]["state"] == "paused" and stats["queues"]["paused"]["state"] == "running"
    assert (await site.json("GET", "/stats/poison"))["length"]["dead"] == 0


@pytest_twisted.ensureDeferred
async def test_page_is_served_when_stats_fails(site, dispatcher, monkeypatch):
    """When the stats command fails (here 401) the page still answers 200 without rows; its script shows why."""
    from restmq.errors import Unauthorized

    monkeypatch.setattr(dispatcher, "execute", lambda *args, **kw: defer.fail(Unauthorized("a token is needed")))
    code, body = await site.call("GET", "/dashboard")
    assert code == 200 and b"<!--rows-->" not in body and b'href="/j/' not in body


# -- in Chromium ---------------------------------------------------------------------------------


@needs_chromium
@pytest_twisted.ensureDeferred
async def test_chromium_renders_the_live_table(site, dispatcher, monkeypatch):
    """After the script ran, the table has every queue's counts, state, policy, rates and action buttons."""
    execute = dispatcher.execute

    async def adding_first(name: str, args: Any, *rest: Any, **options: Any) -> Any:
        if name == "stats" and args.get("queue") == "busy":  # each poll sees one more message added
            await execute("add", {"queue": "busy", "value": "tick"})
        return await execute(name, args, *rest, **options)

    await site.json("POST", "/q/busy", json={"value": "first"})
    monkeypatch.setattr(dispatcher, "execute", lambda *a, **k: defer.ensureDeferred(adding_first(*a, **k)))
    dom = Dom(await chromium(site.base + "/dashboard", "--dump-dom"))
    assert set(dom.rows) == {"busy", "jobs", "paused", "poison"}
    assert float(dom.rows["busy"]["added_rate"]) > 0 and float(dom.rows["busy"]["taken_rate"]) == 0
    assert int(dom.rows["busy"]["ready"]) >= 3  # at least two polls after the first message
    jobs, paused, poison = dom.rows["jobs"], dom.rows["paused"], dom.rows["poison"]
    assert (jobs["ready"], jobs["reserved"], jobs["delayed"], jobs["dead"]) == ("3", "1", "0", "0")
    assert (jobs["state"], jobs["policy"], jobs["subscribers"]) == ("running", "broadcast", "0")
    assert (paused["ready"], paused["state"]) == ("1", "paused")
    assert (poison["ready"], poison["dead"]) == ("0", "1")
    for row in dom.rows.values():  # a second poll happened: rates are numbers, not the "–" placeholder
        float(row["added_rate"]), float(row["taken_rate"])
    assert dom.ids["error"].strip() == ""
    assert dom.ids["sum-queues"] == "4" and dom.ids["sum-dead"] == "1"
    actions = {q: {b["data-action"]: b for b in bs} for q, bs in dom.buttons.items()}
    assert set(actions["jobs"]) == {"pause", "purge", "redrive"}
    assert (actions["jobs"]["pause"]["data-method"], actions["jobs"]["pause"]["data-path"]) == ("POST", "/control/jobs")
    assert actions["jobs"]["pause"]["data-status"] == "stop"
    assert actions["paused"]["resume"]["data-status"] == "start"
    assert (actions["jobs"]["purge"]["data-method"], actions["jobs"]["purge"]["data-path"]) == ("DELETE", "/q/jobs")
    assert actions["poison"]["redrive"]["data-path"] == "/q/poison/redrive" and "disabled" not in actions["poison"]["redrive"]
    assert "disabled" in actions["jobs"]["redrive"]  # nothing to redrive


@needs_chromium
@pytest_twisted.ensureDeferred
async def test_chromium_shows_server_errors(site):
    """A failing JSON route (here /stats answering 403) is shown in the page's error banner, not swallowed."""

    class Forbidden(Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            return b'{"error":"this token may not read stats","code":"forbidden"}\r\n'

    site.site.resource.putChild(b"stats", Forbidden())
    dom = Dom(await chromium(site.base + "/dashboard", "--dump-dom", budget_ms=1000))
    assert "403" in dom.ids["error"] and "forbidden: this token may not read stats" in dom.ids["error"]


@needs_chromium
@pytest_twisted.ensureDeferred
async def test_chromium_screenshot_renders(site):
    """A 1200x800 screenshot is written, is a real PNG over 5 KB, and is far from a single colour."""
    with tempfile.TemporaryDirectory(prefix="restmq-shot-") as folder:
        shot = os.path.join(folder, "shot.png")
        await chromium(site.base + "/dashboard", f"--screenshot={shot}", "--window-size=1200,800")
        assert os.path.getsize(shot) > 5000
        width, height, distinct = png_facts(shot)
        assert (width, height) == (1200, 800)
        assert distinct > 50, distinct
        if os.environ.get("RESTMQ_KEEP_SCREENSHOT"):
            shutil.copy(shot, os.environ["RESTMQ_KEEP_SCREENSHOT"])
