"""Pure HTTP helpers: body decoding, JSONP callbacks and JSON framing (no reactor)."""

from __future__ import annotations

import json

import pytest

from restmq.errors import BadRequest
from restmq.wire import chunked, form


@pytest.mark.parametrize("name", ["cb", "jQuery1234_5678", "$", "_x", "app.on$msg", "a.b.c"])
def test_good_callbacks_pass(name: str) -> None:
    """JavaScript identifier paths are accepted as JSONP callbacks."""
    assert form.check_callback(name) == name


@pytest.mark.parametrize(
    "name", ["", "1cb", "alert(1)", "a..b", "a.", ".a", "cb;evil", "a b", "x" * 129, "é"]
)
def test_bad_callbacks_are_refused(name: str) -> None:
    """Anything but an identifier path is refused instead of echoed into JavaScript."""
    with pytest.raises(BadRequest):
        form.check_callback(name)


def test_urlencoded_fields_decode_last_wins_blank_kept() -> None:
    """Form fields are percent-decoded UTF-8, the last repeat wins and blank values are kept."""
    body = b"value=caf%C3%A9+au+lait&a=1&a=2&empty=&noequals&msg=%2B"
    assert form.parse_urlencoded(body) == {"value": "café au lait", "a": "2", "empty": "", "msg": "+"}


def test_urlencoded_invalid_utf8_is_bad_request() -> None:
    """A form value that is not UTF-8 is refused, never guessed."""
    with pytest.raises(BadRequest, match="UTF-8"):
        form.parse_urlencoded(b"value=%FF")


def test_multipart_fields_and_files() -> None:
    """multipart/form-data parts are fields, file parts included (curl -F value=@file)."""
    boundary = b"XyZ"
    body = (
        b"--XyZ\r\nContent-Disposition: form-data; name=\"value\"\r\n\r\nhello\r\n"
        b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
        b"Content-Type: text/plain\r\n\r\nline1\nline2\r\n--XyZ--\r\n"
    )
    ctype = b"multipart/form-data; boundary=" + boundary
    assert form.parse_multipart(body, ctype) == {"value": "hello", "file": "line1\nline2"}
    assert form.read_body(body, ctype) == form.Body("form", fields={"value": "hello", "file": "line1\nline2"})


def test_broken_multipart_is_bad_request() -> None:
    """A multipart body without its boundary is a JSON-able bad_request, not a bare 400."""
    with pytest.raises(BadRequest):
        form.parse_multipart(b"garbage", b"multipart/form-data; boundary=zz")


@pytest.mark.parametrize(
    ("raw", "ctype", "expected"),
    [
        (b"", b"application/json", form.NO_BODY),
        (b"value=x", form.FORM.encode() + b"; charset=utf-8", form.Body("form", fields={"value": "x"})),
        (b'{"value": 1}', b"application/json", form.Body("json", data={"value": 1})),
        (b'{"value": 1}', b"application/vnd.api+json", form.Body("json", data={"value": 1})),
        (b"42", b"text/plain", form.Body("text", value="42")),
        (b"hi there", None, form.Body("text", value="hi there")),
    ],
)
def test_read_body_by_content_type(raw: bytes, ctype: bytes | None, expected: form.Body) -> None:
    """Bodies are decoded by Content-Type: form, JSON, or anything else as the raw text."""
    assert form.read_body(raw, ctype) == expected


def test_read_body_refuses_bad_json_and_bad_utf8() -> None:
    """Broken JSON and non-UTF-8 text bodies are bad requests."""
    with pytest.raises(BadRequest, match="JSON"):
        form.read_body(b"{nope", b"application/json")
    with pytest.raises(BadRequest, match="UTF-8"):
        form.read_body(b"a\xff", b"text/plain")


@pytest.mark.parametrize(
    ("raw", "ctype", "expected"),
    [
        (b'{"cmd": "take", "queue": "q"}', b"application/json", {"cmd": "take", "queue": "q"}),
        (b'{"cmd": "take", "queue": "q"}', None, {"cmd": "take", "queue": "q"}),
        (b"body=%7B%22cmd%22%3A%22len%22%7D", form.FORM.encode(), {"cmd": "len"}),
        (b"msg=%7B%22cmd%22%3A%22len%22%7D&body=x", form.FORM.encode(), {"cmd": "len"}),
        (b'{"cmd":"add","value":"a=b"}', form.FORM.encode(), {"cmd": "add", "value": "a=b"}),
    ],
)
def test_json_protocol_body(raw: bytes, ctype: bytes | None, expected: dict[str, str]) -> None:
    """POST /queue takes raw JSON, the form field body= or msg=, and curl -d's mislabelled JSON."""
    assert form.json_protocol_body(raw, ctype) == expected


@pytest.mark.parametrize(
    ("raw", "ctype"), [(b"", None), (b"value=x", form.FORM.encode()), (b"nope", b"text/plain")]
)
def test_json_protocol_body_refuses_non_json(raw: bytes, ctype: bytes | None) -> None:
    """POST /queue without a JSON command is a bad request."""
    with pytest.raises(BadRequest):
        form.json_protocol_body(raw, ctype)


def test_command_args_drop_framing() -> None:
    """Query arguments reach commands decoded, without callback and jQuery's _ cache buster."""
    query = {b"count": [b"1", b"5"], b"callback": [b"cb"], b"_": [b"123"], b"wait": [b"0.5"]}
    assert form.command_args(query) == {"count": "5", "wait": "0.5"}


@pytest.mark.parametrize(
    ("header", "wanted"),
    [(None, False), (b"*/*", False), (b"text/html,*/*;q=0.8", False), (b"application/json", True)],
)
def test_accepts_json(header: bytes | None, wanted: bool) -> None:
    """Only an Accept header naming JSON asks for the JSON add answer."""
    assert form.accepts_json(header) is wanted


def test_body_limit_leaves_room_for_form_encoding() -> None:
    """The body cap fits a fully percent-encoded value of the maximum size."""
    assert form.body_limit(1000) >= 3 * 1000


def test_json_line_and_jsonp_framing() -> None:
    """Answers are compact UTF-8 JSON + CRLF; JSONP wraps them and escapes U+2028/U+2029."""
    assert chunked.json_line({"value": "café"}) == '{"value":"café"}\r\n'.encode()
    assert chunked.frame({"a": 1}, "cb") == b'cb({"a":1});\r\n'
    wrapped = chunked.jsonp_line("cb", {"v": "a\u2028b\u2029"})
    assert wrapped == b'cb({"v":"a\\u2028b\\u2029"});\r\n'
    assert json.loads(wrapped[3:-4]) == {"v": "a\u2028b\u2029"}


def test_lone_surrogates_fall_back_to_escapes() -> None:
    """A value UTF-8 cannot carry is still answered, as \\u escapes."""
    assert chunked.dumps("\ud800") == b'"\\ud800"'
