"""The ceilings for the HTTP benchmark: a bare twisted.web server that answers ``ok``, and (with
``--redis-port``) a bare twisted.web resource doing one txredisapi call per request.

Why: RestMQ's HTTP front end is twisted.web plus routing, parsing, the dispatcher and a Redis round
trip. The same reactor and ``Site`` with nothing behind them tell how fast the machine can possibly go,
so RestMQ's figures can be read as a fraction of that ceiling rather than as absolute numbers. The
second ceiling is the honest one for a Redis-backed request in this stack: ``GET /redis/<key>`` answers
one ``RPOP`` and ``POST /redis/<key>`` one ``LPUSH`` of the body, through a txredisapi pool used the
way its documentation shows (``lazyConnectionPool``, ten connections, ``redis.rpop(key)``), with no
queue semantics at all; its POST bodies are not parsed as forms (RestMQ does not parse them either).

Run it alone::

    python bench/bare_web.py            # port 0: prints {"event": "listening", "port": N, ...}
    python bench/bare_web.py --port 8080

Without ``--redis-port`` one resource answers every path: ``GET`` and ``POST`` get ``200 ok`` with a Content-Length (the body of a
POST is read, as twisted.web always does, and ignored). The access log is off by default, since a
ceiling should be the cheapest thing twisted.web can do; ``--access-log`` turns it on (to stdout) for
comparison. With ``--redis-port`` the paths under ``/redis/`` are the Redis handler. SIGTERM/SIGINT
stop it cleanly.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from typing import Any

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site


class Ok(Resource):
    """A leaf answering ``ok`` to GET and POST, whatever the path."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"ok"

    render_POST = render_GET
    render_HEAD = render_GET


class RedisHandler(Resource):
    """``/redis/<key>``: ``GET`` answers one ``RPOP`` (the value, or an empty body), ``POST`` one
    ``LPUSH`` of the body (the list length): one txredisapi call per request, nothing else."""

    isLeaf = True

    def __init__(self, redis: Any) -> None:
        super().__init__()
        self.redis = redis

    def render_GET(self, request: Request) -> int:
        key = request.postpath[0] if request.postpath else b"bare"
        self.redis.rpop(key).addCallbacks(self._answer, self._failed, (request,), None, (request,), None)
        return NOT_DONE_YET

    def render_POST(self, request: Request) -> int:
        key = request.postpath[0] if request.postpath else b"bare"
        body = request.content.read()
        self.redis.lpush(key, body).addCallbacks(self._answer, self._failed, (request,), None, (request,), None)
        return NOT_DONE_YET

    @staticmethod
    def _answer(value: Any, request: Request) -> None:
        if request.channel is None:  # the client left (the load generator's last requests)
            return
        body = b"" if value is None else (value if isinstance(value, bytes) else str(value).encode())
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

    @staticmethod
    def _failed(failure: Any, request: Request) -> None:
        if request.channel is None:
            return
        request.setResponseCode(503)
        request.setHeader(b"content-length", b"0")
        request.finish()


class WithRedis(Resource):
    """``/redis/…`` is the Redis handler; any other path answers ``ok`` as without Redis."""

    def __init__(self, handler: RedisHandler) -> None:
        super().__init__()
        self.putChild(b"redis", handler)
        self.ok = Ok()

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self.ok

    def render(self, request: Request) -> bytes:
        return self.ok.render(request)


class BareRequest(Request):
    """twisted.web's Request; the Redis handler's bodies are read raw, not parsed as forms, as
    RestMQ reads its own (twisted.web's form parsing is about half of a bare POST's cost, see
    bench/README.md): the add ceiling does the same work as RestMQ, minus RestMQ."""

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self._parsePOSTFormSubmission = not path.startswith(b"/redis/")
        super().requestReceived(command, path, version)


class QuietSite(Site):
    """A ``Site`` that skips the access log: per-request logging is not part of the ceiling."""

    def log(self, request: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bare twisted.web server answering 'ok' (bench ceiling)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: any free port)")
    parser.add_argument("--interface", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--redis-port", type=int, default=0,
                        help="serve /redis/<key> (one RPOP or LPUSH per request) on the Redis at this port")
    parser.add_argument("--access-log", action="store_true", help="write twisted.web's access log to stdout")
    args = parser.parse_args(argv)

    root: Resource = Ok()
    if args.redis_port:
        import txredisapi

        root = WithRedis(RedisHandler(txredisapi.lazyConnectionPool("127.0.0.1", args.redis_port, poolsize=10)))
    if args.access_log:
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
        site: Site = Site(root, requestFactory=BareRequest)
    else:
        site = QuietSite(root, requestFactory=BareRequest)
    port = reactor.listenTCP(args.port, site, interface=args.interface)  # type: ignore[attr-defined]
    host = port.getHost()
    print(
        json.dumps({"event": "listening", "frontend": "http", "host": host.host, "port": host.port}),
        flush=True,
    )
    # As restmq.service does once it has started: the ceiling gets the same process-level help.
    gc.collect()
    gc.freeze()
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
