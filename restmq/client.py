"""Python clients for a RestMQ server over HTTP: :class:`RestMQ` (blocking) and :class:`TxRestMQ`
(Twisted, Deferreds).

Both speak the JSON protocol (``POST /queue`` with ``{"cmd": name, ...args}``) and share the
command methods (:class:`Commands`), the request body (:func:`request_body`) and the mapping of an
answer to a result or a :class:`~restmq.errors.RestMQError` subclass (:func:`result_of`), so they
behave the same::

    from restmq.client import RestMQ

    mq = RestMQ("http://127.0.0.1:8888")
    mq.add("jobs", {"n": 1})            # {"queue": "jobs", "value": {"n": 1}, "key": "jobs:1"}
    msg = mq.reserve("jobs", lease=60)  # raises restmq.errors.Empty when there is nothing
    mq.ack("jobs", msg["receipt"])
    for message in mq.subscribe("jobs"):  # COMET: each new message until the queue is purged
        ...

Arguments given as ``None`` are not sent (the server's defaults apply). Answers are the JSON
shapes of SPEC §2, as dicts and lists.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from restmq.errors import BackendUnavailable, RestMQError, from_code

__all__ = ["RestMQ", "TxRestMQ", "Subscription", "request_body", "result_of", "DEFAULT_URL"]

DEFAULT_URL = "http://127.0.0.1:8888"
JSON_TYPE = "application/json"


# -- shared by both clients ---------------------------------------------------------------------


def request_body(name: str, args: dict[str, Any]) -> bytes:
    """The JSON protocol body for command ``name``: ``{"cmd": name, ...}`` without ``None`` args."""
    body = {"cmd": name}
    body.update((k, v) for k, v in args.items() if v is not None)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def result_of(status: int, body: bytes) -> Any:
    """The command's result from an HTTP answer, or raise the RestMQError it carries.

    ``POST /queue`` answers a failed command with 200 and ``{"error", "code"}``; other failures
    (400 unreadable request, 503 Redis away, ...) carry the same body with their status.
    """
    try:
        answer = json.loads(body) if body.strip() else None
    except ValueError:
        answer = None
        if status == 200:
            raise RestMQError(f"the server answered something that is not JSON: {body[:200]!r}")
    if isinstance(answer, dict) and isinstance(answer.get("error"), str) and isinstance(answer.get("code"), str):
        fields = {k: v for k, v in answer.items() if k not in ("error", "code")}
        raise from_code(answer["code"], answer["error"], **fields)
    if status != 200:
        text = body[:200].decode("utf-8", "replace").strip()
        raise RestMQError(f"HTTP {status} from the server: {text}", status=status)
    return answer


def unreachable(url: str, error: Any) -> BackendUnavailable:
    """The error for a server that cannot be reached at all."""
    return BackendUnavailable(f"cannot reach RestMQ at {url}: {error}", url=url)


def _base(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path prefix)`` of a server URL."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"RestMQ URL must be http:// or https://, not {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname or "127.0.0.1", port, parts.path.rstrip("/")


class Commands:
    """The command methods, written once: each calls ``self.call(name, **args)``, which answers
    the result (:class:`RestMQ`) or a Deferred of it (:class:`TxRestMQ`)."""

    def call(self, name: str, **args: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def add(self, queue: str, value: Any, priority: int | None = None, ttl: float | None = None,
            delay: float | None = None, dedup: str | None = None) -> Any:
        """Add one message: ``{"queue", "value", "key"}``."""
        return self.call("add", queue=queue, value=value, priority=priority, ttl=ttl, delay=delay, dedup=dedup)

    def add_many(self, queue: str, messages: list[Any]) -> Any:
        """Add up to 1000 messages (values or ``{"value", priority, ttl, delay, dedup}``): ``{"keys"}``."""
        return self.call("add_many", queue=queue, messages=list(messages))

    def take(self, queue: str, count: int | None = None, wait: float | None = None) -> Any:
        """Remove the next message (raises Empty), or a list of up to ``count`` (maybe empty)."""
        return self.call("take", queue=queue, count=count, wait=wait)

    def reserve(self, queue: str, count: int | None = None, lease: float | None = None,
                wait: float | None = None) -> Any:
        """Lease the next message (with its ``receipt``; raises Empty), or a list when ``count``."""
        return self.call("reserve", queue=queue, count=count, lease=lease, wait=wait)

    def ack(self, queue: str, receipt: str | list[str]) -> Any:
        """Acknowledge reserved messages by receipt (one or a list): ``{"acked": n}``."""
        return self.call("ack", queue=queue, receipt=receipt)

    def nack(self, queue: str, receipt: str, delay: float | None = None, error: str | None = None) -> Any:
        """Give a reserved message back now or after ``delay``: ``{"nacked": n}``."""
        return self.call("nack", queue=queue, receipt=receipt, delay=delay, error=error)

    def touch(self, queue: str, receipt: str, lease: float | None = None) -> Any:
        """Extend a reservation's lease from now: ``{"lease_until"}``."""
        return self.call("touch", queue=queue, receipt=receipt, lease=lease)

    def peek(self, queue: str, count: int | None = None, state: str | None = None) -> Any:
        """Look without delivering (``state`` ready|reserved|delayed|dead); raises Empty without count."""
        return self.call("peek", queue=queue, count=count, state=state)

    def get(self, queue: str, key: str | None = None) -> Any:
        """The message with ``key``, or (without) the original soft get of the next message."""
        return self.call("get", queue=queue, key=key)

    def delete(self, queue: str, key: str) -> Any:
        """Delete one message by key (command ``del``): ``{"queue", "deleted", "key"}``."""
        return self.call("del", queue=queue, key=key)

    def purge(self, queue: str) -> Any:
        """Empty the queue and end its streams: ``{"queue", "status", "purged"}``."""
        return self.call("purge", queue=queue)

    def len(self, queue: str) -> Any:
        """The queue's counts: ``{"ready", "reserved", "delayed", "dead", ...}``."""
        return self.call("len", queue=queue)

    def list(self) -> Any:
        """Every queue with its lengths: ``{"queues": {...}, "count"}``."""
        return self.call("list")

    def stats(self, queue: str | None = None) -> Any:
        """Server statistics, or one queue's counters."""
        return self.call("stats", queue=queue)

    def state(self, queue: str | None = None) -> Any:
        """Whether a queue is running or paused."""
        return self.call("state", queue=queue)

    def pause(self, queue: str) -> Any:
        """Stop delivering from ``queue`` (adds still accepted): ``{"state"}``."""
        return self.call("pause", queue=queue)

    def resume(self, queue: str) -> Any:
        """Deliver again: ``{"state"}``."""
        return self.call("resume", queue=queue)

    def policy(self, queue: str, policy: str | None = None) -> Any:
        """Get, or set (``broadcast``/``roundrobin``), how streams share messages."""
        return self.call("policy", queue=queue, policy=policy)

    def config(self, queue: str, max_attempts: int | None = None, lease: float | None = None,
               dedup_window: float | None = None, max_length: int | None = None) -> Any:
        """A queue's settings; sets those given."""
        return self.call("config", queue=queue, max_attempts=max_attempts, lease=lease,
                         dedup_window=dedup_window, max_length=max_length)

    def redrive(self, queue: str, count: int | None = None) -> Any:
        """Move dead-letter messages back to the queue: ``{"moved": n}``."""
        return self.call("redrive", queue=queue, count=count)

    def health(self) -> Any:
        """Whether Redis answers and how safely it keeps data."""
        return self.call("health")


