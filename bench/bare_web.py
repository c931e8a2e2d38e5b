"""The ceiling for the HTTP benchmark: a bare twisted.web server that answers ``ok``.

Why: RestMQ's HTTP front end is twisted.web plus routing, parsing, the dispatcher and a Redis round
trip. The same reactor and ``Site`` with nothing behind them tell how fast the machine can possibly go,
so RestMQ's figures can be read as a fraction of that ceiling rather than as absolute numbers.

Run it alone::

    python bench/bare_web.py            # port 0: prints {"event": "listening", "port": N, ...}
    python bench/bare_web.py --port 8080

One resource answers every path: ``GET`` and ``POST`` get ``200 ok`` with a Content-Length (the body of a
POST is read, as twisted.web always does, and ignored). The access log is off by default, since a
ceiling should be the cheapest thing twisted.web can do; ``--access-log`` turns it on (to stdout) for
comparison. SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class Ok(Resource):
    """A leaf answering ``ok`` to GET and POST, whatever the path."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"ok"

    render_POST = render_GET
    render_HEAD = render_GET


class QuietSite(Site):
    """A ``Site`` that skips the access log: per-request logging is not part of the ceiling."""

    def log(self, request: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bare twisted.web server answering 'ok' (bench ceiling)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: any free port)")
    parser.add_argument("--interface", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--access-log", action="store_true", help="write twisted.web's access log to stdout")
    args = parser.parse_args(argv)

    if args.access_log:
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
        site: Site = Site(Ok())
    else:
        site = QuietSite(Ok())
    port = reactor.listenTCP(args.port, site, interface=args.interface)  # type: ignore[attr-defined]
    host = port.getHost()
    print(
        json.dumps({"event": "listening", "frontend": "http", "host": host.host, "port": host.port}),
        flush=True,
    )
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
