"""JSON framing for HTTP answers and COMET streams: pure, no Twisted.

Every JSON answer and every COMET line is ``<json>\\r\\n`` (the original's framing, so ``curl``
output ends cleanly and line-reading clients work), or ``NAME(<json>);\\r\\n`` for JSONP. JSON is
compact and keeps non-ASCII text readable (UTF-8); a value holding lone surrogates (which JSON can
carry but UTF-8 cannot) falls back to ``\\u`` escapes instead of failing.
"""

from __future__ import annotations

import json
from typing import Any

CRLF = b"\r\n"

# One encoder, built once: json.dumps with non-default options builds a new encoder per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_ENCODE_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def dumps(obj: Any) -> bytes:
    """``obj`` as compact UTF-8 JSON."""
    try:
        return _ENCODE(obj).encode("utf-8")
    except UnicodeEncodeError:
        return _ENCODE_ASCII(obj).encode("ascii")


def json_line(obj: Any) -> bytes:
    """One JSON answer or stream line: ``<json>\\r\\n``."""
    return dumps(obj) + CRLF


def jsonp_line(callback: str, obj: Any) -> bytes:
    """``callback(<json>);\\r\\n``. U+2028/U+2029 are escaped: valid in JSON, but line breaks in
    older JavaScript, which would break the script. ``callback`` must already be checked
    (:func:`restmq.wire.form.check_callback`)."""
    body = dumps(obj)
    if b"\xe2\x80\xa8" in body or b"\xe2\x80\xa9" in body:
        body = body.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return callback.encode("ascii") + b"(" + body + b");" + CRLF


def frame(obj: Any, callback: str | None = None) -> bytes:
    """A JSON line, JSONP-wrapped when ``callback`` is given."""
    return json_line(obj) if callback is None else jsonp_line(callback, obj)
