"""``GET /openapi.json``: an OpenAPI 3.1 description of every HTTP route, generated, not hand-written.

Arguments come from the command table (:data:`restmq.commands.COMMANDS`): names, kinds as JSON
Schema types, bounds as ``minimum``/``maximum``, choices as ``enum``, required, defaults and docs.
:data:`ROUTES` below only says, per route, which command runs, which arguments the path fills and
where the rest come from (query string, or a form / JSON / text body) and how the answer is framed.
Errors share one ``Error`` schema whose ``code`` is an enum of :data:`restmq.errors.ERRORS`.
``POST /queue`` takes a ``oneOf`` of one body per command (``{"cmd": const, …args}``).

JSONP (``?callback=``) and the original's aliases (``msg`` for ``value``) work everywhere they did
but are only mentioned in the description, not in each operation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.web.server import NOT_DONE_YET, Request

import restmq
from restmq import commands
from restmq.commands import COMMANDS, Arg
from restmq.errors import ERRORS
from restmq.frontends.http.common import GET, STATUS, Endpoint, Front, send

JSON_MT = "application/json"
FORM_MT = "application/x-www-form-urlencoded"
TEXT_MT = "text/plain"
HTML_MT = "text/html"
XML_MT = "text/xml"

# JSON Schema regexes are ECMA-262 and count UTF-16 units: the characters a name may not hold, its
# length by minLength/maxLength (which count characters).
QUEUE_PATTERN = f"^[^{commands.NOT_IN_QUEUE_NAME}]+$"


# -- arguments -> JSON Schema -------------------------------------------------------------------


def _bounded(schema: dict[str, Any], arg: Arg) -> dict[str, Any]:
    if arg.low is not None:
        schema["minimum"] = int(arg.low) if schema.get("type") == "integer" else arg.low
    if arg.high is not None:
        schema["maximum"] = int(arg.high) if schema.get("type") == "integer" else arg.high
    return schema


def _text(arg: Arg) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if arg.high is not None:
        schema["maxLength"] = int(arg.high)
    return schema


def message_item_schema() -> dict[str, Any]:
    """One ``add_many`` item: a bare value or ``{value, priority, ttl, delay, dedup, unique}``."""
    fields = {a.name: arg_schema(a) for a in commands.MESSAGE_FIELDS}
    return {
        "anyOf": [
            {"type": "object", "properties": fields, "required": ["value"], "additionalProperties": False},
            {"not": {"type": "object"}},
        ],
    }


def arg_schema(arg: Arg, *, wire: str = "json") -> dict[str, Any]:
    """The JSON Schema of one argument. ``wire`` is ``json`` (a JSON body) or ``text`` (a query
    string or form field, where every value travels as text)."""
    kind = arg.kind
    schema: dict[str, Any]
    if kind == "queue":
        schema = {"type": "string", "pattern": QUEUE_PATTERN, "minLength": 1, "maxLength": 128}
    elif kind == "int":
        schema = _bounded({"type": "integer"}, arg)
    elif kind == "seconds":
        schema = _bounded({"type": "number"}, arg)
    elif kind == "value":
        schema = {"type": "string", "minLength": 1} if wire == "text" else {}
    elif kind == "messages":
        schema = {"type": "array", "minItems": 1, "maxItems": commands.MAX_COUNT, "items": message_item_schema()}
    elif kind == "key":
        schema = {"type": "string", "minLength": 1}
        if wire == "json":
            schema = {"anyOf": [schema, {"type": "integer", "minimum": 0}]}
    elif kind == "choice":
        schema = {"type": "string", "enum": list(arg.choices)}
    elif kind == "bool":
        words = {"type": "string", "enum": [*commands.TRUE_WORDS, *commands.FALSE_WORDS]}
        schema = words if wire == "text" else {"anyOf": [{"type": "boolean"}, words]}
    elif kind == "text":
        schema = _text(arg)
    elif kind == "receipts":
        one = _text(commands.RECEIPT)
        schema = one if wire == "text" else {
            "anyOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": commands.MAX_COUNT}],
        }
    elif kind == "name":  # a schedule's name (restmq.recurrence.NAME)
        schema = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]*$", "minLength": 1, "maxLength": 128}
    elif kind == "queues":
        one = {"type": "string", "pattern": QUEUE_PATTERN, "minLength": 1, "maxLength": 128}
        schema = {"type": "array", "items": one, "minItems": 1, "maxItems": commands.MAX_QUEUES}
    elif kind == "url":
        schema = {**_text(arg), "format": "uri", "pattern": "^https?://"}
    elif kind == "backoff":
        step = {"type": "number", "exclusiveMinimum": 0, "maximum": commands.DAY}
        many = {"type": "array", "items": step, "minItems": 1, "maxItems": commands.MAX_BACKOFF_STEPS}
        schema = {"type": "string", "minLength": 1, "description": "seconds, comma-separated"} if wire == "text" else many
    else:  # pragma: no cover - a new kind must be described here
        raise ValueError(f"no schema for argument kind {kind!r}")
    if arg.doc:
        schema["description"] = f"{arg.doc}; {commands.QUEUE_RULE}" if kind == "queue" else arg.doc
    if arg.default is not None:
        schema["default"] = list(arg.default) if isinstance(arg.default, tuple) else arg.default
    return schema


def args_object(args: tuple[Arg, ...] | list[Arg], *, wire: str = "json") -> dict[str, Any]:
    """An object schema of ``args`` (unknown fields are refused by the dispatcher, so here too)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {a.name: arg_schema(a, wire=wire) for a in args},
        "additionalProperties": False,
    }
    required = [a.name for a in args if a.required]
    if required:
        schema["required"] = required
    return schema


