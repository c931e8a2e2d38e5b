"""The REST routes (docs/http.md, docs/compatibility.md): ``/``, ``/q``, ``/q/<queue>[/…]`` and ``/queue``.

Framing only: each route picks a command and its arguments and hands them to :meth:`Front.run`.
Query and form arguments are passed to the command as the raw strings they are (the command table
coerces and refuses), apart from the framing ones (``callback``, ``_``).

Decisions where the contract is silent:

- ``POST /q/<q>``: the answer is the plain-text key + CRLF (200) unless the client asked for JSON
  (``Accept`` naming JSON, a JSON body, or a JSONP ``callback``): then 201 and the JSON answer.
  A form or text body must hold a non-empty value; a JSON body must be an object, whose
  ``messages`` field makes it an ``add_many``. Query arguments (``?priority=1``) apply to every
  body kind; body fields win over them and the path's queue wins over both.
- ``GET /q/<q>?lease=S`` runs the ``reserve`` command with the query's arguments.
  ``/q/<q>/ack|nack|touch|redrive|config`` work the same way (``ack``/``nack``/``touch`` also take
  a plain-text body as the ``receipt``).
- Reads that find nothing answer 204 without a body: take and peek, with or without ``count``
  (an empty list included). ``GET /?queue=q`` keeps the original 404 with an error body.
- ``DELETE /q/<q>/<n>`` deletes that one message (the ``del`` command): the REST spelling of it.
- ``PUT|GET|DELETE /q/<q>/push`` run ``push_set``, ``push_get`` and ``push_rm`` (docs/push-and-schedules.md).
- HEAD is refused (405) where GET takes a message, so a link checker cannot consume the queue.
"""

from __future__ import annotations

from html import escape
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from restmq import compat
from restmq.frontends.http.common import (
    DELETE,
    GET,
    HTML,
    NOT_FOUND,
    POST,
    PUT,
    Answer,
    Endpoint,
    Front,
    KeyAnswer,
    args_with_body,
    body_bytes,
    callback_of,
    query,
    queue_name,
    send,
    send_nothing,
)
from restmq.wire import form
from restmq.wire.line import json_command

ANSWER = Answer()
ADDED_TEXT = KeyAnswer()
ADDED_JSON = Answer(201)
READ = Answer(empty=204)
RPC = Answer(rpc=True)


def add(front: Front, request: Request, queue: str | None) -> int:
    """Add from a form, JSON or text body (``POST /q/<q>`` and the original ``POST /``)."""
    callback = callback_of(request)
    args, body = args_with_body(request, "value")
    if body.kind == "json":
        name = "add_many" if "messages" in body.data else "add"
        compat.value_alias(args)
    else:
        name = "add"
        compat.form_value(args)
    if queue is not None:
        args["queue"] = queue
    if body.kind == "json" or callback is not None or form.accepts_json(request.getHeader(b"accept")):
        return front.run(request, name, args, ADDED_JSON, callback)
    return front.run(request, name, args, ADDED_TEXT, callback)


def take(front: Front, request: Request, queue: str | None, answer: Answer) -> int:
    """Take (or, with ``lease``, reserve) from ``queue`` (from the query when None); a ``wait`` is
    cancelled as soon as the client goes away."""
    callback = callback_of(request)
    args: dict[str, Any] = form.command_args(query(request))
    if queue is not None:
        args["queue"] = queue
    name = "reserve" if "lease" in args else "take"
    return front.run(request, name, args, answer, callback, cancel_on_gone="wait" in args)


class Root(Endpoint):
    """``/``: the original quick path. ``POST`` adds (``queue`` + ``value``/``msg``); ``GET
    ?queue=q`` takes one (404 when empty); ``GET /`` alone redirects to the dashboard."""

    methods = (GET, POST)
    head_ok = False

    def render_GET(self, request: Request) -> int:
        if b"queue" not in query(request):
            request.setHeader(b"location", b"/dashboard")
            send_nothing(request, 302)
            return NOT_DONE_YET
        return take(self.front, request, None, ANSWER)

    def render_POST(self, request: Request) -> int:
        return add(self.front, request, None)


