"""Web pages from other sites cannot drive RestMQ (403), nor reach it by DNS rebinding (421).

The treq tests send the headers browsers send (``Sec-Fetch-Site``, ``Origin``, ``Host``); the
Chromium tests load a page from another origin that tries a form POST purge, a JSONP take, an XHR
pause and a WebSocket take, and the same page from RestMQ's own origin, where all four work.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.python import usage
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.server import Site as WebSite

from restmq.frontends.http.routes import build_site
from restmq.tap import parse
from tests.test_dashboard import chromium, needs_chromium
from tests.test_process import Server, http, serve_argv, servers  # noqa: F401  (the fixture)

PURGE = {"body": json.dumps({"cmd": "purge", "queue": "jobs"})}


class Served:
    """A RestMQ Site on a free loopback port with the given Site options, and treq calls to it."""

    def __init__(self, dispatcher: Any, **options: Any) -> None:
        self.site = build_site(dispatcher, reactor=reactor, **options)
        self.listening = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.port = self.listening.getHost().port
        self.base = f"http://127.0.0.1:{self.port}"

    async def call(self, method: str, path: str, headers: dict[str, str] | None = None,
                   **kwargs: Any) -> tuple[int, Any]:
        """(status, body as JSON when it is JSON, else bytes)."""
        answer = await treq.request(method, self.base + path, headers=headers or {}, persistent=False, **kwargs)
        body = await answer.content()
        kind = (answer.headers.getRawHeaders("content-type") or [""])[0]
        return answer.code, json.loads(body) if "json" in kind and body else body

    async def length(self, queue: str) -> int:
        """How many messages ``queue`` has ready (asked like curl: no browser headers)."""
        code, stats = await self.call("GET", f"/stats/{queue}")
        assert code == 200, stats
        return int(stats["length"]["ready"])


@pytest_twisted.async_yield_fixture
async def serve(dispatcher):
    """Starts Sites with options (``serve(cors=…)``); each has ``jobs`` with two messages; all stop after."""
    started: list[Served] = []

    async def start(**options: Any) -> Served:
        served = Served(dispatcher, **options)
        started.append(served)
        for value in ("a", "b"):
            assert (await served.call("POST", "/q/jobs", data={"value": value}))[0] == 200
        return served

    yield start
    for served in started:
        await served.listening.stopListening()


def refused(answer: tuple[int, Any], status: int = 403, code: str = "forbidden") -> bool:
    """Whether ``answer`` is the JSON refusal ``status``/``code`` with a message."""
    return answer[0] == status and answer[1]["code"] == code and bool(answer[1]["error"])


def took(answer: tuple[int, Any]) -> str:
    """The value a 200 take answered."""
    assert answer[0] == 200, answer
    return str(answer[1]["value"])


# -- cross-site requests -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sec_fetch_site_cross_site_is_refused_and_takes_nothing(serve):
    """Sec-Fetch-Site cross-site or same-site: GET take, JSONP take, form purge and a stream get 403 and the queue keeps its messages."""
    s = await serve()
    for site in ("cross-site", "same-site"):
        browser = {"sec-fetch-site": site}
        assert refused(await s.call("GET", "/q/jobs", browser))
        assert refused(await s.call("GET", "/q/jobs?callback=steal", browser))
        assert refused(await s.call("GET", "/?queue=jobs", browser))
        assert refused(await s.call("POST", "/queue", browser, data=PURGE))
        assert refused(await s.call("DELETE", "/q/jobs", browser))
        assert refused(await s.call("GET", "/c/jobs", browser))
        assert refused(await s.call("GET", "/sse/jobs?mode=take", browser))
    assert await s.length("jobs") == 2


@pytest_twisted.ensureDeferred
async def test_foreign_origin_is_refused(serve):
    """An Origin other than the server's own (another host, port or scheme, or null) is refused with 403 and nothing changes."""
    s = await serve()
    for origin in ("https://evil.example", f"http://127.0.0.1:{s.port + 1}", f"https://127.0.0.1:{s.port}", "null"):
        assert refused(await s.call("POST", "/queue", {"origin": origin}, data=PURGE)), origin
        assert refused(await s.call("POST", "/control/jobs", {"origin": origin}, data={"status": "stop"}))
    assert await s.length("jobs") == 2
    assert (await s.call("GET", "/stats/jobs"))[1]["state"] == "running"