def command_body(name: str) -> dict[str, Any]:
    """``POST /queue``'s body for command ``name``: ``{"cmd": name, …its arguments}``."""
    command = COMMANDS[name]
    schema = args_object(command.args)
    schema["properties"] = {"cmd": {"const": name}, **schema["properties"]}
    schema["required"] = ["cmd", *schema.get("required", [])]
    schema["title"] = name
    schema["description"] = command.doc
    return schema


# -- answers ------------------------------------------------------------------------------------

MESSAGE = {"$ref": "#/components/schemas/Message"}
MESSAGES = {"anyOf": [MESSAGE, {"type": "array", "items": MESSAGE}]}


def _obj(*required: str, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


STRING, INTEGER, NUMBER = {"type": "string"}, {"type": "integer"}, {"type": "number"}

#: Each command's JSON answer (docs/commands.md), loosely: the fields every answer has.
RESULTS: dict[str, dict[str, Any]] = {
    "add": _obj("queue", "key", "value", queue=STRING, key=STRING,
                duplicate={"type": "boolean", "description": "only when nothing was added (dedup or unique)"},
                len={**INTEGER, "description": "ready length after the add; only when asked (len)"}),
    "add_many": _obj("queue", "keys", queue=STRING, keys={"type": "array", "items": STRING},
                     duplicates={"type": "array", "items": INTEGER,
                                 "description": "indexes of the items that added nothing; only when some did"},
                     len={**INTEGER, "description": "ready length after the add; only when asked (len)"}),
    "find": _obj("queue", "key", queue=STRING, key={"type": ["string", "null"]}),
    "take": MESSAGES,
    "reserve": MESSAGES,
    "peek": MESSAGES,
    "get": MESSAGE,
    "ack": _obj("queue", "acked", queue=STRING, acked=INTEGER,
                next={"anyOf": [MESSAGE, {"type": "null"}],
                      "description": "the next message reserved; only when asked (next)"}),
    "nack": _obj("queue", "nacked", queue=STRING, nacked=INTEGER),
    "touch": _obj("queue", "lease_until", queue=STRING, lease_until=NUMBER),
    "config": _obj("queue", queue=STRING),
    "redrive": _obj("queue", "moved", queue=STRING, moved=INTEGER),
    "del": _obj("queue", "deleted", "key", queue=STRING, key={"type": ["string", "null"]},
                deleted={"description": "by key: true/false; by value: how many were removed (0 or 1)"}),
    "purge": _obj("queue", "purged", queue=STRING, purged=INTEGER),
    "len": _obj("queue", "len", "ready", "reserved", "delayed", "dead", queue=STRING, len=INTEGER),
    "list": _obj("queues", "count", queues={"type": "object"}, count=INTEGER),
    "stats": {"type": "object"},
    "state": {"type": "object"},
    "pause": _obj("queue", "state", queue=STRING, state=STRING),
    "resume": _obj("queue", "state", queue=STRING, state=STRING),
    "policy": _obj("queue", "policy", queue=STRING, policy={"type": "string", "enum": list(commands.POLICIES)}),
    "health": _obj("status", status=STRING),
    "push_set": _obj("queue", "url", queue=STRING, url=STRING, secret={"type": ["string", "null"]}),
    "push_get": _obj("queue", "url", queue=STRING, url=STRING, secret={"type": ["string", "null"]}),
    "push_rm": _obj("queue", "removed", queue=STRING, removed={"type": "boolean"}),
}


# -- the routes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One HTTP operation.

    ``command``: what runs (None: no command, e.g. a page). ``path_args``: arguments the path
    fills (left out of the query/body). ``source``: where the others come from: ``query``,
    ``body`` (form, JSON object, and a text body filling ``text_field``), ``collectd`` (text
    ``text_field`` lines or a JSON array) or ``none``. ``extra``:
    arguments beyond the command's own (``?lease=`` turns a take into a reserve). ``answer``:
    ``json``, ``json_or_204``, ``json_or_redirect``, ``key`` (text key, or 201 JSON when JSON is
    asked for), ``collectd`` (a text key, or add_many's JSON with ``?form=records``), ``rpc``,
    ``html``, ``stream`` (COMET), ``sse``, ``ws``, ``xml``, ``text`` or ``json_doc``.
    """

    method: str
    path: str
    command: str | None
    summary: str
    source: str = "query"
    path_args: tuple[str, ...] = ()
    text_field: str | None = None
    extra: tuple[Arg, ...] = ()
    answer: str = "json"
    result: dict[str, Any] | None = None
    omit: tuple[str, ...] = ()
    tag: str = "queues"

    @property
    def args(self) -> list[Arg]:
        own = COMMANDS[self.command].args if self.command else ()
        skip = set(self.path_args) | set(self.omit)
        return [a for a in own if a.name not in skip] + list(self.extra)


Q = ("queue",)
LEASE_TO_RESERVE = Arg("lease", "seconds", low=commands.LEASE.low, high=commands.LEASE.high,
                       doc="reserve instead of take: the message stays hidden this long, then comes back")
CONTROL_STATUS = Arg("status", "choice", required=True, choices=("start", "stop", "resume", "pause"),
                     doc="start/resume delivering, or stop/pause it")
POLICY_SET = Arg("policy", "choice", required=True, choices=commands.POLICIES, doc="the new policy")
STREAM_MODE = Arg("mode", "choice", default="take", choices=("take",), doc="how messages are delivered")
PUSH_MODE = Arg("mode", "choice", default="take", choices=("take", "reserve"),
                doc="take (at-most-once) or reserve (each message carries a receipt to ack)")
PUSH_LEASE = Arg("lease", "seconds", low=commands.LEASE.low, high=commands.LEASE.high,
                 doc="reserve mode: seconds each message stays hidden before it comes back")
STATE_SHAPE = {"type": "object"}
COLLECTD_FORM = Arg("form", "choice", default="original", choices=("original", "records"),
                    doc="original: one text message per POST (the original RestMQ's); records: one JSON "
                        "record per value list or notification")

#: Every route of the "Routes" table in docs/http.md.
ROUTES: tuple[Route, ...] = (
    Route("post", "/q/{queue}", "add", "Add a message (form, JSON object or text body); JSON "
          "{\"messages\": [...]} adds many", source="body", path_args=Q, text_field="value", answer="key"),
    Route("get", "/q/{queue}", "take", "Take the next message; ?lease= reserves it instead; 204 when empty",
          path_args=Q, extra=(LEASE_TO_RESERVE,), answer="json_or_204"),
    Route("delete", "/q/{queue}", "purge", "Purge the queue", path_args=Q),
    Route("get", "/q", "list", "List the queues with their lengths"),
    Route("post", "/q/{queue}/ack", "ack", "Acknowledge reserved messages (receipt also as ?receipt=)",
          source="body", path_args=Q, text_field="receipt"),
    Route("post", "/q/{queue}/nack", "nack", "Give a reserved message back", source="body", path_args=Q,
          text_field="receipt"),
    Route("post", "/q/{queue}/touch", "touch", "Extend a reservation's lease", source="body", path_args=Q,
          text_field="receipt"),
    Route("get", "/q/{queue}/peek", "peek", "Look at messages without taking them; 204 when none",
          path_args=Q, answer="json_or_204"),
    Route("get", "/q/{queue}/{n}", "get", "The message whose key is <queue>:<n>", path_args=("queue", "key")),
    Route("delete", "/q/{queue}/{n}", "del", "Delete the message whose key is <queue>:<n>",
          path_args=("queue", "key")),
    Route("get", "/q/{queue}/config", "config", "The queue's settings (sets those given)", path_args=Q),
    Route("put", "/q/{queue}/config", "config", "Change the queue's settings", source="body", path_args=Q),
    Route("put", "/q/{queue}/push", "push_set", "Set the queue's push subscription (needs --push-allow)",
          source="body", path_args=Q),
    Route("get", "/q/{queue}/push", "push_get", "The queue's push subscription (secret redacted) and its state",
          path_args=Q),
    Route("delete", "/q/{queue}/push", "push_rm", "Remove the queue's push subscription", path_args=Q),
    Route("post", "/q/{queue}/redrive", "redrive", "Move dead letters back to the queue", source="body",
          path_args=Q),
    Route("post", "/queue", None, "The JSON protocol: {\"cmd\": …, …}; a command's failure is 200 with "
          "the error (RPC style), only an unreadable request is 400", source="rpc", answer="rpc",
          tag="protocol"),
    Route("get", "/queue", None, "A page to try JSON commands", source="none", answer="html", tag="protocol"),
    Route("post", "/", "add", "The original quick add: form queue= and value= (or msg=)", source="form",
          answer="key", tag="original"),
    Route("get", "/", "take", "With ?queue=: take one (404 when empty); without: redirect to /dashboard",
          omit=(), answer="json_or_redirect", tag="original"),
    Route("get", "/c/{queue}", None, "COMET: a long-lived chunked stream, one JSON message per line",
          path_args=Q, extra=(STREAM_MODE,), answer="stream", tag="streams"),
    Route("get", "/sse/{queue}", None, "Server-Sent Events: one event per message (id: its key)",
          path_args=Q, extra=(PUSH_MODE, PUSH_LEASE), answer="sse", tag="streams"),
    Route("get", "/ws/{queue}", None, "WebSocket: one JSON message per frame; the client may send "
          "{\"cmd\": \"ack\", …} frames", path_args=Q, extra=(PUSH_MODE, PUSH_LEASE), answer="ws",
          tag="streams"),
    Route("get", "/stats", "stats", "Server statistics with every queue", omit=Q, tag="admin"),
    Route("get", "/stats/{queue}", "stats", "One queue's statistics and counters", path_args=Q, tag="admin"),
    Route("get", "/control", "state", "Every queue's running/paused status", omit=Q, result=STATE_SHAPE,
          tag="admin"),
    Route("get", "/control/{queue}", "state", "The queue's running/paused status", path_args=Q,
          result=STATE_SHAPE, tag="admin"),
    Route("post", "/control/{queue}", "pause", "Pause or resume delivery (status=stop|start|pause|resume)",
          source="body", path_args=Q, extra=(CONTROL_STATUS,), result=STATE_SHAPE, tag="admin"),
    Route("get", "/p/{queue}", "policy", "The queue's stream policy", path_args=Q, omit=("policy",),
          tag="admin"),
    Route("post", "/p/{queue}", "policy", "Set the queue's stream policy", source="body", path_args=Q,
          omit=("policy",), extra=(POLICY_SET,), tag="admin"),
    Route("get", "/health", "health", "200 when Redis answers (with its version and persistence), 503 "
          "when not", tag="admin"),
    Route("get", "/dashboard", None, "The queues page", source="none", answer="html", tag="pages"),
    Route("get", "/j/{queue}", None, "One queue's page: its length and next messages", path_args=Q,
          source="none", answer="html", tag="pages"),
    Route("get", "/static/comet.html", None, "The browser COMET example", source="none", answer="html",
          tag="pages"),
    Route("post", "/RPC2", None, "XML-RPC: every command as a method", source="xml", answer="xml", tag="xmlrpc"),
    Route("post", "/xmlrpc", None, "XML-RPC (same as /RPC2)", source="xml", answer="xml", tag="xmlrpc"),
    Route("get", "/metrics", None, "Prometheus metrics", source="none", answer="text", tag="admin"),
    Route("get", "/openapi.json", None, "This document", source="none", answer="json_doc", tag="admin"),
    Route("post", "/collectd/data", "add", "collectd values (PUTVAL lines, or JSON) -> queue collectd_data: "
          "one text message per POST as the original (a JSON body verbatim), or with ?form=records one "
          "message per value list (add_many)", source="collectd", text_field="PUTVAL",
          extra=(COLLECTD_FORM,), answer="collectd", tag="collectd"),
    Route("post", "/collectd/event", "add", "collectd notifications (NotificationExec text, or JSON; "
          "PUTNOTIF lines with ?form=records) -> queue collectd_event: one text message per POST as the "
          "original, or with ?form=records one message per notification (add_many)", source="collectd",
          text_field="NotificationExec", extra=(COLLECTD_FORM,), answer="collectd", tag="collectd"),
    # -- recurring schedules (schedules.py) --
    Route("get", "/schedules", "schedule_ls", "The schedules of readable queues, with next and last fire",
          tag="schedules"),
    Route("put", "/schedules/{name}", "schedule_set", "Create or replace a schedule: JSON {queue, value, "
          "cron or every, tz}", source="body", path_args=("name",), tag="schedules"),
    Route("get", "/schedules/{name}", "schedule_get", "One schedule, with next and last fire",
          path_args=("name",), tag="schedules"),
    Route("delete", "/schedules/{name}", "schedule_rm", "Delete a schedule", path_args=("name",),
          tag="schedules"),
)


# -- building the document ----------------------------------------------------------------------

ERROR_REF = {"$ref": "#/components/responses/Error"}
ERROR_STATUSES = sorted({str(s) for s in STATUS.values()})


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON_MT: {"schema": schema}}}


def _path_param(name: str) -> dict[str, Any]:
    if name == "name":
        return {"name": "name", "in": "path", "required": True, "description": "schedule name",
                "schema": arg_schema(commands.SCHEDULE_NAME, wire="text")}
    if name == "key":
        return {"name": "n", "in": "path", "required": True, "description": "the number of the key <queue>:<n>",
                "schema": {"type": "integer", "minimum": 0}}
    return {"name": name, "in": "path", "required": True, "description": "queue name",
            "schema": arg_schema(commands.QUEUE, wire="text")}


def _query_param(arg: Arg, *, required: bool | None = None) -> dict[str, Any]:
    return {"name": arg.name, "in": "query", "required": arg.required if required is None else required,
            "description": arg.doc or arg.name, "schema": arg_schema(arg, wire="text")}


def _body(route: Route) -> dict[str, Any] | None:
    args = route.args
    if route.source == "rpc":
        bodies = {"oneOf": [{"$ref": f"#/components/schemas/cmd_{name}"} for name in COMMANDS]}
        form = {"type": "object", "required": ["body"], "additionalProperties": False,
                "properties": {"body": {"type": "string", "description": "the JSON command as text"}}}
        return {"required": True, "content": {JSON_MT: {"schema": bodies}, FORM_MT: {"schema": form}}}
    if route.source == "collectd":
        text = {"type": "string", "minLength": 1, "description": f"{route.text_field} text"}
        items = {"type": ["array", "object"], "description": "stored verbatim in the original form"}
        return {"required": True, "content": {TEXT_MT: {"schema": text}, JSON_MT: {"schema": items}}}
    if route.source == "xml":
        return {"required": True, "content": {XML_MT: {"schema": {"type": "string"}}}}
    if route.source == "form":
        return {"required": True, "content": {FORM_MT: {"schema": args_object(args, wire="text")}}}
    if route.source != "body":
        return None
    json_schema = args_object(args)
    if route.command == "add":
        many = args_object([a for a in COMMANDS["add_many"].args if a.name not in route.path_args])
        json_schema = {"oneOf": [json_schema, many]}
    content: dict[str, Any] = {
        FORM_MT: {"schema": args_object(args, wire="text")},
        JSON_MT: {"schema": json_schema},
    }
    if route.text_field:
        content[TEXT_MT] = {"schema": {"type": "string", "minLength": 1,
                                       "description": f"the whole body is the {route.text_field}"}}
    required = any(a.required for a in args)
    return {"required": required, "content": content}


def _responses(route: Route) -> dict[str, Any]:
    result = route.result or (RESULTS.get(route.command, {}) if route.command else {})
    answer = route.answer
    out: dict[str, Any] = {}
    if answer in ("json", "json_or_204", "json_or_redirect"):
        out["200"] = _json(result, "the command's answer")
    if answer == "json_or_204":
        out["204"] = {"description": "nothing there (empty queue), no body"}
    if answer == "json_or_redirect":
        out["302"] = {"description": "no ?queue=: redirect to /dashboard"}
    if answer == "key":
        out["200"] = {"description": "the new key as plain text + CRLF (the original's answer)",
                      "content": {TEXT_MT: {"schema": {"type": "string"}}}}
        many = RESULTS["add_many"] if route.source == "body" else None
        schema = {"oneOf": [RESULTS["add"], many]} if many else RESULTS["add"]
        out["201"] = _json(schema, "with Accept: application/json or a JSON body: the JSON answer")
    if answer == "collectd":
        out["200"] = {"description": "the new key as plain text + CRLF (the original form), or add_many's "
                      "answer (?form=records)",
                      "content": {TEXT_MT: {"schema": {"type": "string"}}, JSON_MT: {"schema": RESULTS["add_many"]}}}
        out["201"] = _json(RESULTS["add"], "the original form with Accept: application/json or a callback")
    if answer == "rpc":
        out["200"] = _json({}, "the command's answer, or its error {error, code} (RPC style)")
        out["400"] = ERROR_REF
        return out
    if answer == "html":
        out["200"] = {"description": "an HTML page", "content": {HTML_MT: {"schema": {"type": "string"}}}}
    if answer == "stream":
        out["200"] = {"description": "chunked: one JSON message per line as they arrive",
                      "content": {JSON_MT: {"schema": {}}}}
    if answer == "sse":
        out["200"] = {"description": "a text/event-stream: each message as an event, `: ping` heartbeats",
                      "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    if answer == "ws":
        out["101"] = {"description": "switched to the WebSocket protocol (send Upgrade: websocket)"}
    if answer == "xml":
        out["200"] = {"description": "an XML-RPC response (failures are faults)",
                      "content": {XML_MT: {"schema": {"type": "string"}}}}
        out["413"] = ERROR_REF
        return out
    if answer == "text":
        out["200"] = {"description": "Prometheus text format 0.0.4",
                      "content": {TEXT_MT: {"schema": {"type": "string"}}}}
    if answer == "json_doc":
        out["200"] = _json({"type": "object"}, "the OpenAPI document")
    for status in ERROR_STATUSES:
        out.setdefault(status, ERROR_REF)
    return out


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{route.method}_{route.path}".replace("/", "_").replace("{", "").replace("}", "")
        .replace(".", "_").strip("_"),
        "summary": route.summary,
        "tags": [route.tag],
    }
    if route.command:
        op["description"] = f"Runs the `{route.command}` command: {COMMANDS[route.command].doc}"
    params = [_path_param(name) for name in route.path_args]
    if route.source == "query":
        params += [_query_param(a) for a in route.args]
        if route.path == "/" and route.method == "get":
            params = [_query_param(a, required=False) for a in route.args]
    if route.source == "collectd":
        params += [_query_param(a) for a in route.extra]
    if params:
        op["parameters"] = params
    body = _body(route)
    if body is not None:
        op["requestBody"] = body
    op["responses"] = _responses(route)
    return op


def build_document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (pure; the same for every server of this version)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "code"],
            "properties": {
                "error": {"type": "string", "description": "what went wrong, for people"},
                "code": {"type": "string", "enum": list(ERRORS), "description": "stable, for programs"},
            },
        },
        "Message": {
            "type": "object",
            "required": ["key", "queue", "value"],
            "properties": {
                "key": STRING,
                "queue": STRING,
                "value": {"description": "the message: any JSON value"},
                "priority": INTEGER,
                "attempts": INTEGER,
                "enqueued_at": NUMBER,
                "count": INTEGER,
                "receipt": {"type": "string", "description": "reserved: what ack/nack/touch take"},
                "lease_until": NUMBER,
                "error": STRING,
            },
        },
    }
    for name in COMMANDS:
        schemas[f"cmd_{name}"] = command_body(name)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "RestMQ",
            "version": restmq.__version__,
            "description": (
                "A Redis-backed message queue over HTTP. Generated from the command table. JSON "
                "answers also accept ?callback=NAME (JSONP); form adds accept msg= for value=. "
                "Errors are {error, code} with the status of the code."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {"Error": _json({"$ref": "#/components/schemas/Error"}, "an error")},
        },
    }


class OpenAPI(Endpoint):
    """``GET /openapi.json``: the document, built once per server."""

    methods = (GET,)

    def __init__(self, front: Front) -> None:
        super().__init__(front)
        self.body = json.dumps(build_document(), separators=(",", ":")).encode("utf-8") + b"\r\n"

    def render_GET(self, request: Request) -> int:
        send(request, 200, self.body, b"application/json; charset=utf-8")
        return NOT_DONE_YET