class Queues(Endpoint):
    """``/q``: ``GET`` lists the queues; ``/q/<queue>`` is one queue."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self if not path else QueueEndpoint(self.front, queue_name(path))

    def render_GET(self, request: Request) -> int:
        args = form.command_args(query(request))
        return self.front.run(request, "list", args, ANSWER, callback_of(request))


class QueueEndpoint(Endpoint):
    """``/q/<queue>``: ``GET`` takes, ``POST`` adds, ``DELETE`` purges; children are its messages
    (``/q/<queue>/<n>``) and actions (``peek``, ``ack``, …)."""

    methods = (GET, POST, DELETE)
    head_ok = False

    def __init__(self, front: Front, queue: str) -> None:
        super().__init__(front)
        self.queue = queue

    def getChild(self, path: bytes, request: Request) -> Resource:
        if not path:
            return self
        if path.isdigit():
            return MessageEndpoint(self.front, self.queue, path.decode("ascii"))
        if path == b"push":
            return PushEndpoint(self.front, self.queue)
        action = ACTIONS.get(path)
        if action is None:
            return NOT_FOUND
        return Action(self.front, self.queue, *action)

    def render_GET(self, request: Request) -> int:
        return take(self.front, request, self.queue, READ)

    def render_POST(self, request: Request) -> int:
        return add(self.front, request, self.queue)

    def render_DELETE(self, request: Request) -> int:
        args: dict[str, Any] = form.command_args(query(request))
        args["queue"] = self.queue
        return self.front.run(request, "purge", args, ANSWER, callback_of(request))


class MessageEndpoint(Endpoint):
    """``/q/<queue>/<n>``: ``GET`` reads the message ``<queue>:<n>`` (404 once it is gone);
    ``DELETE`` deletes it."""

    methods = (GET, DELETE)

    def __init__(self, front: Front, queue: str, n: str) -> None:
        super().__init__(front)
        self.queue, self.key = queue, f"{queue}:{n}"

    def _run(self, request: Request, name: str) -> int:
        args: dict[str, Any] = form.command_args(query(request))
        args["queue"], args["key"] = self.queue, self.key
        return self.front.run(request, name, args, ANSWER, callback_of(request))

    def render_GET(self, request: Request) -> int:
        return self._run(request, "get")

    def render_DELETE(self, request: Request) -> int:
        return self._run(request, "del")


class PushEndpoint(Endpoint):
    """``/q/<queue>/push``: the queue's push subscription. ``PUT`` sets it (JSON or form body),
    ``GET`` shows it (secret redacted), ``DELETE`` removes it (docs/push-and-schedules.md)."""

    methods = (GET, PUT, DELETE)

    def __init__(self, front: Front, queue: str) -> None:
        super().__init__(front)
        self.queue = queue

    def _run(self, request: Request, name: str) -> int:
        callback = callback_of(request)
        if request.method == PUT:
            args, _ = args_with_body(request, None)
        else:
            args = form.command_args(query(request))
        args["queue"] = self.queue
        return self.front.run(request, name, args, ANSWER, callback)

    def render_GET(self, request: Request) -> int:
        return self._run(request, "push_get")

    def render_PUT(self, request: Request) -> int:
        return self._run(request, "push_set")

    def render_DELETE(self, request: Request) -> int:
        return self._run(request, "push_rm")


#: ``/q/<queue>/<action>`` -> (command, methods, the argument a plain-text body fills, answer).
ACTIONS: dict[bytes, tuple[str, tuple[bytes, ...], str | None, Answer]] = {
    b"peek": ("peek", (GET,), None, READ),
    b"ack": ("ack", (POST,), "receipt", ANSWER),
    b"nack": ("nack", (POST,), "receipt", ANSWER),
    b"touch": ("touch", (POST,), "receipt", ANSWER),
    b"redrive": ("redrive", (POST,), None, ANSWER),
    b"config": ("config", (GET, PUT), None, ANSWER),
}


class Action(Endpoint):
    """``/q/<queue>/<action>``: one command on the queue, arguments from the query and the body."""

    def __init__(
        self,
        front: Front,
        queue: str,
        command: str,
        methods: tuple[bytes, ...],
        text_field: str | None,
        answer: Answer,
    ) -> None:
        super().__init__(front)
        self.queue, self.command, self.methods = queue, command, methods
        self.text_field, self.answer = text_field, answer

    def _run(self, request: Request) -> int:
        callback = callback_of(request)
        if request.method == GET:
            args: dict[str, Any] = form.command_args(query(request))
        else:
            args, _ = args_with_body(request, self.text_field)
        args["queue"] = self.queue
        return self.front.run(request, self.command, args, self.answer, callback)

    render_GET = render_POST = render_PUT = _run


class JsonProtocol(Endpoint):
    """``/queue``: the JSON protocol. ``POST`` a command as a raw JSON body or in the form field
    ``body`` (or ``msg``); a command's failure is answered 200 with the error (RPC style, as the
    original), only an unreadable request is 400. ``GET`` is a small page to try commands."""

    methods = (GET, POST)

    def render_POST(self, request: Request) -> int:
        data = form.json_protocol_body(body_bytes(request), request.getHeader(b"content-type"))
        call = json_command(data)
        args = compat.json_command_args(call.name, call.args)
        return self.front.run(request, call.name, args, RPC, callback_of(request))

    def render_GET(self, request: Request) -> int:
        send(request, 200, COMMAND_PAGE, HTML)
        return NOT_DONE_YET


def _command_page() -> bytes:
    example = escape('{"cmd": "add", "queue": "test", "value": "hello"}')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>RestMQ: JSON commands</title>
<style>body{{font:15px system-ui,sans-serif;margin:2em;max-width:50em}}
textarea,pre{{width:100%;font:14px monospace}}pre{{background:#f4f4f4;padding:1em;min-height:3em}}</style>
</head><body>
<h1>RestMQ JSON protocol</h1>
<p>POST a command to <code>/queue</code>: <code>add</code> (queue, value), <code>take</code>,
<code>get</code> (peek, counting looks), <code>del</code> (queue, key), <code>len</code>,
<code>list</code>, <code>stats</code>, … Failures answer <code>{{"error", "code"}}</code>.</p>
<form id="f" method="post" action="/queue">
<textarea id="body" name="body" rows="6">{example}</textarea>
<p><button type="submit">Send</button> <a href="/dashboard">dashboard</a></p>
</form>
<pre id="out"></pre>
<script>
document.getElementById("f").addEventListener("submit", async function (e) {{
  e.preventDefault();
  const out = document.getElementById("out");
  try {{
    const r = await fetch("/queue", {{method: "POST", headers: {{"content-type": "application/json"}},
                                      body: document.getElementById("body").value}});
    out.textContent = r.status + "\\n" + await r.text();
  }} catch (err) {{ out.textContent = String(err); }}
}});
</script>
</body></html>
""".encode()


COMMAND_PAGE = _command_page()
