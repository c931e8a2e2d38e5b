"""The listeners that do not speak HTTP (line protocol, RESP, memcached, syslog) refuse HTTP.

A web page can make the browser send an HTTP request to any port, e.g.
``fetch("http://127.0.0.1:8889/", {method: "POST", mode: "no-cors", body: "\\npurge jobs\\n"})``:
a line-based server reads the request line and headers as bad commands, then runs the body's lines
(a purge). So the first line of every connection to those listeners is looked at before the front
end sees a byte: an HTTP request line (``METHOD /target HTTP/1.1``; no queue name starts with
``/``, so no command of theirs looks so) is answered with an HTTP 400 and the connection is closed.
Their own clients never start so and are passed through as soon as their first bytes show it
(``*`` for RESP, ``{`` or a lower-case word for the line protocol: at once).
"""

from __future__ import annotations

import re
from typing import Any

from twisted.logger import Logger

from restmq.wire.canned import canned
from restmq.limits import LimitedConnection, LimitedFactory, Limits

log = Logger()

#: An HTTP/1.x request line as browsers send it (origin-form target).
REQUEST_LINE = re.compile(rb"[A-Z]{1,20} /\S* HTTP/\d\.\d\r?")
#: What may follow the target while the line is still arriving: a prefix of `` HTTP/1.1\r``.
_VERSION_SO_FAR = re.compile(rb"( (H(T(T(P(/(\d(\.(\d\r?)?)?)?)?)?)?)?)?)?")
_METHOD_SO_FAR = re.compile(rb"[A-Z]{0,20} ?")
_TARGET = re.compile(rb"[A-Z]{1,20} /\S*")
#: Bytes held while the first line could still be an HTTP request line; past this it counts as one
#: (an upper-case word, a space, a slash and 64 KiB without a space is no client of these protocols).
MAX_HELD = 64 << 10


def looks_like_http(held: bytes) -> bool | None:
    """Whether a connection's first bytes are an HTTP request: True, False, or None (cannot tell yet)."""
    end = held.find(b"\n")
    if end >= 0:
        return REQUEST_LINE.fullmatch(held[:end]) is not None
    if _METHOD_SO_FAR.fullmatch(held):
        return None
    target = _TARGET.match(held)
    if target is None or not _VERSION_SO_FAR.fullmatch(held, target.end()):
        return False
    return True if len(held) > MAX_HELD else None


class NotHttpConnection(LimitedConnection):
    """A counted connection whose first line is judged by :func:`looks_like_http` (see the module)."""

    _judged = False
    _held = b""

    def dataReceived(self, data: bytes) -> None:
        if self._judged:
            super().dataReceived(data)
            return
        self._held += data
        verdict = looks_like_http(self._held)
        if verdict is None:
            return
        self._judged = True
        held, self._held = self._held, b""
        if not verdict:
            super().dataReceived(held)
            return
        name = self.factory.name
        assert self.transport is not None  # data arrives only on a connected protocol
        log.info("{frontend} client peer={peer} sent an HTTP request (a web page?); closed",
                 frontend=name, peer=self.address)
        self.transport.write(canned(400, "Bad Request", "bad_request", f"this port speaks the {name} protocol, not HTTP"))
        self.transport.loseConnection()


class NotHttpFactory(LimitedFactory):
    """:class:`LimitedFactory` for a listener that does not speak HTTP (``name``: its front end)."""

    protocol = NotHttpConnection

    def __init__(self, wrapped: Any, limits: Limits, name: str) -> None:
        super().__init__(wrapped, limits)
        self.name = name
