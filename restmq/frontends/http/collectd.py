"""collectd ingestion (ORIGINAL.md): ``POST /collectd/data`` and ``POST /collectd/event``.

A collectd agent (write_http, or an exec/unixsock script piping its PUTVAL / PUTNOTIF lines through
curl) posts a body; :mod:`restmq.wire.collectd` turns it into records and the whole body becomes
ONE ``add_many`` on ``collectd_data`` (values) or ``collectd_event`` (notifications), so a body is
stored entirely or not at all. Each message's value is one record (a JSON object). A body that does
not parse is a 400 naming the line, before anything runs; more than 1000 records is the
command table's 400. The caller needs the ``write`` right on the queue, checked by the dispatcher
like any add. The answer is add_many's ``{"queue", "keys"}`` (200), which write_http takes as
success.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from restmq.frontends.http.common import NOT_FOUND, POST, Answer, Endpoint, Front, body_bytes
from restmq.wire import collectd as wire

ANSWER = Answer()

Parser = Callable[[bytes, float], list[dict[str, Any]]]


class Collectd(Resource):
    """``/collectd``: only its two children answer; anything else is the JSON 404."""

    def __init__(self, front: Front) -> None:
        super().__init__()
        self.putChild(b"data", Ingest(front, wire.DATA_QUEUE, wire.parse_data))
        self.putChild(b"event", Ingest(front, wire.EVENT_QUEUE, wire.parse_event))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NOT_FOUND

    def render(self, request: Request) -> Any:
        return NOT_FOUND.render(request)


class Ingest(Endpoint):
    """``POST /collectd/<kind>``: parse the body, add every record to ``queue`` in one add_many."""

    methods = (POST,)

    def __init__(self, front: Front, queue: str, parse: Parser) -> None:
        super().__init__(front)
        self.queue, self.parse = queue, parse

    def _now(self) -> float:
        """Now for ``N`` times: the reactor's clock when the front has one (tests), else the wall."""
        reactor = self.front.reactor
        return float(reactor.seconds()) if reactor is not None else time.time()

    def render_POST(self, request: Request) -> int:
        records = self.parse(body_bytes(request), self._now())
        args = {"queue": self.queue, "messages": [{"value": record} for record in records]}
        return self.front.run(request, "add_many", args, ANSWER)
