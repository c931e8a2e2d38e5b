"""Operator routes: ``/stats``, ``/control``, ``/p`` (policy), ``/health``, ``/dashboard``, ``/j/<q>``.

Each answers the original RestMQ's shape (docs/compatibility.md) with our fields beside it; the shapes live in
:mod:`restmq.compat`, the commands in the dispatcher, so this module is framing only.

Decisions where the contract is silent:

- ``POST /control/<q>`` and ``POST /p/<q>`` read ``status``/``policy`` from the form body, a JSON
  object body, or the query string. ``POST /p/<q>`` without ``policy`` is a 400, not a read.
- ``/p``, ``/c`` and ``/j`` without a queue are 404 (there is nothing to show for "no queue").
- ``/dashboard`` is the self-contained live page ``static/dashboard.html`` (no CDN, no web fonts): its
  script polls ``/stats`` and ``/stats/<q>`` every 1.5 s, computes rates in the browser and drives
  pause/resume/purge/redrive through the JSON routes. The server fills in the first rows from the
  ``stats`` command so the page shows the queues without JavaScript too; when that command fails
  (Redis down, a token needed) the page is served anyway and its script shows the error.
  ``/j/<q>`` shows ``len`` and the next 10 messages (``peek``).
"""

from __future__ import annotations

from html import escape
from importlib import resources
from typing import Any
from urllib.parse import quote

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from restmq import compat
from restmq.auth import Caller
from restmq.errors import Forbidden, NotFound, RestMQError, Unauthorized
from restmq.frontends.http.common import (
    GET,
    NOT_FOUND,
    POST,
    Answer,
    Endpoint,
    Front,
    HtmlAnswer,
    args_with_body,
    callback_of,
    query,
    queue_name,
    send_json,
)
from restmq.wire import form
from restmq.wire.chunked import dumps
from restmq.ports import TRUSTED

ANSWER = Answer()


def _query(request: Request, queue: str | None = None) -> dict[str, Any]:
    args: dict[str, Any] = form.command_args(query(request))
    if queue is not None:
        args["queue"] = queue
    return args


class _PerQueue(Endpoint):
    """A collection whose children are queues (``/stats/<q>``): ``child`` builds the per-queue one."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self if not path else self.child(queue_name(path))

    def child(self, queue: str) -> Resource:
        return NOT_FOUND


class _OneQueue(Endpoint):
    """A resource about one queue."""

    def __init__(self, front: Front, queue: str) -> None:
        super().__init__(front)
        self.queue = queue


# -- /stats -------------------------------------------------------------------------------------


class Stats(_PerQueue):
    """``/stats``: server statistics with every queue (original shape + ours); ``/stats/<q>``: one."""

    def child(self, queue: str) -> Resource:
        return StatsQueue(self.front, queue)

    def render_GET(self, request: Request) -> int:
        return self.front.run(request, "stats", _query(request), ANSWER, callback_of(request))


class StatsQueue(_OneQueue):
    def render_GET(self, request: Request) -> int:
        return self.front.run(request, "stats", _query(request, self.queue), ANSWER, callback_of(request))


# -- /control -----------------------------------------------------------------------------------

CONTROL = Answer(shape=compat.control_shape)
CONTROL_SET = Answer(shape=compat.control_set_shape)
CONTROL_ALL = Answer(shape=compat.control_all_shape)


class Control(_PerQueue):
    """``/control``: every queue's running/paused status; ``/control/<q>`` one queue's."""

    def child(self, queue: str) -> Resource:
        return ControlQueue(self.front, queue)

    def render_GET(self, request: Request) -> int:
        return self.front.run(request, "state", _query(request), CONTROL_ALL, callback_of(request))


class ControlQueue(_OneQueue):
    """``GET`` the queue's status; ``POST status=start|stop`` (or ``resume|pause``) changes it."""

    methods = (GET, POST)

    def render_GET(self, request: Request) -> int:
        return self.front.run(request, "state", _query(request, self.queue), CONTROL, callback_of(request))

    def render_POST(self, request: Request) -> int:
        callback = callback_of(request)
        args, _ = args_with_body(request)
        command = compat.control_command(args.pop("status", None))
        args["queue"] = self.queue
        return self.front.run(request, command, args, CONTROL_SET, callback)


