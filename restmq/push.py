"""Push delivery: POSTs the messages of queues that have a push subscription to their URL.

The engine keeps the subscriptions and does the queue work (``push_reserve`` reserves under the
subscription's concurrency, counted across every process; ``pushed`` acks or nacks and records
the outcome); this module is the HTTP client, kept out of the engine. Each process runs one
:class:`Pusher` (started and stopped by restmq/service.py, like the sweeper). It finds the
subscribed queues in the index (:data:`restmq.engine.keys.PUSHING`) every ``poll`` seconds and
runs one loop per queue, which wakes on the queue's events (an add, a resume) and on its own
deliveries ending, and otherwise looks again every ``poll`` seconds (a delay that came due, a
slot another process freed).

Delivery is at-least-once: a process that dies mid-push leaves the message reserved until its
lease runs out, then it is pushed again (docs/push-and-schedules.md).
"""

from __future__ import annotations

import hashlib
import io
import hmac
import json
import time
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer, error as neterror
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.internet.protocol import Protocol as Protocol_, connectionDone
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from restmq.commands import check_push_url
from restmq.errors import RestMQError
from restmq.latency import PushMetrics
from restmq.model import Message
from restmq.streams import Watch

log = Logger()

#: The longest error text kept with a message (nack's limit).
MAX_ERROR = 4096
#: Most connections kept open to one receiver (host, port, scheme).
POOL_PER_HOST = 64


class PushEngine(Protocol):
    """What the pusher needs of the engine."""

    async def pushing(self) -> list[str]: ...

    async def push(
        self, queue: str, op: str = "get", fields: dict[str, str] | None = None
    ) -> dict[str, Any] | None: ...

    async def push_reserve(self, queue: str, count: int) -> tuple[str, list[Message]]: ...

    async def pushed(self, queue: str, receipt: str, error: str, delay: float) -> str: ...

    async def unindex_push(self, queue: str) -> None: ...

    def watch(self, queue: str) -> Watch: ...


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``RestMQ-Signature``'s value: ``v1=`` + hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def encode_body(value_json: bytes) -> tuple[bytes, bytes]:
    """A message's body and content type: a text value as UTF-8 text, any other as its JSON."""
    if value_json[:1] == b'"':
        text = json.loads(value_json)
        return text.encode("utf-8", "surrogatepass"), b"text/plain; charset=utf-8"
    return value_json, b"application/json"


def reason_of(failure: Failure) -> tuple[str, str]:
    """(metric label, error text) of a delivery that got no answer."""
    if failure.check(neterror.ConnectionRefusedError):
        return "refused", "connection refused"
    if failure.check(neterror.DNSLookupError):
        return "dns", f"dns: {failure.getErrorMessage()}"
    text = failure.getErrorMessage()
    if "SSL" in type(failure.value).__name__ or "certificate" in text.lower() or "ssl" in repr(failure.value).lower():
        return "tls", f"tls: {text}"
    return "connection", f"connection: {type(failure.value).__name__}: {text}"[:MAX_ERROR]


class Pusher(Service):
    """Delivers the messages of every subscribed queue of this Redis (one loop per queue)."""

    name = "pusher"
    #: Seconds a stop waits for the deliveries in flight before cutting them (each is nacked).
    STOP_GRACE = 10.0

    def __init__(
        self,
        engine: PushEngine,
        reactor: Any,
        allow: tuple[str, ...],
        metrics: PushMetrics | None = None,
        *,
        poll: float = 1.0,
        agent: Any = None,
    ) -> None:
        self.engine, self.reactor, self.allow = engine, reactor, allow
        self.metrics = metrics or PushMetrics()
        self.poll = poll
        if agent is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = POOL_PER_HOST
            pool.retryAutomatically = False  # a POST is never sent twice by the pool itself
            # BrowserLikePolicyForHTTPS checks certificates against the system trust store;
            # a plain Agent follows no redirects.
            agent = Agent(reactor, BrowserLikePolicyForHTTPS(), pool=pool)
            self.pool: HTTPConnectionPool | None = pool
        else:
            self.pool = None
        self.agent = agent
        self.loops: dict[str, QueuePusher] = {}
        self._discover: Any = None

    def startService(self) -> None:
        super().startService()
        if not self.allow:
            log.info("push is off (no --push-allow)")
            return
        self._tick()

    def _tick(self) -> None:
        self._discover = None
        d = defer.ensureDeferred(self.discover())
        d.addBoth(self._again)

    def _again(self, _: Any) -> None:
        if self.running:
            self._discover = self.reactor.callLater(self.poll, self._tick)

    async def discover(self) -> None:
        """Start a loop for each subscribed queue that has none (a loop ends by itself when its
        subscription is gone)."""
        try:
            queues = await self.engine.pushing()
        except RestMQError as e:
            log.debug("push index not read: {error}", error=e.message)
            return
        for queue in queues:
            if queue not in self.loops and self.running:
                loop = self.loops[queue] = QueuePusher(self, queue)
                loop.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._discover is not None and self._discover.active():
            self._discover.cancel()
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """Stop reserving; let the deliveries in flight end (each is bounded by its timeout)."""
        loops = list(self.loops.values())
        for loop in loops:
            loop.stop()
        ending = defer.DeferredList([defer.ensureDeferred(loop.finished()) for loop in loops], consumeErrors=True)
        timer = self.reactor.callLater(self.STOP_GRACE, ending.cancel)
        try:
            await ending
        except defer.CancelledError:
            log.warn("push deliveries still in flight after {grace} s were cut; they come back after their lease",
                     grace=self.STOP_GRACE)
        finally:
            if timer.active():
                timer.cancel()
        if self.pool is not None:
            await self.pool.closeCachedConnections()

    def ended(self, loop: QueuePusher) -> None:
        if self.loops.get(loop.queue) is loop:
            del self.loops[loop.queue]


