"""The HTTP front end's entry point: :func:`build_site` builds the resource tree and its Site.

The tree (``putChild`` at the root, ``getChild`` below; a trailing slash is optional everywhere)::

    /                 Root          POST add, GET ?queue= take, GET -> 302 /dashboard   (rest.py)
    /q, /q/<q>[/…]    Queues        list, take/add/purge, <n>, peek, ack, …               (rest.py)
    /queue            JsonProtocol  the JSON protocol; GET: a form to try it             (rest.py)
    /c/<q>            Comet         COMET stream                                          (stream.py)
    /stats, /control, /p, /health, /dashboard, /j                                        (admin.py)
    /sse/<q>, /ws/<q> SSE and WebSocket streams                                       (sse.py, ws.py)
    /metrics          Prometheus text                                                     (metrics.py)
    /openapi.json     the OpenAPI 3.1 description, generated from the tables              (openapi.py)
    /collectd/data, /collectd/event   collectd values and notifications -> queues   (collectd.py)
    /schedules[/<name>]               recurring schedules: list, set, get, delete  (schedules.py)
    /RPC2, /xmlrpc    XML-RPC       restmq.frontends.xmlrpc
    /static/<file>    Static        the example pages shipped in the package (COMET, streams)
    anything else     JSON 404

What the Site adds to twisted.web's:

- Request bodies are capped at :func:`restmq.wire.form.body_limit` (3 x ``max_message_size`` +
  64 KiB: room for a form's percent-encoding and add_many's framing; each value's own limit is
  checked by the dispatcher, also 413). Over the cap, by ``Content-Length`` or while a chunked body
  arrives, the rest of the body is read and dropped (never buffered) and the answer is a 413 JSON.
  Bodies are kept in memory (at most the cap), not in temp files.
- Form bodies are not parsed by twisted.web (its multipart errors are bare 400s and its
  Content-Type parsing is costly); routes decode bodies on demand with :mod:`restmq.wire.form`.
- Requests a browser sends for another site's page (``Sec-Fetch-Site``, ``Origin``; not allowed by
  ``--cors``) are a 403, and, without an auth file, a Host header that is not this server's is a
  421, both before any route runs (:mod:`restmq.frontends.http.origins`).
- A failure inside a resource is logged with its traceback and answered as a JSON 500; no HTML
  page, no traceback to the client. The access log is off (it costs more than a queue add).
"""

from __future__ import annotations

import io
from importlib import resources
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.server import NOT_DONE_YET
from twisted.web.resource import IResource, Resource

from restmq.errors import BadRequest, TooLarge
from restmq.frontends.http.channel import RestMQChannel
from restmq.wire.canned import canned
from restmq.frontends.http.admin import Control, Dashboard, Health, Jobs, Policies, Stats
from restmq.frontends.http.collectd import Collectd
from restmq.frontends.http.common import NOT_FOUND, Front, describe, send_error, send_internal, send_nothing
from restmq.frontends.http.metrics import Metrics
from restmq.frontends.http.openapi import OpenAPI
from restmq.frontends.http.origins import cors_allows, refusal
from restmq.frontends.http.rest import JsonProtocol, Queues, Root
from restmq.frontends.http.schedules import Schedules
from restmq.frontends.http.sse import ServerSentEvents
from restmq.frontends.http.stream import Comet
from restmq.frontends.http.ws import WebSockets

log = Logger()
from restmq.frontends.xmlrpc import build_xmlrpc
from restmq.ports import Dispatcher
from restmq.limits import Limits


CORS_METHODS = b"GET, POST, PUT, DELETE, HEAD"
CORS_HEADERS = b"authorization, content-type, accept, last-event-id"


class RestMQRequest(server.Request):
    """A twisted.web Request with a body cap, JSON failures and no form parsing of its own."""

    too_large = False
    _received = 0
    content: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parsePOSTFormSubmission = False  # bodies are decoded on demand by the routes

    def _limit(self) -> int:
        return getattr(getattr(self.channel, "site", None), "body_limit", 1 << 62)

    def gotLength(self, length: int | None) -> None:
        self.content = io.BytesIO()
        if length is not None and length > self._limit():
            self.too_large = True

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._received += len(data)
        if self._received > self._limit():
            self.too_large = True
            self.content = io.BytesIO()  # drop what was kept; the rest is not kept either
            return
        self.content.write(data)

    def process(self) -> None:
        site = getattr(self.channel, "site", None)
        refused = refusal(self, site.cors, site.allowed_hosts) if site is not None else None
        if refused is not None:
            log.info("HTTP {request} refused: {reason}", request=describe(self), reason=refused.message)
            self.site = site
            send_error(self, refused)
            return
        origin = self.getHeader(b"origin")
        if origin is not None and site is not None and cors_allows(site.cors, origin):
            self.setHeader(b"access-control-allow-origin", origin)
            if origin in site.cors:  # named origins may send credentials; "*" may not
                self.setHeader(b"access-control-allow-credentials", b"true")
            self.setHeader(b"vary", b"origin")
            if self.method == b"OPTIONS" and self.getHeader(b"access-control-request-method"):
                self.setHeader(b"access-control-allow-methods", CORS_METHODS)
                self.setHeader(b"access-control-allow-headers", CORS_HEADERS)
                self.setHeader(b"access-control-max-age", b"600")
                self.site = site
                send_nothing(self)
                return
        if self.too_large:
            self.site = site
            limit = self._limit()
            send_error(self, TooLarge(f"request body is over {limit} bytes", limit=limit))
            return
        super().process()

    def processingFailed(self, reason: Failure) -> Failure:
        send_internal(self, reason, "failed")
        return reason


