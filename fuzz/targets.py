"""What the fuzzer feeds: every pure parser that reads bytes from the network or from files.

Each target takes raw bytes. The first byte picks where the input is split in two, so incremental
parsers also see a request cut across reads. A target may raise only the errors its codec promises
(a ``RestMQError`` subclass, or RESP's ``ProtocolError``); anything else is a bug the fuzzer reports.

The structure-aware targets (``args``, ``json_doc``, ``xmlrpc``, ``numbers``) read their choices
through :mod:`fuzz.hostile` instead: values nested past the limit and past the recursion limit,
text from every Unicode category where numbers and names are parsed, NaN, infinities and 4,000-digit
numbers. They drive the command table's argument parsing and the value encoder as every front end
would, and also fail on an answer that is not strict JSON or nests past the limit.
"""

from __future__ import annotations

import json
import xmlrpc.client as xmlrpclib
from collections.abc import Callable
from typing import Any

import atheris

from fuzz import hostile
from restmq import commands, compat, values
from restmq.acl import parse_acl
from restmq.auth import basic_credentials, parse_tokens, token_from_authorization
from restmq.backend.redisconf import parse_redis_url
from restmq.dispatch import Dispatcher
from restmq.errors import RestMQError
from restmq.options import number_of
from restmq.frontends import xmlrpc
from restmq.frontends.http.ws import command_of
from restmq.model import encode_value
from restmq.wire import collectd, form, line, memcache, resp, sse, syslog
from restmq.wire.chunked import json_line


def _halves(data: bytes) -> tuple[bytes, bytes]:
    if not data:
        return b"", b""
    cut = data[0] % (len(data)) if len(data) > 1 else 0
    body = data[1:]
    return body[:cut], body[cut:]


def fuzz_line(data: bytes) -> None:
    for raw in data.split(b"\n"):
        request = line.parse_line(raw)
        if isinstance(request, line.Call):
            try:
                commands.parse(commands.lookup(request.name), request.args)
            except RestMQError:
                pass


def fuzz_resp(data: bytes) -> None:
    parser = resp.RequestParser(max_bulk=4096)
    try:
        for part in _halves(data):
            parser.feed(part)
            while parser.next() is not None:
                pass
    except resp.ProtocolError:
        pass


def fuzz_memcache(data: bytes) -> None:
    parser = memcache.Parser(max_value=4096)
    for part in _halves(data):
        parser.feed(part)
        while parser.next() is not None:
            pass


def fuzz_http_body(data: bytes) -> None:
    kinds = (None, b"application/json", b"application/x-www-form-urlencoded", b"text/plain",
             b"multipart/form-data; boundary=b")
    content_type = kinds[data[0] % len(kinds)] if data else None
    for reader in (form.read_body, form.json_protocol_body):
        try:
            reader(data[1:], content_type)
        except RestMQError:
            pass


def fuzz_collectd(data: bytes) -> None:
    for parse in (collectd.parse_data, collectd.parse_event):
        try:
            parse(data, 1.0)
        except RestMQError:
            pass


def fuzz_text_files(data: bytes) -> None:
    """The tokens file, the ACL file, --redis URLs, Authorization headers, SSE and syslog lines."""
    text = data.decode("utf-8", "replace")
    for parse in (parse_tokens, parse_acl, parse_redis_url):
        try:
            parse(text)
        except RestMQError:
            pass
    token_from_authorization(data)
    basic_credentials(data)
    list(sse.parse(data))
    syslog.record(syslog.decode_line(data), "127.0.0.1", 1.0)


# -- structure-aware targets ---------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"answer holds {name}: not JSON")


def _strict(encoded: bytes | str) -> None:
    """An answer must be JSON a strict reader takes, nested at most as deep as values may be
    (plus the answer's own framing)."""
    data = json.loads(encoded, parse_constant=_reject_constant)
    values.check(data, "answer", values.MAX_DOCUMENT_DEPTH + 2)


def _run_command(name: Any, args: dict[str, Any]) -> None:
    """What the dispatcher does before the engine: look up, parse the arguments, encode values and
    keys; then frame the answer as the front ends would."""
    try:
        command = commands.lookup(name)
        parsed = commands.parse(command, args)
        stored = []
        if "value" in parsed and parsed["value"] is not None:
            stored.append(parsed["value"])
        for message in parsed.get("messages") or ():
            stored.append(message["value"])
        for v in stored:
            _strict(encode_value(v))
            _strict(json_line({"queue": "q", "value": v}))
            xmlrpclib.dumps((xmlrpc.to_xmlrpc({"value": v}),), methodresponse=True, allow_none=True)
        if parsed.get("key") is not None:
            Dispatcher._number(parsed["queue"], parsed["key"])
    except RestMQError as e:
        _strict(line.encode_error(e))


