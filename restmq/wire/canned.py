"""A whole HTTP/1.1 answer carrying a JSON error, for answers sent outside any request: deadlines,
refused connections, a non-HTTP listener answering a browser. Pure: bytes out."""

from __future__ import annotations

import json


def canned(status: int, reason: str, code: str, message: str) -> bytes:
    """The response's bytes, ``connection: close`` (the caller closes after writing them)."""
    body = json.dumps({"error": message, "code": code}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body