# -- /p -----------------------------------------------------------------------------------------

POLICY = Answer(shape=compat.policy_shape)


class Policies(_PerQueue):
    """``/p/<q>``: a queue's stream policy."""

    def child(self, queue: str) -> Resource:
        return PolicyQueue(self.front, queue)

    def render_GET(self, request: Request) -> int:
        raise NotFound("name a queue: GET /p/<queue>")


class PolicyQueue(_OneQueue):
    """``GET`` the policy; ``POST policy=broadcast|roundrobin`` sets it."""

    methods = (GET, POST)

    def render_GET(self, request: Request) -> int:
        return self.front.run(request, "policy", _query(request, self.queue), POLICY, callback_of(request))

    def render_POST(self, request: Request) -> int:
        callback = callback_of(request)
        args, _ = args_with_body(request)
        args.setdefault("policy", "")  # a POST sets: no policy is an error, not a read
        args["queue"] = self.queue
        return self.front.run(request, "policy", args, POLICY, callback)


# -- /health ------------------------------------------------------------------------------------


class _HealthAnswer(Answer):
    """``/health``'s 503 also says ``"status": "unavailable"`` beside the error, as probes read it."""

    __slots__ = ()

    def failed(self, request: Request, error: RestMQError, callback: str | None) -> None:
        if error.code == "backend_unavailable":
            send_json(request, 503, {"status": "unavailable", **error.to_dict()}, callback)
        else:
            super().failed(request, error, callback)


HEALTH = _HealthAnswer()


class Health(Endpoint):
    """``/health``: 200 with Redis's facts when it answers, 503 ``backend_unavailable`` when not.

    A caller who sends no credentials and may not read (a load balancer's probe on a server with
    ``--auth-file``) still learns the status, without the facts: ``{"status": "ok"}`` or 503.
    Credentials that are refused are answered 401/403 as everywhere.
    """

    def render_GET(self, request: Request) -> int:
        caller = self.front.principal(request)
        dispatcher, args = self.front.dispatcher, _query(request)
        if caller.token is None and caller.basic is None and not self._may_read(caller):
            found = dispatcher.execute("health", args, TRUSTED, frontend="http")
            found.addCallback(lambda facts: {"status": facts["status"]})
        else:
            found = dispatcher.execute("health", args, caller, frontend="http")
        return self.front.respond(request, found, HEALTH, callback_of(request))

    def _may_read(self, caller: Caller) -> bool:
        authorize = self.front.dispatcher.authorize
        try:
            if authorize is not None:
                authorize(caller, "read", None)
        except (Unauthorized, Forbidden):
            return False
        return True


# -- pages --------------------------------------------------------------------------------------

_STYLE = (
    "body{font:15px system-ui,sans-serif;margin:2em;max-width:60em}"
    "table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}"
    "td.n{text-align:right}pre{white-space:pre-wrap;margin:0}"
)


