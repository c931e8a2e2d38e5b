"""collectd ingestion (the original RestMQ's): ``POST /collectd/data`` and ``POST /collectd/event``.

A collectd agent (write_http, or an exec/unixsock script piping its PUTVAL / PUTNOTIF lines through
curl) posts a body to be queued on ``collectd_data`` (values) or ``collectd_event`` (notifications).
``?form=`` picks how (:mod:`restmq.wire.collectd` describes both):

- ``original`` (the default): ONE text message per POST, the original RestMQ's shape, which its
  consumers parse; answered like ``POST /q/<q>``: the key as text + CRLF (200), or JSON (201) when
  asked for with ``Accept`` or a ``callback``.
- ``records``: the body's records (a JSON object per value list or notification) in ONE
  ``add_many``, so a body is stored entirely or not at all; more than 1000 records is the command
  table's 400. The answer is add_many's ``{"queue", "keys"}`` (200).

A body that does not parse is a 400 naming the line, before anything runs. The caller needs the
``write`` right on the queue, checked by the dispatcher like any add.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from restmq.errors import BadRequest
from restmq.frontends.http.common import (
    NOT_FOUND,
    POST,
    Answer,
    Endpoint,
    Front,
    body_bytes,
    callback_of,
    query,
)
from restmq.frontends.http.rest import ADDED_JSON, ADDED_TEXT
from restmq.wire import collectd as wire
from restmq.wire import form

ANSWER = Answer()

Parser = Callable[[bytes, float], list[dict[str, Any]]]
Original = Callable[[bytes, float, bool], str]


class Collectd(Resource):
    """``/collectd``: only its two children answer; anything else is the JSON 404."""

    def __init__(self, front: Front) -> None:
        super().__init__()
        self.putChild(b"data", Ingest(front, wire.DATA_QUEUE, wire.parse_data, wire.original_data))
        self.putChild(b"event", Ingest(front, wire.EVENT_QUEUE, wire.parse_event, wire.original_event))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NOT_FOUND

    def render(self, request: Request) -> Any:
        return NOT_FOUND.render(request)


class Ingest(Endpoint):
    """``POST /collectd/<kind>``: the body as one message (``original``) or its records in one
    add_many (``?form=records``) on ``queue``."""

    methods = (POST,)

    def __init__(self, front: Front, queue: str, parse: Parser, original: Original) -> None:
        super().__init__(front)
        self.queue, self.parse, self.original = queue, parse, original

    def _now(self) -> float:
        """Now for ``N`` times: the reactor's clock when the front has one (tests), else the wall."""
        reactor = self.front.reactor
        return float(reactor.seconds()) if reactor is not None else time.time()

    def render_POST(self, request: Request) -> int:
        shape = form.command_args(query(request)).get("form", wire.FORMS[0])
        if shape not in wire.FORMS:
            raise BadRequest(f"form must be {' or '.join(wire.FORMS)}, not {shape[:40]!r}")
        if shape == "records":
            records = self.parse(body_bytes(request), self._now())
            args = {"queue": self.queue, "messages": [{"value": record} for record in records]}
            return self.front.run(request, "add_many", args, ANSWER)
        callback = callback_of(request)
        labelled_json = form.is_json(form.media_type(request.getHeader(b"content-type")))
        add = {"queue": self.queue, "value": self.original(body_bytes(request), self._now(), labelled_json)}
        if callback is not None or form.accepts_json(request.getHeader(b"accept")):
            return self.front.run(request, "add", add, ADDED_JSON, callback)
        return self.front.run(request, "add", add, ADDED_TEXT, callback)