class QueuePusher:
    """One queue's delivery loop: reserve what the subscription's concurrency lets in, POST each
    message, then ack or nack it; wait for an event when there is nothing to do."""

    #: How long a subscription read is reused before it is read again (a changed URL or secret
    #: is seen within this; a removed subscription stops new deliveries at once: the reserve
    #: script refuses).
    SUBSCRIPTION_TTL = 1.0

    def __init__(self, pusher: Pusher, queue: str) -> None:
        self.pusher, self.queue = pusher, queue
        self.running = False
        self.inflight: set[defer.Deferred[None]] = set()
        self._done: defer.Deferred[None] | None = None
        self._nudge: defer.Deferred[bool] | None = None
        self._subscription: dict[str, Any] | None = None
        self._read_at = -1e9

    def start(self) -> None:
        self.running = True
        self._done = defer.ensureDeferred(self._run())
        self._done.addErrback(lambda f: log.failure("push loop of {queue} failed", f, queue=self.queue))
        # Known to the pusher until its deliveries in flight have ended too (a stop waits for them).
        defer.ensureDeferred(self.finished()).addBoth(lambda _: self.pusher.ended(self))

    def stop(self) -> None:
        self.running = False
        self._wake()

    async def finished(self) -> None:
        if self._done is not None:
            await self._done
        while self.inflight:
            await defer.DeferredList(list(self.inflight))

    def _wake(self) -> None:
        if self._nudge is not None and not self._nudge.called:
            self._nudge.callback(True)

    async def _subscription_now(self) -> dict[str, Any] | None:
        now = time.monotonic()
        if now - self._read_at >= self.SUBSCRIPTION_TTL:
            self._subscription = await self.pusher.engine.push(self.queue)
            self._read_at = now
        return self._subscription

    async def _run(self) -> None:
        engine = self.pusher.engine
        watch = engine.watch(self.queue)
        try:
            await watch.ready(self.pusher.poll)
            while self.running:
                try:
                    subscription = await self._subscription_now()
                    if subscription is None:
                        log.info("push subscription of {queue} removed; its loop ends", queue=self.queue)
                        await engine.unindex_push(self.queue)
                        return
                    free = int(subscription["concurrency"]) - len(self.inflight)
                    status, messages = ("busy", []) if free <= 0 else await engine.push_reserve(self.queue, free)
                except RestMQError as e:
                    log.debug("push of {queue} waits: {error}", queue=self.queue, error=e.message)
                    status, messages = "error", []
                if status == "none":
                    self._read_at = -1e9  # read the subscription again: it may be gone
                for message in messages:
                    self._start(subscription or {}, message)
                if messages:
                    continue
                await self._idle(watch)
        finally:
            watch.close()

    async def _idle(self, watch: Watch) -> None:
        """Until an add or resume on the queue, one of our deliveries ending, a stop, or ``poll``."""
        self._nudge = defer.Deferred()
        waiting = watch.wait(self.pusher.poll)
        try:
            await first_of([waiting, self._nudge])
        finally:
            if not waiting.called:
                waiting.cancel()
            self._nudge = None

    def _start(self, subscription: dict[str, Any], message: Message) -> None:
        d = defer.ensureDeferred(self._deliver(subscription, message))
        self.inflight.add(d)

        def over(result: Any) -> None:
            self.inflight.discard(d)
            if isinstance(result, Failure):
                log.failure("push delivery of {key} failed", result, key=message.key)
            self._wake()

        d.addBoth(over)

    async def _deliver(self, subscription: dict[str, Any], message: Message) -> None:
        """POST one message, then ack it (2xx) or nack it with the reason and the backoff delay."""
        pusher = self.pusher
        url = subscription["url"]
        timeout = int(subscription.get("timeout", "10000")) / 1000.0
        body, content_type = encode_body(message.value_json)
        timestamp = str(int(time.time()))
        headers = Headers({
            b"content-type": [content_type],
            b"user-agent": [b"RestMQ-push"],
            b"restmq-queue": [self.queue.encode("utf-8")],
            b"restmq-key": [message.key.encode("utf-8")],
            b"restmq-attempt": [str(message.attempts).encode()],
            b"restmq-timestamp": [timestamp.encode()],
        })
        secret = subscription.get("secret")
        if secret:
            headers.addRawHeader(b"restmq-signature", signature(secret, timestamp, body).encode())
        started = time.monotonic()
        try:
            check_push_url(url, pusher.allow)
        except RestMQError as e:
            label, error = "not_allowed", e.message
        else:
            label, error = await self._post(url, headers, body, timeout)
        seconds = time.monotonic() - started
        pusher.metrics.latency.observe(self.queue, "ok" if not error else "failed", seconds)
        if error:
            pusher.metrics.failed[(self.queue, label)] += 1
        else:
            pusher.metrics.pushed[self.queue] += 1
        backoff = json.loads(subscription.get("backoff", "[1]")) or [1]
        delay = float(backoff[min(message.attempts, len(backoff)) - 1])
        try:
            where = await pusher.engine.pushed(self.queue, message.receipt, error[:MAX_ERROR], delay)
        except RestMQError as e:
            # The lease runs out and the message is pushed again: at-least-once.
            log.warn("push outcome of {key} not recorded ({error}); it comes back after its lease",
                     key=message.key, error=e.message)
            return
        log.debug("pushed {key} attempt={attempt} error={error} -> {where} in {ms} ms", key=message.key,
                  attempt=message.attempts, error=error, where=where, ms=round(seconds * 1000, 1))

    async def _post(self, url: str, headers: Headers, body: bytes, timeout: float) -> tuple[str, str]:
        """(label, error) of one POST: ("ok", "") on a 2xx; the response body is read and dropped.
        The whole exchange (connect, request, answer, its body) is bounded by ``timeout``."""
        pusher = self.pusher

        async def exchange() -> int:
            producer = FileBodyProducer(io.BytesIO(body))
            response = await pusher.agent.request(b"POST", url.encode("utf-8"), headers, producer)
            await drain(response)
            return int(response.code)

        attempt = defer.ensureDeferred(exchange())
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            attempt.cancel()

        timer = pusher.reactor.callLater(timeout, expire)
        try:
            code = await attempt
        except Exception:
            if not pusher.running:
                return "stopped", "restmq stopped while the request was in flight"
            if expired:
                return "timeout", f"timeout: no answer within {timeout:g} s"
            return reason_of(Failure())
        finally:
            if timer.active():
                timer.cancel()
        if 200 <= code < 300:
            return "ok", ""
        return f"http_{code // 100}xx", f"HTTP {code} from {url}"[:MAX_ERROR]


class _Drain(Protocol_):
    """Reads a response body and drops it; fires ``done`` when it has ended."""

    def __init__(self, done: defer.Deferred[None]) -> None:
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            if reason.check(ResponseDone, PotentialDataLoss):
                self.done.callback(None)
            else:
                self.done.errback(reason)


def drain(response: Any) -> defer.Deferred[None]:
    """Read ``response``'s body to its end, keeping nothing; cancelling it drops the connection."""
    protocol: _Drain

    def cancel(d: defer.Deferred[None]) -> None:
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.stopProducing()

    done: defer.Deferred[None] = defer.Deferred(cancel)
    protocol = _Drain(done)
    response.deliverBody(protocol)
    return done


async def first_of(waits: list[defer.Deferred[Any]]) -> None:
    """Wait until one of ``waits`` fires."""
    await defer.DeferredList(waits, fireOnOneCallback=True, fireOnOneErrback=True, consumeErrors=True)