#: Pages served under /static/: name -> content type. Read once at start; a browser example must
#: come from the server's own origin to read its streams.
STATIC = {b"comet.html": "text/html; charset=utf-8", b"streams.html": "text/html; charset=utf-8"}


class Static(Resource):
    """The packaged example pages; any other name is the JSON 404 (not twisted.web's HTML one)."""

    def __init__(self, files: dict[bytes, str]) -> None:
        super().__init__()
        folder = resources.files("restmq.frontends.http").joinpath("static")
        for name, content_type in files.items():
            self.putChild(name, _Page(folder.joinpath(name.decode()).read_bytes(), content_type))

    def getChild(self, path: bytes, request: Any) -> Resource:
        return NOT_FOUND


class _Page(Resource):
    """One fixed page (twisted.web.static would import its deprecated HTML error pages)."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__()
        self.body, self.content_type = body, content_type.encode()

    def render(self, request: Any) -> bytes | int:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            send_error(request, BadRequest("use GET for this page"), status=405)
            return NOT_DONE_YET
        request.setHeader(b"content-type", self.content_type)
        if request.method == b"HEAD":
            request.setHeader(b"content-length", b"%d" % len(self.body))
            return b""
        return self.body


class RestMQSite(server.Site):
    """The Site: RestMQ's requests and channel (header/body deadlines), quiet factory, no access
    log, no tracebacks. ``limits`` counts what the channel refuses (metrics show it)."""

    displayTracebacks = False
    noisy = False
    # Twisted types Site.protocol as its HTTP/1-or-2 wrapper; buildProtocol takes any channel class.
    protocol = RestMQChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        *,
        body_limit: int,
        header_timeout: float = 10.0,
        body_timeout: float = 60.0,
        idle_timeout: float = 300.0,
        limits: Limits | None = None,
        cors: tuple[str, ...] = (),
        check_host: bool = True,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        super().__init__(resource, requestFactory=RestMQRequest, timeout=idle_timeout or None)
        self.body_limit = body_limit
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.limits = limits
        #: Origins whose pages may read answers (``--cors``); none: CORS is off.
        self.cors = tuple(o.encode() for o in cors)
        #: Host names answered besides loopback and the listener's address (``--allowed-hosts``);
        #: None: any Host is (an auth file is in force). See :mod:`origins`.
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts) if check_host else None

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN over TLS: HTTP/1.1 only (streams and WebSocket upgrades are HTTP/1.1 things)."""
        return [b"http/1.1"]

    def refusal(self, message: str) -> bytes:
        """How a connection over a connection limit is answered (see :mod:`restmq.limits`)."""
        return canned(429, "Too Many Requests", "limit_exceeded", message)

    def log(self, request: http.Request) -> None:
        """No access log: a line per request would cost more than the queue add itself."""


def build_tree(front: Front) -> Root:
    """The resource tree over ``front`` (see the module docstring)."""
    root = Root(front)
    root.putChild(b"q", Queues(front))
    root.putChild(b"queue", JsonProtocol(front))
    root.putChild(b"c", Comet(front))
    root.putChild(b"stats", Stats(front))
    root.putChild(b"control", Control(front))
    root.putChild(b"p", Policies(front))
    root.putChild(b"health", Health(front))
    root.putChild(b"j", Jobs(front))
    root.putChild(b"dashboard", Dashboard(front))
    root.putChild(b"static", Static(STATIC))
    xmlrpc = build_xmlrpc(front.dispatcher)
    root.putChild(b"RPC2", xmlrpc)
    root.putChild(b"xmlrpc", xmlrpc)
    root.putChild(b"sse", ServerSentEvents(front))
    root.putChild(b"ws", WebSockets(front))
    root.putChild(b"metrics", Metrics(front))
    root.putChild(b"openapi.json", OpenAPI(front))
    root.putChild(b"collectd", Collectd(front))
    root.putChild(b"schedules", Schedules(front))  # recurring schedules (schedules.py)
    return root


def build_site(
    dispatcher: Dispatcher, *, max_message_size: int = 1 << 20, reactor: Any = None, **limits: Any
) -> server.Site:
    """The twisted.web Site serving every HTTP route of docs/http.md over ``dispatcher``; ``limits``:
    :class:`RestMQSite`'s timeouts and ``limits`` counter."""
    front = Front(dispatcher, max_message_size=max_message_size, reactor=reactor)
    return RestMQSite(build_tree(front), body_limit=front.body_limit, **limits)