# -- blocking -----------------------------------------------------------------------------------


class RestMQ(Commands):
    """A blocking client over one keep-alive HTTP connection (re-opened when it breaks).

    Safe to share between threads (calls are serialized by a lock); open one per thread for
    parallel calls. Errors raise :class:`~restmq.errors.RestMQError` subclasses with the server's
    code; a server that cannot be reached raises ``BackendUnavailable``.
    """

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.scheme, self.host, self.port, self.prefix = _base(url)
        self.token = token
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def headers(self, content_type: str | None = JSON_TYPE) -> dict[str, str]:
        """The headers of every request: JSON, and the token when there is one."""
        headers = {"Accept": JSON_TYPE}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)

    def call(self, name: str, **args: Any) -> Any:
        """Run any command; answer its JSON result or raise its error."""
        body = request_body(name, args)
        wait = args.get("wait")
        timeout = self.timeout + (float(wait) if isinstance(wait, (int, float)) else 0.0)
        with self._lock:
            status, data = self._post(self.prefix + "/queue", body, timeout)
        return result_of(status, data)

    def _post(self, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        for attempt in (1, 2):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._connect(timeout)
            conn = self._conn
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                else:
                    conn.timeout = timeout
                conn.request("POST", path, body, self.headers())
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # A kept-alive connection the server closed meanwhile: try once on a new one.
                self.close()
                if reused and attempt == 1:
                    continue
                raise unreachable(self.url, e) from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise unreachable(self.url, e) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the kept-alive connection (the next call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RestMQ:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def subscribe(self, queue: str, mode: str | None = None) -> Subscription:
        """Follow ``GET /c/<queue>`` (COMET): an iterator of message dicts, ending when the server
        ends the stream (purge, shutdown). It is subscribed when this returns; ``close()`` it (or
        use it as a context manager) to leave early."""
        path = f"{self.prefix}/c/{quote(queue, safe='')}"
        if mode:
            path += f"?mode={quote(mode)}"
        conn = self._connect(self.timeout)
        try:
            conn.request("GET", path, headers=self.headers(None))
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise unreachable(self.url, e) from e
        if response.status != 200:
            data = response.read()
            conn.close()
            result_of(response.status, data)  # raises
            raise RestMQError(f"HTTP {response.status} for a stream")  # pragma: no cover
        if conn.sock is not None:
            conn.sock.settimeout(None)  # a stream may stay quiet for a long time
        return Subscription(conn, response)


class Subscription:
    """An open COMET stream: iterate it for message dicts; it ends when the server ends it."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn, self._response = conn, response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.messages()

    def messages(self) -> Iterator[dict[str, Any]]:
        """The messages as they arrive (blocking between them)."""
        try:
            while True:
                try:
                    line = self._response.readline()
                except (OSError, http.client.HTTPException, ValueError, AttributeError):
                    return  # closed by us or cut by the server
                if not line:
                    return
                line = line.strip()
                if line:
                    yield json.loads(line)
        finally:
            self.close()

    def close(self) -> None:
        """Leave the stream (the server unsubscribes when the connection closes)."""
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conn.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- Twisted ------------------------------------------------------------------------------------


class TxRestMQ(Commands):
    """The same command methods returning Deferreds, for Twisted programs (needs ``pip install
    treq``; it is imported on first use). Connections are pooled; ``close()`` drops them."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.url = url.rstrip("/")
        self.scheme, self.host, self.port, self.prefix = _base(url)
        self.token = token
        self.reactor = reactor
        self._http: Any = None
        self._pool: Any = None

    def _client(self) -> Any:
        if self._http is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            self._pool = HTTPConnectionPool(self.reactor, persistent=True)
            self._pool.retryAutomatically = False  # an add must not be sent twice behind our back
            self._http = HTTPClient(Agent(self.reactor, pool=self._pool))
        return self._http

    def _headers(self) -> dict[str, list[str]]:
        headers = {"Content-Type": [JSON_TYPE], "Accept": [JSON_TYPE]}
        if self.token:
            headers["Authorization"] = [f"Bearer {self.token}"]
        return headers

    def call(self, name: str, **args: Any) -> Any:
        """Run any command: a Deferred of its JSON result, or failing with its RestMQError."""
        from twisted.internet.error import ConnectError

        base = f"{self.scheme}://{self.host}:{self.port}{self.prefix}"
        d = self._client().post(base + "/queue", data=request_body(name, args), headers=self._headers())

        def answered(response: Any) -> Any:
            return response.content().addCallback(lambda body: result_of(response.code, body))

        def failed(failure: Any) -> Any:
            failure.trap(ConnectError)
            raise unreachable(self.url, failure.value)

        return d.addCallbacks(answered, failed)

    def close(self) -> Any:
        """Close pooled connections: a Deferred that fires when they are closed."""
        from twisted.internet import defer

        if self._pool is None:
            return defer.succeed(None)
        return self._pool.closeCachedConnections()