def fuzz_args(data: bytes) -> None:
    """The command table's argument parsing with decoded values of every hostile shape."""
    fdp = atheris.FuzzedDataProvider(data)
    names = list(commands.COMMANDS)
    name = fdp.PickValueInList(names) if fdp.ConsumeIntInRange(0, 15) else hostile.value(fdp)
    args: dict[str, Any] = {}
    command = commands.COMMANDS.get(name) if isinstance(name, str) else None
    arg_names = [a.name for a in command.args] if command and command.args else ["queue"]
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        key = fdp.PickValueInList(arg_names) if fdp.ConsumeIntInRange(0, 7) else hostile.text(fdp, 6)
        if key == "queue" and fdp.ConsumeBool():
            args[key] = fdp.PickValueInList(["a", "q.1", "x" * 129, "a:1"])
        elif key == "key" and fdp.ConsumeBool():
            args[key] = "a:" + hostile.text(fdp, 8)
        elif key == "messages" and fdp.ConsumeBool():
            args[key] = [hostile.value(fdp) if fdp.ConsumeBool() else {"value": hostile.value(fdp),
                         "priority": hostile.scalar(fdp)} for _ in range(fdp.ConsumeIntInRange(0, 4))]
        else:
            args[key] = hostile.value(fdp)
    _run_command(name, args)
    for v in args.values():
        values.shown(v)


def _same_as_json(doc: str) -> None:
    """What the JSON reader accepts, it reads exactly as the standard library does."""
    found = values.loads(doc, "line")
    if found != json.loads(doc):
        raise AssertionError("values.loads read the text differently from json.loads")


def fuzz_json_doc(data: bytes) -> None:
    """JSON commands as text through every reader of them: the JSON line, ``POST /queue`` (raw and
    form), a JSON body of ``POST /q/<q>``, a WebSocket frame, collectd's write_http JSON."""
    fdp = atheris.FuzzedDataProvider(data)
    doc = hostile.json_text(fdp) if fdp.ConsumeIntInRange(0, 7) else hostile.text_line(fdp)
    raw = doc.encode("utf-8", "surrogatepass")
    request = line.parse_line(raw)
    if isinstance(request, line.Call):
        _run_command(request.name, dict(compat.json_command_args(request.name, dict(request.args))))
    for reader in (
        lambda: form.json_protocol_body(raw, b"application/json"),
        lambda: form.read_body(raw, b"application/json").data,
        lambda: command_of(raw, "q"),
        lambda: collectd.parse_data(raw, 1.0),
        lambda: _same_as_json(doc),
    ):
        try:
            reader()
        except RestMQError:
            pass
    try:
        name, args = command_of(raw, "q")
    except RestMQError:
        return
    _run_command(name, args)


def fuzz_xmlrpc(data: bytes) -> None:
    """XML-RPC calls with deep arrays and structs, and hostile ints, doubles and strings."""
    fdp = atheris.FuzzedDataProvider(data)
    body = hostile.xmlrpc_call(fdp)
    try:
        params, method = xmlrpc.read_call(body)
        if not isinstance(method, str) or not method.startswith("restmq."):
            return
        command = commands.lookup(method[len("restmq."):])
        args = commands.from_positional(command, [xmlrpc.from_xmlrpc(p) for p in params])
    except RestMQError:
        return
    _run_command(command.name, args)


def fuzz_numbers(data: bytes) -> None:
    """Every place text is read as a number, with digits and signs of every Unicode category."""
    fdp = atheris.FuzzedDataProvider(data)
    word = hostile.text(fdp, 12)
    raw = word.encode("utf-8", "surrogatepass")
    values.parse_int(word)
    values.parse_float(raw)
    values.is_non_finite(word)
    resp.parse_int(raw)
    resp.parse_float(raw)
    for kind in (int, float):
        try:
            number_of(kind, word)
        except ValueError:
            pass  # what an option parser's type may raise: usage says so
    for arg in ("count", "wait", "priority", "lease", "delay"):
        command = "reserve" if arg in ("lease", "wait", "count") else "add"
        _run_command(command, {"queue": "q", "value": "v", arg: word} if command == "add"
                     else {"queue": "q", arg: word})
    _run_command("get", {"queue": "a", "key": "a:" + word})
    _run_command("del", {"queue": "a", "key": word})
    line_request = line.parse_line(f"get a a:{word}".encode("utf-8", "surrogatepass"))
    if isinstance(line_request, line.Call):
        _run_command(line_request.name, line_request.args)
    try:
        memcache.parse_key("q/t=" + word)
    except memcache.BadKey:
        pass
    list(sse.parse(b"retry: " + raw + b"\ndata: x\n\n"))
    syslog.record("<" + word + ">x", "127.0.0.1", 1.0)
    for text in (f"PUTVAL h/p/t interval={word} N:1", f"PUTVAL h/p/t {word}:{word}"):
        try:
            collectd.parse_data(text.encode("utf-8", "surrogatepass"), 1.0)
        except RestMQError:
            pass
    for url in (f"redis://h:{word}/0", f"redis://h:6379/{word}"):
        try:
            parse_redis_url(url)
        except RestMQError:
            pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "line": fuzz_line,
    "resp": fuzz_resp,
    "memcache": fuzz_memcache,
    "http_body": fuzz_http_body,
    "collectd": fuzz_collectd,
    "text_files": fuzz_text_files,
    "args": fuzz_args,
    "json_doc": fuzz_json_doc,
    "xmlrpc": fuzz_xmlrpc,
    "numbers": fuzz_numbers,
}
