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

Two more APIs for code written against other queues: :class:`Queue`, the standard library's
``queue.Queue`` interface over one RestMQ queue with at-least-once delivery (works across
processes), and :class:`QueueClient`, ZenQueue's ``push``/``pull`` client over the line protocol.
"""

from __future__ import annotations

import http.client
import json
import queue as stdqueue
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from restmq.commands import MAX_COUNT
from restmq.errors import BackendUnavailable, Empty, QueueFull, RestMQError, StaleReceipt, from_code

__all__ = [
    "RestMQ", "TxRestMQ", "Subscription", "Queue", "QueueClient", "Timeout", "request_body", "result_of",
    "DEFAULT_URL",
]

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
            delay: float | None = None, dedup: str | None = None, unique: bool | None = None) -> Any:
        """Add one message: ``{"queue", "value", "key"}`` (plus ``"duplicate": true`` when a
        ``dedup`` or ``unique`` hit added nothing)."""
        return self.call("add", queue=queue, value=value, priority=priority, ttl=ttl, delay=delay, dedup=dedup,
                         unique=unique)

    def find(self, queue: str, value: Any) -> Any:
        """The key of the held ``unique`` message with this value: ``{"queue", "key"}`` (key None if none)."""
        return self.call("find", queue=queue, value=value)

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


# -- queue.Queue over RestMQ --------------------------------------------------------------------

#: The longest single long poll of a blocking get or pull (the server allows up to 60 s).
LONG_POLL = 20.0


def _deadline(block: bool, timeout: float | None) -> float | None:
    """When a blocking call gives up (monotonic clock): None for never, now when not blocking."""
    if not block:
        return time.monotonic()
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (0.0 once past), None when there is none."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _not_null(value: Any) -> None:
    """RestMQ refuses null as a message value (it reads as a missing value): say so before sending."""
    if value is None:
        raise ValueError("None cannot be queued: a RestMQ message value is any JSON value but null")


def _poll_wait(left: float | None) -> float | None:
    """The ``wait`` of the next long poll: the time left, at most :data:`LONG_POLL`; None for 0."""
    wait = LONG_POLL if left is None else min(left, LONG_POLL)
    return wait or None


class Queue:
    """The standard library's ``queue.Queue`` interface over the RestMQ queue ``name``.

    Delivery is at-least-once, across processes: :meth:`get` *reserves* the next message for
    ``lease`` seconds and :meth:`task_done` acks the oldest item this object got and has not acked
    yet. An item whose consumer dies before ``task_done`` comes back to the queue when its lease
    ends, for another consumer (so one item can be processed twice; make the work idempotent). While
    a consumer holds an item, a background thread touches its lease every ``lease / 3`` seconds, so
    a slow task does not lose it (``keepalive=False`` turns that off: then finish within ``lease``).

    ``put`` raises ``queue.Full`` when the queue's ``max_length`` setting (``config``) is reached
    (after waiting, when ``block``), ``get`` raises ``queue.Empty``. Items are any JSON value but
    null (``put(None)`` raises ValueError: the server refuses a null value).
    :meth:`join` waits until the server-side queue holds nothing ready, delayed or reserved, so
    every item put by anyone has been acked (dead letters do not count). ``qsize`` counts ready and
    delayed items. Other failures raise :class:`~restmq.errors.RestMQError` subclasses.

    Thread-safe: each thread gets its own HTTP connection (http.client connections are not
    thread-safe, and a blocking ``get`` must not stall ``put`` from another thread or the lease
    keeper). ``close()`` stops the keeper and closes the connections; items still held come back
    after their lease.
    """

    def __init__(self, name: str, url: str = DEFAULT_URL, token: str | None = None, lease: float = 30.0,
                 *, keepalive: bool = True, timeout: float = 30.0) -> None:
        if not lease > 0:
            raise ValueError("lease must be a positive number of seconds")
        self.name, self.url, self.token = name, url, token
        self.lease, self.keepalive, self.timeout = float(lease), keepalive, timeout
        self._local = threading.local()
        self._lock = threading.Lock()  # guards what follows
        self._clients: list[RestMQ] = []
        self._held: deque[str] = deque()  # receipts of items got and not task_done, oldest first
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def _client(self) -> RestMQ:
        client: RestMQ | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = RestMQ(self.url, self.token, self.timeout)
            with self._lock:
                self._clients.append(client)
        return client

    # -- queue.Queue --------------------------------------------------------------------------

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``. A full queue (its ``max_length``) is retried until ``timeout`` (forever
        when None) when ``block``; then, or at once when not blocking, ``queue.Full``."""
        _not_null(item)
        deadline = _deadline(block, timeout)
        pause = 0.01
        while True:
            try:
                self._client().add(self.name, item)
                return
            except QueueFull:
                left = _left(deadline)
                if left == 0.0:
                    raise stdqueue.Full from None
                time.sleep(pause if left is None else min(pause, left))
                pause = min(pause * 2, 0.5)

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Reserve the next item and answer its value; call :meth:`task_done` when it is
        processed. Blocks (by long polls) until there is one, at most ``timeout`` seconds (forever
        when None); then, or at once when not blocking, ``queue.Empty``."""
        deadline = _deadline(block, timeout)
        client = self._client()
        while True:
            try:
                message = client.reserve(self.name, lease=self.lease, wait=_poll_wait(_left(deadline)))
            except Empty:
                if _left(deadline) == 0.0:
                    raise stdqueue.Empty from None
                continue
            self._hold(message["receipt"])
            return message["value"]

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(block=False)

    def task_done(self) -> None:
        """Ack the oldest item got and not yet done: it is finished and deleted. ``ValueError``
        when there is none (as ``queue.Queue``); ``StaleReceipt`` when its lease ran out and it
        was delivered again (it will be processed again)."""
        with self._lock:
            if not self._held:
                raise ValueError("task_done() called too many times")
            receipt = self._held.popleft()
        try:
            self._client().ack(self.name, receipt)
        except BackendUnavailable:
            with self._lock:
                self._held.appendleft(receipt)  # still ours until the lease ends: let a retry ack it
            raise

    def join(self, timeout: float | None = None) -> None:
        """Block until the queue holds nothing ready, delayed or reserved: everything put has been
        acked. ``timeout`` (an addition to queue.Queue's signature) raises ``TimeoutError``."""
        deadline = _deadline(True, timeout)
        while True:
            counts = self._client().len(self.name)
            if counts["ready"] + counts["delayed"] + counts["reserved"] == 0:
                return
            if _left(deadline) == 0.0:
                raise TimeoutError(f"queue {self.name} still holds unfinished items")
            time.sleep(0.05)

    def qsize(self) -> int:
        """Items waiting to be got: ready and delayed (reserved ones are being worked on)."""
        counts = self._client().len(self.name)
        return int(counts["ready"] + counts["delayed"])

    def empty(self) -> bool:
        """Whether :meth:`qsize` is 0 (by the time you act on it, it may not be)."""
        return self.qsize() == 0

    @property
    def maxsize(self) -> int:
        """The queue's ``max_length`` setting (0: no limit), as queue.Queue's ``maxsize``."""
        return int(self._client().config(self.name)["max_length"])

    def full(self) -> bool:
        """Whether an add would be refused now: the queue holds ``max_length`` items (ready,
        delayed and reserved, as the server counts them)."""
        limit = self.maxsize
        if limit <= 0:
            return False
        counts = self._client().len(self.name)
        return bool(counts["ready"] + counts["delayed"] + counts["reserved"] >= limit)

    # -- leases -------------------------------------------------------------------------------

    def _hold(self, receipt: str) -> None:
        with self._lock:
            self._held.append(receipt)
            if self.keepalive and self._keeper is None and not self._stop.is_set():
                name = f"restmq-lease-{self.name}"
                self._keeper = threading.Thread(target=self._keep, name=name, daemon=True)
                self._keeper.start()

    def _keep(self) -> None:
        """Touch the lease of every held item every ``lease / 3`` s, on a connection of its own."""
        client = RestMQ(self.url, self.token, self.timeout)
        try:
            while not self._stop.wait(max(self.lease / 3, 0.02)):
                with self._lock:
                    receipts = list(self._held)
                for receipt in receipts:
                    try:
                        client.touch(self.name, receipt, lease=self.lease)
                    except StaleReceipt:
                        pass  # acked meanwhile, or lost already: task_done says so
                    except RestMQError:
                        break  # server away: try again next round
        finally:
            client.close()

    def close(self) -> None:
        """Stop the lease keeper and close the connections (held items come back after their lease)."""
        self._stop.set()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(self.timeout)
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- ZenQueue's client over the line protocol ------------------------------------------------------


class Timeout(RestMQError, TimeoutError):
    """Nothing to pull within the timeout (ZenQueue's ``Timeout``). Both a RestMQError (so ``except
    RestMQError`` catches every failure of these clients) and a builtin ``TimeoutError``."""

    code = "timeout"


class QueueClient:
    """ZenQueue's ``QueueClient`` API on one RestMQ queue (``queue``, default ``zenqueue``) over the
    line protocol (``--line``, port 8889): one TCP connection, one JSON line per request.

    ``push(value)``, ``push_many(*values)``, ``pull(timeout=None)``, ``pull_many(n, timeout=None)``
    with ZenQueue's semantics: ``timeout=None`` blocks, ``0`` does not wait; when nothing comes
    within the timeout, :class:`Timeout` is raised; ``pull_many`` returns what it got when a later
    pull times out (a partial result), and ``n=None`` pulls everything there is. Pulls are
    ``take``: at-most-once, like ZenQueue (use :class:`Queue` for at-least-once). Values are any
    JSON value but null. Calls are serialized by a lock (a blocking pull holds the connection):
    open one client per thread for parallel pulls. Server errors raise RestMQError subclasses; a
    connection that fails raises ``BackendUnavailable`` and the next call reconnects.
    """

    Timeout = Timeout

    def __init__(self, host: str = "127.0.0.1", port: int = 8889, token: str | None = None, *,
                 queue: str = "zenqueue", timeout: float = 30.0) -> None:
        self.host, self.port, self.token, self.queue, self.timeout = host, port, token, queue, timeout
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._lock = threading.Lock()

    # -- the connection -----------------------------------------------------------------------

    def _unreachable(self, error: Any) -> BackendUnavailable:
        self._drop()
        return BackendUnavailable(f"line protocol at {self.host}:{self.port}: {error}",
                                  host=self.host, port=self.port)

    def _exchange(self, line: bytes, timeout: float) -> Any:
        """Send one request line and read its answer line (the caller holds the lock)."""
        if self._sock is None:
            try:
                self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except OSError as e:
                raise self._unreachable(e) from e
            self._file = self._sock.makefile("rb")
            if self.token:
                self._exchange(f"auth {self.token}\n".encode(), self.timeout)
        assert self._sock is not None
        try:
            self._sock.settimeout(timeout)
            self._sock.sendall(line)
            answer = self._file.readline()
        except OSError as e:
            raise self._unreachable(e) from e
        if not answer.endswith(b"\n"):
            raise self._unreachable("the server closed the connection")
        try:
            return result_of(200, answer)
        except RestMQError as e:
            if e.code == "unauthorized":
                self._drop()
            raise

    def call(self, name: str, **args: Any) -> Any:
        """Run any command on the line protocol; answer its JSON result or raise its error."""
        wait = args.get("wait")
        line = request_body(name, args) + b"\n"
        with self._lock:
            return self._exchange(line, self.timeout + (float(wait) if wait else 0.0))

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            self._file.close()
            sock.close()

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> QueueClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- ZenQueue's API -----------------------------------------------------------------------

    def push(self, value: Any) -> str:
        """Add one value; answers its key."""
        _not_null(value)
        return str(self.call("add", queue=self.queue, value=value)["key"])

    def push_many(self, *values: Any) -> list[str]:
        """Add values in order, 1000 per request (each batch is atomic); answers their keys."""
        for value in values:
            _not_null(value)
        keys: list[str] = []
        for start in range(0, len(values), MAX_COUNT):
            batch = [{"value": value} for value in values[start:start + MAX_COUNT]]  # dicts stay values
            keys.extend(self.call("add_many", queue=self.queue, messages=batch)["keys"])
        return keys

    def _take(self, count: int, timeout: float | None) -> list[Any]:
        """Up to ``count`` values, as soon as there is at least one, waiting up to ``timeout``."""
        deadline = _deadline(True, timeout)
        while True:
            messages = self.call("take", queue=self.queue, count=count, wait=_poll_wait(_left(deadline)))
            if messages or _left(deadline) == 0.0:
                return [m["value"] for m in messages]

    def pull(self, timeout: float | None = None) -> Any:
        """Take the next value, waiting up to ``timeout`` (forever when None); else :class:`Timeout`."""
        values = self._take(1, timeout)
        if not values:
            raise Timeout(f"nothing to pull from {self.queue} within {timeout:g} s", queue=self.queue)
        return values[0]

    def pull_many(self, n: int | None, timeout: float | None = None) -> list[Any]:
        """Take ``n`` values (``None``: all there are), each wait up to ``timeout``: :class:`Timeout`
        when the first finds nothing, what was got when a later one does."""
        if n is None and timeout is None:
            raise ValueError("pull_many(None) needs a timeout: without one it would never return")
        if n is not None and n < 0:
            raise ValueError("n must be None or a non-negative number of values")
        values: list[Any] = []
        while n is None or len(values) < n:
            want = MAX_COUNT if n is None else min(n - len(values), MAX_COUNT)
            got = self._take(want, timeout)
            if not got:
                if not values:
                    raise Timeout(f"nothing to pull from {self.queue} within {timeout:g} s", queue=self.queue)
                break
            values.extend(got)
        return values


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
