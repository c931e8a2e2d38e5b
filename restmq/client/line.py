"""ZenQueue's ``QueueClient`` API over RestMQ's line protocol."""

from __future__ import annotations

import socket
import threading
from typing import Any

from restmq.client.queue import _deadline, _left, _not_null, _poll_wait
from restmq.client.wire import request_body, result_of
from restmq.commands import MAX_COUNT
from restmq.errors import BackendUnavailable, RestMQError

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

    def call(self, name: str, /, **args: Any) -> Any:
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
