"""The standard library's ``queue.Queue`` interface over one RestMQ queue, at-least-once."""

from __future__ import annotations

import queue as stdqueue
import threading
import time
from collections import deque
from typing import Any

from restmq.client.blocking import RestMQ
from restmq.client.wire import DEFAULT_URL
from restmq.errors import BackendUnavailable, Empty, QueueFull, RestMQError, StaleReceipt

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
