"""The HTTP connection: twisted.web's channel with deadlines against slow clients (slowloris).

twisted.web only has an idle timeout, which every received byte resets, so a client trickling a
request one byte at a time holds its connection (and a slot of ``--max-connections``) forever.
Here a request's headers must be complete within ``header_timeout`` seconds of its first byte and
its body within ``body_timeout`` seconds of its headers; otherwise the client gets a 408 and the
connection closes. The idle timeout (``--idle-timeout``, the Site's) applies between requests; a
request being answered (a long poll, a stream) has none, as in twisted.web.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http

log = Logger()

#: The phases of one request on a connection.
IDLE, HEADERS, BODY, HANDLING = "idle", "headers", "body", "handling"


def canned(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response carrying a JSON error, for answers sent outside any request."""
    body = json.dumps({"error": message, "code": code}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class RestMQChannel(http.HTTPChannel):
    """An HTTPChannel with header and body deadlines (see the module docstring)."""

    _phase = IDLE
    _deadline: IDelayedCall | None = None
    site: Any

    def _arm(self, phase: str, seconds: float | None) -> None:
        self._disarm()
        self._phase = phase
        if seconds:
            self._deadline = self.callLater(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def dataReceived(self, data: bytes) -> None:
        if self._phase == IDLE:
            self._arm(HEADERS, getattr(self.site, "header_timeout", None))
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._arm(BODY, getattr(self.site, "body_timeout", None))
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._disarm()
        self._phase = HANDLING
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        if self._phase == HANDLING and len(self.requests) <= 1:
            self._phase = IDLE
        super().requestDone(request)

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self.transport is None or self._phase != phase:
            return  # taken over (WebSocket) or moved on
        limit = "header_timeout" if phase == HEADERS else "body_timeout"
        seconds = getattr(self.site, limit)
        limits = getattr(self.site, "limits", None)
        if limits is not None:
            limits.rejected[limit] += 1
        peer = self.transport.getPeer()
        log.info("HTTP client too slow peer={peer}: {what} not received within {seconds} s",
                 peer=getattr(peer, "host", "local"), what="headers" if phase == HEADERS else "body",
                 seconds=seconds)
        self.transport.write(canned(408, "Request Timeout", "limit_exceeded",
                                    f"request {'headers' if phase == HEADERS else 'body'} not received "
                                    f"within {seconds:g} s"))
        self.loseConnection()

    def timeoutConnection(self) -> None:
        limits = getattr(self.site, "limits", None)
        if limits is not None:
            limits.rejected["idle_timeout"] += 1
        super().timeoutConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        super().connectionLost(reason)
