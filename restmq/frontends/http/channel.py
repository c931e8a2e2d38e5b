"""The HTTP connection: twisted.web's channel with deadlines against slow clients (slowloris)
and status answers for oversized request heads.

twisted.web only has an idle timeout, which every received byte resets, so a client trickling a
request one byte at a time (or sending nothing) holds its connection, and a slot of
``--max-connections``, for as long as that timeout. Here the first request's headers must be
complete within ``header_timeout`` seconds of the connection being accepted, a later request's
(keep-alive) within ``header_timeout`` of its first byte, and a body within ``body_timeout``
seconds of its headers; otherwise the client gets a 408 and the connection closes (a connection
that sent no byte at all is just closed: there is no request to answer). The idle timeout
(``--idle-timeout``, the Site's) applies between requests; a request being answered (a long poll,
a stream) has none, as in twisted.web.

twisted.web drops a connection whose request line or header line is longer than ``MAX_LENGTH``
(16 KiB) without a word, and answers a bare 400 to a head past ``totalHeadersSize`` (16 KiB) or
``maxHeaders`` (500) fields. Here those are a 414 (request line) or 431 (header fields) with the
JSON error body (``too_large``), and twisted.web's other refusals a JSON 400 (``bad_request``).
After such an answer the connection reads and drops what the client is still sending until it
pauses (:data:`LINGER_QUIET`, at most :data:`LINGER_MAX`), then closes: closing with unread data
would reset the connection and the client would lose the answer.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers

from restmq.wire.canned import canned

log = Logger()

#: The phases of one request on a connection; REFUSED: answered with an error, closing.
IDLE, HEADERS, BODY, HANDLING, REFUSED = "idle", "headers", "body", "handling", "refused"
#: After refusing a request, close once the client has sent nothing for this many seconds...
LINGER_QUIET = 0.5
#: ... or after this many seconds at most.
LINGER_MAX = 5.0


class RestMQChannel(http.HTTPChannel):
    """An HTTPChannel with header and body deadlines and 414/431 answers (see the module docstring).

    The deadlines cost no timer per request: a phase writes when it is due (``_due``), and one
    timer per connection, set when none is pending, looks when it fires and sets itself again for
    the time left. A keep-alive connection answering thousands of requests a second creates a
    timer about once per header timeout instead of two per request."""

    _phase = IDLE
    _due: float | None = None  # when the current phase's deadline passes (reactor seconds)
    _deadline: IDelayedCall | None = None  # the connection's one deadline timer
    _abort: IDelayedCall | None = None  # after a refusal: close even if the client keeps sending
    _linger: IDelayedCall | None = None
    _heard = False  # a byte has arrived on this connection
    _host: Any = None
    _peer: Any = None
    _seconds: Any = None
    site: Any

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm(HEADERS, getattr(self.site, "header_timeout", None))

    def getHost(self) -> Any:
        """The local address (asked of the kernel once per connection, not per request)."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        """The client's address (built once per connection, not per request)."""
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """twisted.web's head of an answer as one bytes string rather than a sequence of four
        pieces per header (each checked, then joined again by the transport)."""
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        assert self.transport is not None  # twisted.web writes answers only while connected
        self.transport.write(b"".join(head))

    def _arm(self, phase: str, seconds: float | None) -> None:
        self._phase = phase
        if not seconds:
            self._due = None
            return
        self._due = self._clock_seconds() + seconds
        if self._deadline is None:
            self._deadline = self.callLater(seconds, self._look)

    def _disarm(self) -> None:
        self._due = None

    def _clock_seconds(self) -> float:
        """Now, on the clock of :meth:`callLater` (a test's Clock when it replaced callLater with
        the Clock's own; else the reactor, which TimeoutMixin's callLater uses)."""
        seconds = self._seconds
        if seconds is None:
            seconds = getattr(getattr(self.callLater, "__self__", None), "seconds", None)
            if seconds is None:
                from twisted.internet import reactor

                seconds = reactor.seconds
            self._seconds = seconds
        return float(seconds())

    def _look(self) -> None:
        """The connection's timer fired: expire the phase if its deadline passed, else wait on."""
        self._deadline = None
        due = self._due
        if due is None:
            return
        left = due - self._clock_seconds()
        if left > 0:
            self._deadline = self.callLater(left, self._look)
            return
        self._due = None
        self._expired(self._phase)

    def _stop_timer(self) -> None:
        self._due = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def dataReceived(self, data: bytes) -> None:
        if self._phase == REFUSED:
            self._keep_lingering()
            return
        self._heard = True
        if self._phase == IDLE:
            self._arm(HEADERS, getattr(self.site, "header_timeout", None))
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._phase == REFUSED:
            return  # lines of the same read after a refusal
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._too_large(line)
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """One line longer than ``MAX_LENGTH`` (twisted.web would just drop the connection)."""
        if self._phase != REFUSED:
            self._too_large(line)

    def headerReceived(self, line: bytes) -> bool:
        if self._phase == REFUSED:
            return False
        if self._receivedHeaderCount >= self.maxHeaders:
            self._refuse(431, "Request Header Fields Too Large", "too_large",
                         f"more than {self.maxHeaders} header fields")
            return False
        return bool(super().headerReceived(line))

    def rawDataReceived(self, data: bytes) -> None:
        if self._phase != REFUSED:
            super().rawDataReceived(data)

    def _too_large(self, line: bytes) -> None:
        """414 when the request line is too long, else 431 (a header line, or the head in all)."""
        if self._receivedHeaderSize == 0 and not line.startswith((b" ", b"\t")):
            limit = min(self.MAX_LENGTH, self.totalHeadersSize)
            self._refuse(414, "URI Too Long", "too_large", f"request line is longer than {limit} bytes")
        else:
            self._refuse(431, "Request Header Fields Too Large", "too_large",
                         f"request header fields are larger than {self.totalHeadersSize} bytes")

    def _respondToBadRequestAndDisconnect(self) -> None:
        """twisted.web's answer to a malformed request, with a JSON body."""
        self._refuse(400, "Bad Request", "bad_request", "malformed HTTP request")

    def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
        """Answer an error outside any request, then linger (see the module docstring) and close."""
        if self._phase == REFUSED or self.transport is None:
            return
        self._stop_timer()
        self._phase = REFUSED
        self.setTimeout(None)
        peer = self.transport.getPeer()
        log.info("HTTP request refused peer={peer}: {status} {message}",
                 peer=getattr(peer, "host", "local"), status=status, message=message)
        self.transport.write(canned(status, reason, code, message))
        # Every stream transport the reactor gives a channel (TCP, TLS, UNIX) can abort.
        self._abort = self.callLater(LINGER_MAX, cast(ITCPTransport, self.transport).abortConnection)
        self._keep_lingering()

    def _keep_lingering(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.reset(LINGER_QUIET)
        else:
            self._linger = self.callLater(LINGER_QUIET, self.loseConnection)

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
        if self.transport is None or self._phase != phase:
            return  # taken over (WebSocket) or moved on
        limit = "header_timeout" if phase == HEADERS else "body_timeout"
        seconds = getattr(self.site, limit)
        limits = getattr(self.site, "limits", None)
        if limits is not None:
            limits.rejected[limit] += 1
        if not self._heard:
            log.debug("HTTP client sent nothing within {seconds} s", seconds=seconds)
            self.loseConnection()
            return
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
        self._stop_timer()
        for timer in (self._linger, self._abort):
            if timer is not None and timer.active():
                timer.cancel()
        super().connectionLost(reason)