def _page(title: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


#: Where the server puts the first rows in ``static/dashboard.html`` (the script replaces them).
DASHBOARD_ROWS = "<!--rows-->"


def dashboard_template() -> str:
    """The live page's HTML, as packaged beside this module."""
    folder = resources.files("restmq.frontends.http").joinpath("static")
    return folder.joinpath("dashboard.html").read_text("utf-8")


def render_dashboard_rows(stats: dict[str, Any] | None) -> str:
    """The first rows of ``/dashboard`` from the ``stats`` answer (none when it failed), escaped."""
    rows = []
    queues: dict[str, dict[str, Any]] = (stats or {}).get("queues", {})
    for name in sorted(queues):
        q = queues[name]
        link = escape("/j/" + quote(name, safe=""), quote=True)
        rows.append(
            f'<tr><td class="name"><a href="{link}">{escape(name)}</a></td>'
            f'<td class="n">{int(q.get("len", 0))}</td><td class="n">…</td><td class="n">…</td>'
            f'<td class="n">…</td><td><span class="pill {escape(str(q.get("state", "")), quote=True)}">'
            f"{escape(str(q.get('state', '')))}</span></td><td>{escape(str(q.get('policy_name', '')))}</td>"
            f'<td class="n">{int(q.get("subscribers", 0))}</td><td class="push">…</td><td class="n">–</td>'
            f'<td class="n">–</td>'
            "<td></td></tr>"
        )
    return "".join(rows)


def render_dashboard(template: str, stats: dict[str, Any] | None) -> str:
    """``/dashboard``: the live page with its first rows filled in."""
    return template.replace(DASHBOARD_ROWS, render_dashboard_rows(stats), 1)


def render_jobs(found: tuple[dict[str, Any], list[dict[str, Any]]]) -> str:
    """``/j/<q>``: the queue's length and its next messages, every value escaped."""
    length, messages = found
    queue = str(length.get("queue", ""))
    rows = "".join(
        f"<tr><td>{escape(str(m.get('key', '')))}</td><td class=\"n\">{int(m.get('priority', 0))}</td>"
        f"<td><pre>{escape(value_text(m.get('value')))}</pre></td></tr>"
        for m in messages
    )
    table = (
        f"<table><tr><th>key</th><th>priority</th><th>value</th></tr>{rows}</table>"
        if rows
        else "<p>No messages ready.</p>"
    )
    return _page(
        f"RestMQ: {queue}",
        f'<h1>{escape(queue)}</h1><p><a href="/dashboard">dashboard</a> &middot; len '
        f"{int(length.get('len', 0))} (ready {int(length.get('ready', 0))}, "
        f"reserved {int(length.get('reserved', 0))}, delayed {int(length.get('delayed', 0))}, "
        f"dead {int(length.get('dead', 0))})</p>{table}",
    )


def value_text(value: Any) -> str:
    """A message value for a page: text as is, anything else as its JSON."""
    if isinstance(value, str):
        return value
    return dumps(value).decode("utf-8", "replace")


JOBS = HtmlAnswer(render_jobs)


def _no_stats(failure: Failure) -> None:
    """The page is served even when ``stats`` fails; its script shows the server's error."""
    failure.trap(RestMQError)
    return None


class Dashboard(Endpoint):
    """``/dashboard``: the live queues page (see the module docstring)."""

    def __init__(self, front: Front) -> None:
        super().__init__(front)
        template = dashboard_template()
        self.page = HtmlAnswer(lambda stats: render_dashboard(template, stats))

    def render_GET(self, request: Request) -> int:
        request.setHeader(b"cache-control", b"no-store")
        found = self.front.dispatcher.execute("stats", {}, self.front.principal(request), frontend="http")
        return self.front.respond(request, found.addErrback(_no_stats), self.page)


class Jobs(_PerQueue):
    """``/j/<q>``: one queue's page."""

    def child(self, queue: str) -> Resource:
        return JobsQueue(self.front, queue)

    def render_GET(self, request: Request) -> int:
        raise NotFound("name a queue: GET /j/<queue>")


class JobsQueue(_OneQueue):
    def render_GET(self, request: Request) -> int:
        dispatcher, principal = self.front.dispatcher, self.front.principal(request)
        found = defer.gatherResults(
            [
                dispatcher.execute("len", {"queue": self.queue}, principal, frontend="http"),
                dispatcher.execute("peek", {"queue": self.queue, "count": 10}, principal, frontend="http"),
            ],
            consumeErrors=True,
        ).addCallbacks(tuple, lambda f: f.value.subFailure)
        return self.front.respond(request, found, JOBS)
