"""What the fuzzer feeds: every pure parser that reads bytes from the network or from files.

Each target takes raw bytes. The first byte picks where the input is split in two, so incremental
parsers also see a request cut across reads. A target may raise only the errors its codec promises
(a ``RestMQError`` subclass, or RESP's ``ProtocolError``); anything else is a bug the fuzzer reports.
"""

from __future__ import annotations

from collections.abc import Callable

from restmq import commands
from restmq.acl import parse_acl
from restmq.auth import basic_credentials, parse_tokens, token_from_authorization
from restmq.backend.redisconf import parse_redis_url
from restmq.errors import RestMQError
from restmq.wire import collectd, form, line, memcache, resp, sse, syslog


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


TARGETS: dict[str, Callable[[bytes], None]] = {
    "line": fuzz_line,
    "resp": fuzz_resp,
    "memcache": fuzz_memcache,
    "http_body": fuzz_http_body,
    "collectd": fuzz_collectd,
    "text_files": fuzz_text_files,
}
