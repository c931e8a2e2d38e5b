"""What every HTTP route shares: the error table, answer writing, and the one way to run a command.

A route only decides *which* command runs with *which* arguments and *how* the answer is framed (an
:class:`Answer`); :meth:`Front.run` does the rest for all of them: calls the dispatcher, writes the
answer or the error when the Deferred fires, and writes nothing if the client has gone (for a long
poll it also cancels the wait at once). Errors are always JSON ``{"error", "code"}`` with the status
from :data:`STATUS`; anything unexpected is a generic 500 and its traceback goes to the log only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from restmq.auth import Caller, basic_credentials, split_credentials, token_from_authorization
from restmq.errors import BadRequest, RestMQError, internal
from restmq.errors import NotFound as NotFoundError
from restmq.wire import form
from restmq.wire.chunked import CRLF, json_line, jsonp_line
from restmq.ports import Dispatcher

#: Error code -> HTTP status, the one table of this front end. ``empty`` is 404 where an error
#: body is wanted (``GET /?queue=``); REST reads answer 204 instead (see :class:`Answer`).
STATUS: dict[str, int] = {
    "bad_request": 400,
    "bad_queue_name": 400,
    "unknown_command": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "empty": 404,
    "stale_receipt": 409,
    "queue_full": 409,
    "too_large": 413,
    "misdirected": 421,
    "limit_exceeded": 429,
    "backend_unavailable": 503,
}
INTERNAL_STATUS = 500

JSON = b"application/json; charset=utf-8"
JAVASCRIPT = b"application/javascript; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"
HTML = b"text/html; charset=utf-8"

GET, HEAD, POST, PUT, DELETE = b"GET", b"HEAD", b"POST", b"PUT", b"DELETE"


# -- writing answers ----------------------------------------------------------------------------


#: Reason phrases twisted.web does not know.
PHRASES = {421: b"Misdirected Request"}


def send(request: Request, status: int, body: bytes, content_type: bytes) -> None:
    """Write a whole answer with its Content-Length (no chunked framing) and finish."""
    request.setResponseCode(status, PHRASES.get(status))
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def send_json(request: Request, status: int, obj: Any, callback: str | None = None) -> None:
    """A JSON answer, or ``callback(<json>);`` as JavaScript when a JSONP callback was asked for."""
    if callback is None:
        send(request, status, json_line(obj), JSON)
    else:
        send(request, status, jsonp_line(callback, obj), JAVASCRIPT)


def send_error(
    request: Request, error: RestMQError, callback: str | None = None, status: int | None = None
) -> None:
    """An error as ``{"error", "code"}`` with its status from :data:`STATUS`."""
    status = status or STATUS.get(error.code, INTERNAL_STATUS)
    if status == 401:
        request.setHeader(b"www-authenticate", b'Bearer realm="restmq", Basic realm="restmq"')
    send_json(request, status, error.to_dict(), callback)


def caller_of(request: Request, channel: str = "rest", *, query_token: bool = True) -> Caller:
    """Who is calling through ``channel`` (rest, comet, sse, websocket): the token of the
    Authorization header (Bearer, or Basic with the token as password), else ``?access_token=``
    (browsers' EventSource and WebSocket cannot set headers); the peer address; and the Basic
    user and password (for the ACL file; a WebSocket may send them as a cookie
    ``auth=user:password``, as the original RestMQ's clients did)."""
    header = request.getHeader(b"authorization")
    token = token_from_authorization(header)
    if token is None and query_token:
        values = query(request).get(b"access_token")
        token = values[-1].decode("utf-8", "replace") if values else None
    basic = basic_credentials(header)
    if basic is None and channel == "websocket":
        cookie = request.getCookie(b"auth")
        if cookie:
            basic = split_credentials(cookie.decode("utf-8", "replace"))
    address = request.getClientAddress()
    return Caller(token, channel, str(getattr(address, "host", "local")), basic)


def send_nothing(request: Request, status: int = 204) -> None:
    """An answer with no body (204: the queue is empty; 302: a redirect)."""
    request.setResponseCode(status)
    if status != 204:
        request.setHeader(b"content-length", b"0")
    request.finish()


def send_internal(request: Request, failure: Failure | None, why: str) -> None:
    """Log an unexpected ``failure`` (see :func:`restmq.errors.internal`) and answer the generic
    500, if the answer has not started yet; else just end it."""
    error = internal(failure, "HTTP {request} " + why, request=describe(request))
    if getattr(request, "finished", False) or getattr(request, "_disconnected", False):
        return
    if request.startedWriting:
        request.finish()
    else:
        send_error(request, error, status=INTERNAL_STATUS)


def query(request: Request) -> Mapping[bytes, list[bytes]]:
    """The query string's arguments (twisted.web's ``request.args``: bodies are not merged in)."""
    return request.args or {}


def body_bytes(request: Request) -> bytes:
    """The whole request body (kept in memory by :class:`routes.RestMQRequest`, at most the cap)."""
    content: Any = request.content
    content.seek(0)
    return content.read()


#: jQuery's JSONP placeholder: it replaces ``callback=?`` only in JSONP GETs, so a ``$.post(url +
#: "?callback=?")`` (the original dashboard's pause/play) sends it as is. It names no function:
#: the answer is plain JSON, which jQuery's XHR reads.
UNREPLACED_CALLBACK = b"?"


def callback_of(request: Request) -> str | None:
    """The request's JSONP ``callback`` (checked), or None; an empty one, or jQuery's unreplaced
    ``?``, counts as none."""
    values = query(request).get(b"callback")
    if not values or values[-1] in (b"", UNREPLACED_CALLBACK):
        return None
    return form.check_callback(form.text(values[-1], "callback"))


def queue_name(segment: bytes) -> str:
    """A queue name from a (percent-decoded) path segment; the dispatcher judges whether it is valid
    (bytes that are not UTF-8 stay lone surrogates, which no name holds, rather than becoming
    U+FFFD and naming another queue)."""
    return segment.decode("utf-8", "surrogateescape")


def describe(request: Request) -> str:
    """``METHOD /path`` for logs."""
    return f"{request.method.decode('latin-1')} {request.path.decode('latin-1')[:200]}"


# -- answers ------------------------------------------------------------------------------------


class Answer:
    """How a route frames its command's result and errors. Built once per route kind.

    ``status``: the success status. ``shape``: turns the command's answer into the body (the
    original's shapes live in :mod:`restmq.compat`). ``empty``: the status for "nothing there"
    (the ``empty`` error, or an empty list) when it should be answered without a body (204).
    ``rpc``: command failures are answered 200 with the error body (``POST /queue``).
    """

    __slots__ = ("status", "shape", "empty", "rpc")

    def __init__(
        self,
        status: int = 200,
        shape: Callable[[Any], Any] | None = None,
        *,
        empty: int | None = None,
        rpc: bool = False,
    ) -> None:
        self.status, self.shape, self.empty, self.rpc = status, shape, empty, rpc

    def ok(self, request: Request, result: Any, callback: str | None) -> None:
        if self.empty is not None and result == []:
            send_nothing(request, self.empty)
            return
        send_json(request, self.status, result if self.shape is None else self.shape(result), callback)

    def failed(self, request: Request, error: RestMQError, callback: str | None) -> None:
        if self.rpc:
            send_json(request, 200, error.to_dict(), callback)
        elif self.empty is not None and error.code == "empty":
            send_nothing(request, self.empty)
        else:
            send_error(request, error, callback)


class KeyAnswer(Answer):
    """The original add answer: the new key as plain text + CRLF (routes pick the JSON answer
    instead when the client asked for JSON or JSONP)."""

    __slots__ = ()

    def ok(self, request: Request, result: Any, callback: str | None) -> None:
        key = result.get("key") if isinstance(result, dict) else None
        if isinstance(key, str):
            send(request, self.status, key.encode("utf-8") + CRLF, TEXT)
        else:
            super().ok(request, result, callback)


class HtmlAnswer(Answer):
    """A page rendered from a command's answer (``/dashboard``, ``/j/<q>``); errors stay JSON."""

    __slots__ = ("render",)

    def __init__(self, render: Callable[[Any], str]) -> None:
        super().__init__()
        self.render = render

    def ok(self, request: Request, result: Any, callback: str | None) -> None:
        send(request, self.status, self.render(result).encode("utf-8"), HTML)


# -- running commands ---------------------------------------------------------------------------


class _Pending:
    """One request waiting for its command: writes the outcome unless the client left first.

    Only a request whose command is cancelled when its client leaves (a long poll) registers for
    the news (``notifyFinish``); the others look whether the connection is still there when their
    answer is ready, which costs no Deferred."""

    __slots__ = ("request", "d", "answer", "callback", "cancel", "lost")

    def __init__(
        self,
        request: Request,
        d: defer.Deferred[Any],
        answer: Answer,
        callback: str | None,
        cancel: bool,
    ) -> None:
        self.request, self.d, self.answer, self.callback = request, d, answer, callback
        self.cancel, self.lost = cancel, False
        if cancel:
            request.notifyFinish().addErrback(self._lost)
        d.addCallbacks(self._done, self._failed)
        d.addErrback(self._broken)

    @property
    def gone(self) -> bool:
        """Whether the client left before the answer (the connection was lost)."""
        return self.lost or bool(getattr(self.request, "_disconnected", False))

    def _lost(self, failure: Failure) -> None:
        self.lost = True
        if not self.d.called:
            # A long poll whose client left: stop waiting now rather than at the deadline.
            self.d.cancel()

    def _done(self, result: Any) -> None:
        if not self.gone:
            self.answer.ok(self.request, result, self.callback)

    def _failed(self, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, RestMQError):
            if not self.gone:
                self.answer.failed(self.request, error, self.callback)
            return
        if self.gone and isinstance(error, defer.CancelledError):
            return
        send_internal(self.request, failure, "failed")

    def _broken(self, failure: Failure) -> None:
        send_internal(self.request, failure, "failed: answer not written")


class Front:
    """What every resource of the HTTP front end shares: the dispatcher and the limits."""

    def __init__(self, dispatcher: Dispatcher, *, max_message_size: int, reactor: Any = None) -> None:
        self.dispatcher = dispatcher
        self.max_message_size = max_message_size
        self.body_limit = form.body_limit(max_message_size)
        #: For the routes' timers (SSE heartbeats); None: the global reactor, looked up when needed.
        self.reactor = reactor

    def principal(self, request: Request, channel: str = "rest") -> Caller:
        """Who is calling, for the dispatcher's authorization: see :func:`caller_of`."""
        return caller_of(request, channel)

    def run(
        self,
        request: Request,
        name: str,
        args: dict[str, Any],
        answer: Answer,
        callback: str | None = None,
        *,
        cancel_on_gone: bool = False,
    ) -> int:
        """Run command ``name`` for ``request`` and answer it through ``answer``: THE path of every
        route. ``cancel_on_gone`` cancels the command when the client disconnects (long polls)."""
        # Without authorization (no tokens, no ACL) nobody's identity is looked at: skip reading it.
        principal = None if self.dispatcher.authorize is None else self.principal(request)
        d = self.dispatcher.execute(name, args, principal, frontend="http")
        return self.respond(request, d, answer, callback, cancel_on_gone=cancel_on_gone)

    def respond(
        self,
        request: Request,
        d: defer.Deferred[Any],
        answer: Answer,
        callback: str | None = None,
        *,
        cancel_on_gone: bool = False,
    ) -> int:
        """Answer ``request`` with ``d``'s outcome (for a page built from several commands)."""
        _Pending(request, d, answer, callback, cancel_on_gone)
        return NOT_DONE_YET


# -- resources ----------------------------------------------------------------------------------


class NotFound(Resource):
    """Any path nobody serves: a JSON 404 whatever the method (twisted.web's is an HTML page)."""

    isLeaf = True

    def render(self, request: Request) -> int:
        path = request.path.decode("utf-8", "replace")[:200]
        send_error(request, NotFoundError(f"no such route: {path}"))
        return NOT_DONE_YET


NOT_FOUND = NotFound()


class Endpoint(Resource):
    """Base of every RestMQ resource: one method table, JSON errors, optional trailing slash.

    ``methods`` lists what the resource answers; anything else is a JSON 405 with ``Allow``. HEAD
    is answered as GET (without the body) only where ``head_ok``: a GET that takes a message must
    not run for a HEAD. A render method may raise RestMQError (bad input found before any command
    runs): it is answered with its status. A trailing empty path segment (``/stats/``) is the
    resource itself; an unknown child is the JSON 404.
    """

    methods: tuple[bytes, ...] = (GET,)
    head_ok = True

    def __init__(self, front: Front) -> None:
        super().__init__()
        self.front = front

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self if not path else NOT_FOUND

    def allowed(self) -> tuple[bytes, ...]:
        return self.methods + (HEAD,) if self.head_ok and GET in self.methods else self.methods

    def render(self, request: Request) -> bytes | int:
        method = request.method
        if method == HEAD and self.head_ok and GET in self.methods:
            method = GET
        elif method not in self.methods:
            allowed = self.allowed()
            request.setHeader(b"allow", b", ".join(allowed))
            error = BadRequest(
                f"method {method.decode('latin-1')[:20]} is not allowed here; "
                f"use {', '.join(m.decode() for m in allowed)}",
            )
            send_error(request, error, status=405)
            return NOT_DONE_YET
        try:
            return getattr(self, "render_" + method.decode("ascii"))(request)
        except RestMQError as e:
            send_error(request, e)
            return NOT_DONE_YET


def read_body(request: Request) -> form.Body:
    """The request body, decoded by its Content-Type."""
    return form.read_body(body_bytes(request), request.getHeader(b"content-type"))


def args_with_body(request: Request, text_field: str | None = None) -> tuple[dict[str, Any], form.Body]:
    """Query arguments updated by the body's: form fields, a JSON object's fields, or (any other
    content type) the raw text as ``text_field``. Framing arguments are left out."""
    args: dict[str, Any] = form.command_args(query(request))
    body = read_body(request)
    if body.kind == "form":
        args.update(body.fields)
        for name in form.FRAMING.intersection(body.fields):
            del args[name]
    elif body.kind == "json":
        if not isinstance(body.data, dict):
            raise BadRequest("a JSON body must be an object of arguments")
        args.update(body.data)
    elif body.kind == "text":
        if text_field is None:
            raise BadRequest("send the arguments as a form or as a JSON object")
        args[text_field] = body.value
    return args, body
