"""The XML-RPC front end (docs/xmlrpc.md): ``restmq.<cmd>`` for every command, plus the original methods.

Methods are generated from the command table, so a new command is served with no change here:
``restmq.<name>(args…)`` passes its parameters positionally in the table's order
(:func:`restmq.commands.from_positional`). The original RestMQ's ``set(queue, value)`` answers the
new key and ``get(queue)`` takes one message (a struct with ``key``, ``value``, ``count`` 0, plus
our other message fields). ``system.listMethods``, ``system.methodHelp`` and
``system.methodSignature`` describe them.

Every failure is a fault whose faultString starts with the error code (``"empty: empty queue"``)
and whose faultCode comes from :data:`FAULT_CODES`: unreadable requests are ``bad_request``, unknown
methods ``unknown_command``, anything unexpected ``internal`` (logged, details never sent).

XML-RPC cannot carry everything JSON can, so answers are adapted: ``None`` is ``<nil/>``
(allowNone), integers outside 32 bits are sent as decimal strings, and a string holding characters
XML 1.0 forbids (control characters, lone surrogates) is sent as base64 of its UTF-8 bytes. On the
way in, base64 parameters must be UTF-8 text (they become strings) and ``dateTime.iso8601`` values
become their ISO 8601 text. Calls are read under the rules of :mod:`restmq.values`: arrays and
structs nest at most as deep as JSON values may, ``int`` and ``double`` are ASCII decimal numbers
and finite (``nan``, ``inf``, ``1e999``, ``٣`` are ``bad_request``), ``bigdecimal`` is read as a
double.
"""

from __future__ import annotations

import datetime
import re
import warnings
import xmlrpc.client as xmlrpclib
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import IResource

with warnings.catch_warnings():
    # twisted.web.xmlrpc's *client* half subclasses the deprecated HTTPClient; we only serve.
    warnings.filterwarnings("ignore", r"twisted\.web\.http\.HTTPClient", DeprecationWarning)
    from twisted.web.xmlrpc import XMLRPC, Fault, NoSuchFunction, addIntrospection

from restmq import commands, values
from restmq.errors import BadRequest, RestMQError, UnknownCommand, internal
from restmq.auth import Caller
from restmq.frontends.http.common import caller_of
from restmq.ports import Dispatcher

#: faultCode for each error code; stable, part of the contract.
FAULT_CODES: dict[str, int] = {
    "bad_request": 1,
    "bad_queue_name": 2,
    "unknown_command": 3,
    "empty": 4,
    "not_found": 5,
    "stale_receipt": 6,
    "too_large": 7,
    "queue_full": 8,
    "unauthorized": 9,
    "forbidden": 10,
    "backend_unavailable": 11,
    "limit_exceeded": 12,
    "internal": 99,
}

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def fault(error: RestMQError) -> Fault:
    """The fault for an error: ``faultString`` is ``"<code>: <message>"``."""
    return Fault(FAULT_CODES.get(error.code, FAULT_CODES["internal"]), f"{error.code}: {error.message}")


class CallReader(xmlrpclib.Unmarshaller):
    """xmlrpc.client's reader with RestMQ's rules for what clients send (see the module docstring):
    the depth is checked as each array or struct opens, before anything is built from it."""

    dispatch = dict(xmlrpclib.Unmarshaller.dispatch)

    def start(self, tag: str, attrs: Any) -> None:
        super().start(tag, attrs)
        if len(self._marks) > values.MAX_DOCUMENT_DEPTH:
            raise values.too_deep("the call")

    def _number(self, number: float | None, data: str, what: str) -> None:
        if number is None:
            raise BadRequest(f"not {what}: {values.shown(data)}")
        self.append(number)
        self._value = False

    def end_int(self, data: str) -> None:
        self._number(values.parse_int(data.strip()), data, "an XML-RPC integer (ASCII digits)")

    def end_double(self, data: str) -> None:
        self._number(values.parse_float(data.strip()), data, f"an XML-RPC double ({values.NON_FINITE})")

    # The table's handlers are called with the reader that owns them (this class): typeshed types
    # them as taking any Unmarshaller.
    for _tag in ("i1", "i2", "i4", "i8", "int", "biginteger"):
        dispatch[_tag] = cast("Callable[[xmlrpclib.Unmarshaller, str], None]", end_int)
    for _tag in ("double", "float", "bigdecimal"):
        dispatch[_tag] = cast("Callable[[xmlrpclib.Unmarshaller, str], None]", end_double)
    del _tag


def read_call(body: bytes) -> tuple[tuple[Any, ...], str | None]:
    """``(params, methodName)`` of an XML-RPC call: ``bad_request`` when it is not one."""
    reader = CallReader(use_builtin_types=True)
    parser = xmlrpclib.ExpatParser(reader)
    try:
        parser.feed(body)
        parser.close()
        return reader.close(), reader.getmethodname()
    except RestMQError:
        raise
    except Exception as e:  # expat and the reader raise many things on garbage
        raise BadRequest(f"not an XML-RPC call: {e}"[:300]) from None


def from_xmlrpc(value: Any) -> Any:
    """A parameter as the command table expects JSON-like data."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("base64 parameters must be UTF-8 text: RestMQ values are JSON") from None
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [from_xmlrpc(v) for v in value]
    if isinstance(value, dict):
        return {k: from_xmlrpc(v) for k, v in value.items()}
    return value


def to_xmlrpc(value: Any) -> Any:
    """An answer as XML-RPC can carry it (see the module docstring)."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if INT_MIN <= value <= INT_MAX else str(value)
    if isinstance(value, str):
        return xmlrpclib.Binary(value.encode("utf-8", "surrogatepass")) if _NOT_XML.search(value) else value
    if isinstance(value, (list, tuple)):
        return [to_xmlrpc(v) for v in value]
    if isinstance(value, dict):
        return {_NOT_XML.sub("\ufffd", str(k)): to_xmlrpc(v) for k, v in value.items()}
    return value