@pytest_twisted.ensureDeferred
async def test_websocket_handshake_from_a_foreign_origin_is_refused(serve):
    """A WebSocket upgrade whose Origin is another site's gets 403 before any subscription: nothing is taken."""
    s = await serve()
    upgrade = {"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-version": "13",
               "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert refused(await s.call("GET", "/ws/jobs?mode=take", {**upgrade, "origin": "http://localhost:9"}))
    assert await s.length("jobs") == 2


@pytest_twisted.ensureDeferred
async def test_own_origin_works(serve):
    """A page of the server's own origin (by IP, by localhost, as the browser says same-origin) may take and purge."""
    s = await serve()
    own = {"origin": s.base, "sec-fetch-site": "same-origin"}
    code, body = await s.call("GET", "/q/jobs?callback=got", own)
    assert code == 200 and body.startswith(b"got(")
    local = {"origin": f"http://localhost:{s.port}", "host": f"localhost:{s.port}"}
    assert (await s.call("POST", "/control/jobs", local, data={"status": "stop"}))[1]["state"] == "paused"
    assert (await s.call("POST", "/queue", {"origin": s.base}, data=PURGE))[0] == 200
    assert await s.length("jobs") == 0


@pytest_twisted.ensureDeferred
async def test_origin_allowed_by_cors_works(serve):
    """An origin named by --cors may call (even marked cross-site); a cross-site request without Origin needs --cors *."""
    s = await serve(cors=("https://app.example.org",))
    app = {"origin": "https://app.example.org", "sec-fetch-site": "cross-site"}
    assert took(await s.call("GET", "/q/jobs", app)) == "a"
    assert refused(await s.call("GET", "/q/jobs?callback=steal", {"sec-fetch-site": "cross-site"}))
    assert refused(await s.call("GET", "/q/jobs", {"origin": "https://evil.example"}))
    anyone = await serve(cors=("*",))
    code, body = await anyone.call("GET", "/q/jobs?callback=got", {"sec-fetch-site": "cross-site"})
    assert code == 200 and body.startswith(b"got(")


@pytest_twisted.ensureDeferred
async def test_clients_without_browser_headers_work(serve):
    """curl and the client libraries send neither Sec-Fetch-Site nor Origin: they take and purge as before."""
    s = await serve()
    assert took(await s.call("GET", "/q/jobs")) == "a"
    assert (await s.call("POST", "/queue", data=PURGE))[0] == 200
    assert await s.length("jobs") == 0


# -- Host names (DNS rebinding) ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_foreign_host_is_refused_with_421(serve):
    """Without an auth file a Host that is not this server's (with or without a port) is a 421 JSON error and nothing is taken."""
    s = await serve()
    for host in ("evil.example", f"evil.example:{s.port}", "10.1.2.3", "localhost.evil.example", "[::2]"):
        assert refused(await s.call("GET", "/q/jobs", {"host": host}), 421, "misdirected"), host
    # The same-origin page of a rebound name passes the Origin check; the Host check stops it.
    rebound = {"host": f"evil.example:{s.port}", "origin": f"http://evil.example:{s.port}"}
    assert refused(await s.call("POST", "/queue", rebound, data=PURGE), 421, "misdirected")
    assert await s.length("jobs") == 2


@pytest_twisted.ensureDeferred
async def test_loopback_hosts_work(serve):
    """Host localhost, 127.0.0.1, 127.1.2.3 or [::1], with or without a port, is answered."""
    s = await serve()
    for host in (f"localhost:{s.port}", "localhost", "127.0.0.1", f"127.1.2.3:{s.port}", "[::1]:80", "LOCALHOST."):
        assert (await s.call("GET", "/health", {"host": host}))[0] == 200, host


@pytest_twisted.ensureDeferred
async def test_allowed_hosts_are_answered(serve):
    """--allowed-hosts queue.internal lets Host queue.internal (any port) through; other names stay 421."""
    s = await serve(allowed_hosts=("queue.internal",))
    assert took(await s.call("GET", "/q/jobs", {"host": f"queue.internal:{s.port}"})) == "a"
    assert took(await s.call("GET", "/q/jobs", {"host": "Queue.Internal"})) == "b"
    assert refused(await s.call("GET", "/q/jobs", {"host": "other.internal"}), 421, "misdirected")


@pytest_twisted.ensureDeferred
async def test_host_is_not_checked_with_an_auth_file(serve):
    """With an auth file (the Site's check_host off) any Host is answered; cross-site requests are still refused."""
    s = await serve(check_host=False)
    assert (await s.call("GET", "/health", {"host": "queue.example.org"}))[0] == 200
    assert refused(await s.call("GET", "/q/jobs", {"host": "queue.example.org", "sec-fetch-site": "cross-site"}))


def test_allowed_hosts_option():
    """--allowed-hosts takes a comma list of names or addresses, lower-cased; a port or a URL is a usage error."""
    assert parse(["--allowed-hosts", "Queue.Internal, mq.example.org., [::1]"]).allowed_hosts == (
        "queue.internal", "mq.example.org", "::1")
    assert parse([]).allowed_hosts == ()
    for bad in ("queue.internal:8888", "http://queue.internal", "a b"):
        with pytest.raises(usage.UsageError):
            parse(["--allowed-hosts", bad])


def test_serve_checks_host_unless_an_auth_file_is_given(tmp_path, servers, redis):
    """restmq serve refuses Host evil.example (421) but answers --allowed-hosts names; with --auth-file any Host is answered."""
    plain = Server(serve_argv(tmp_path / "a", "--redis", redis.url, "--allowed-hosts", "queue.internal"), cwd=tmp_path)
    tokens = tmp_path / "tokens"
    tokens.write_text("t0ken admin *\n")
    guarded = Server(serve_argv(tmp_path / "b", "--redis", redis.url, "--auth-file", str(tokens)), cwd=tmp_path)
    servers.extend([plain, guarded])
    for server in servers:
        server.wait_for("engine ready")
        if "http" not in server.addresses:
            server.wait_for("http listening")
    status, body = http("GET", plain.url("/health"), headers={"host": "evil.example"})
    assert status == 421 and json.loads(body)["code"] == "misdirected"
    assert http("GET", plain.url("/health"), headers={"host": "queue.internal"})[0] == 200
    assert http("GET", guarded.url("/stats"), headers={"host": "evil.example", "authorization": "Bearer t0ken"})[0] == 200
    for server in servers:
        assert server.stop() == 0


# -- in Chromium ---------------------------------------------------------------------------------

#: A page that tries four things against RestMQ at TARGET: a JSONP take (<script src>), a form POST
#: purge to /queue, an XHR pause as the original's $.post("/control/"+q) and a WebSocket take.
ATTACK = """<!doctype html><html><body>
<p id="jsonp">none</p><p id="ws">none</p>
<iframe name="sink"></iframe>
<form id="purge" method="POST" action="TARGET/queue" target="sink">
<input type="hidden" name="body" value='{"cmd":"purge","queue":"victim"}'></form>
<script>function steal(m) { document.getElementById("jsonp").textContent = JSON.stringify(m); }</script>
<script src="TARGET/q/loot?callback=steal"></script>
<script>
var xhr = new XMLHttpRequest();
xhr.open("POST", "TARGET/control/ctl");
xhr.setRequestHeader("content-type", "application/x-www-form-urlencoded");
xhr.send("status=stop");
var ws = new WebSocket("WS/ws/wsloot?mode=take");
ws.onmessage = function (e) { document.getElementById("ws").textContent = e.data; };
document.getElementById("purge").submit();
</script></body></html>"""


class Page(Resource):
    isLeaf = True

    def __init__(self, html: str) -> None:
        super().__init__()
        self.html = html.encode()

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self.html


class Elsewhere(Resource):
    """The other site's root: its page, and a plain 404 for anything else (the browser's favicon)."""

    def getChild(self, path: bytes, request: Any) -> Resource:
        return pages.notFound()


async def _victims(s: Served) -> None:
    for queue in ("victim", "loot", "wsloot", "ctl"):
        assert (await s.call("POST", f"/q/{queue}", data={"value": f"{queue}-1"}))[0] == 200


async def _state(s: Served) -> tuple[int, int, int, str]:
    """(victim, loot, wsloot ready counts, ctl's state), read like curl would."""
    ctl = (await s.call("GET", "/stats/ctl"))[1]["state"]
    return await s.length("victim"), await s.length("loot"), await s.length("wsloot"), ctl


async def attack_from_elsewhere(s: Served) -> str:
    """Serve ATTACK aimed at ``s`` from http://localhost:<another port> (another site) and load it."""
    page = ATTACK.replace("TARGET", s.base).replace("WS", f"ws://127.0.0.1:{s.port}")
    root = Elsewhere()
    root.putChild(b"evil.html", Page(page))
    other = reactor.listenTCP(0, WebSite(root), interface="127.0.0.1")
    try:
        return await chromium(f"http://localhost:{other.getHost().port}/evil.html", "--dump-dom")
    finally:
        await other.stopListening()


@needs_chromium
@pytest_twisted.ensureDeferred
async def test_chromium_page_from_another_site_changes_nothing(serve):
    """A page from another origin that posts a purge form, loads a JSONP take, XHRs a pause and opens a WebSocket take leaves every queue as it was."""
    s = await serve()
    await _victims(s)
    dom = await attack_from_elsewhere(s)
    assert '<p id="jsonp">none</p>' in dom and '<p id="ws">none</p>' in dom
    assert await _state(s) == (1, 1, 1, "running")


@needs_chromium
@pytest_twisted.ensureDeferred
async def test_chromium_same_page_works_when_cors_allows_every_origin(serve):
    """The control: with --cors * the same cross-site page does purge, take and pause (so the refusal above is RestMQ's)."""
    s = await serve(cors=("*",))
    await _victims(s)
    dom = await attack_from_elsewhere(s)
    assert "loot-1" in dom and "wsloot-1" in dom
    assert await _state(s) == (0, 0, 0, "paused")


@needs_chromium
@pytest_twisted.ensureDeferred
async def test_chromium_same_requests_from_the_servers_own_origin_work(serve):
    """Served from RestMQ's own origin (like /dashboard), the form purge, JSONP take, XHR pause and WebSocket take all work."""
    s = await serve()
    await _victims(s)
    s.site.resource.putChild(b"mine.html", Page(ATTACK.replace("TARGET", "").replace("WS", f"ws://127.0.0.1:{s.port}")))
    dom = await chromium(s.base + "/mine.html", "--dump-dom")
    assert "loot-1" in dom and "wsloot-1" in dom
    assert await _state(s) == (0, 0, 0, "paused")