Procedure = Callable[..., Any]


class RestMQXMLRPC(XMLRPC):
    """``/RPC2`` and ``/xmlrpc``: XML-RPC over the dispatcher."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        super().__init__(allowNone=True, useDateTime=False)
        self.dispatcher = dispatcher
        self.procedures: dict[str, Procedure] = {
            f"restmq.{name}": self._command(command) for name, command in commands.COMMANDS.items()
        }
        self.procedures["set"] = self._original(
            "set", ("queue", "value"), "add", lambda answer: answer["key"],
            "set(queue, value): add a message; answers its key (original RestMQ).",
        )  # fmt: skip
        self.procedures["get"] = self._original(
            "get", ("queue",), "take", lambda answer: answer,
            "get(queue): take the next message: {key, value, count: 0, …} (original RestMQ).",
        )  # fmt: skip
        addIntrospection(self)

    # -- the methods --------------------------------------------------------------------------

    def _principal(self, request: server.Request) -> Caller:
        """Who is calling: the token of the Authorization header (XML-RPC clients send HTTP Basic
        from a ``http://user:TOKEN@host/RPC2`` URL), as a ``rest`` caller for the ACL file."""
        return caller_of(request, query_token=False)

    def _command(self, command: commands.Command) -> Procedure:
        def call(request: server.Request, *params: Any) -> defer.Deferred[Any]:
            args = commands.from_positional(command, [from_xmlrpc(p) for p in params])
            return self.dispatcher.execute(command.name, args, self._principal(request), frontend="xmlrpc")

        call.withRequest = True  # type: ignore[attr-defined]
        call.help = f"restmq.{command.name}({', '.join(command.positional)}): {command.doc}"  # type: ignore[attr-defined]
        return call

    def _original(
        self,
        method: str,
        names: tuple[str, ...],
        command: str,
        shape: Callable[[Any], Any],
        help: str,
    ) -> Procedure:
        def call(request: server.Request, *params: Any) -> defer.Deferred[Any]:
            if len(params) != len(names):
                raise BadRequest(f"{method} takes ({', '.join(names)}), got {len(params)} parameters")
            args = dict(zip(names, (from_xmlrpc(p) for p in params)))
            return self.dispatcher.execute(
                command, args, self._principal(request), frontend="xmlrpc"
            ).addCallback(shape)

        call.withRequest = True  # type: ignore[attr-defined]
        call.help = help  # type: ignore[attr-defined]
        return call

    def lookupProcedure(self, procedurePath: str) -> Procedure:
        found = self.procedures.get(procedurePath)
        if found is not None:
            return found
        try:
            return super().lookupProcedure(procedurePath)  # system.* (introspection)
        except NoSuchFunction:
            known = ", ".join(sorted(self.procedures))
            raise fault(UnknownCommand(f"unknown method {procedurePath!r:.80}; known: {known}")) from None

    def listProcedures(self) -> list[str]:
        return sorted(self.procedures)

    # -- framing ------------------------------------------------------------------------------

    def render(self, request: server.Request) -> bytes | int:
        """Anything but POST gets a 405 with a fault body, not twisted.web's HTML error page."""
        if request.method != b"POST":
            request.setResponseCode(405)
            request.setHeader(b"allow", b"POST")
            request.setHeader(b"content-type", b"text/xml; charset=utf-8")
            return self._body(fault(BadRequest("XML-RPC calls are HTTP POST requests")))
        return super().render(request)

    def render_POST(self, request: server.Request) -> bytes | int:
        """Parse, look up, call, answer: every way out is a methodResponse, never HTML."""
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        body = b""
        if request.content is not None:
            request.content.seek(0, 0)
            body = request.content.read()
        try:
            params, method = read_call(body)
        except RestMQError as e:
            return self._body(fault(e))
        if not isinstance(method, str):
            return self._body(fault(BadRequest("not an XML-RPC call: no methodName")))
        try:
            function = self.lookupProcedure(method)
        except Fault as f:
            return self._body(f)
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        if getattr(function, "withRequest", False):
            d = defer.maybeDeferred(function, request, *params)
        else:
            d = defer.maybeDeferred(function, *params)
        d.addCallbacks(lambda answer: (to_xmlrpc(answer),), self._failed, errbackArgs=(method,))
        d.addCallback(self._respond, request, gone)
        return server.NOT_DONE_YET

    def _failed(self, failure: Failure, method: str) -> Fault:
        if isinstance(failure.value, Fault):
            return failure.value
        if isinstance(failure.value, RestMQError):
            return fault(failure.value)
        return fault(internal(failure, "XML-RPC method {method} failed", method=method))

    def _body(self, result: tuple[Any] | Fault) -> bytes:
        try:
            content = xmlrpclib.dumps(result, methodresponse=True, allow_none=self.allowNone)
        except Exception:
            error = fault(internal(None, "XML-RPC answer cannot be serialized"))
            content = xmlrpclib.dumps(error, methodresponse=True)
        return content.encode("utf-8")

    def _respond(self, result: tuple[Any] | Fault, request: server.Request, gone: list[Failure]) -> None:
        if gone:
            return  # the client went away; the command's effect stands, its answer is dropped
        body = self._body(result)
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()


def build_xmlrpc(dispatcher: Dispatcher) -> IResource:
    """The XML-RPC resource mounted at /RPC2 and /xmlrpc."""
    return RestMQXMLRPC(dispatcher)
