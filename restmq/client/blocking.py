"""The blocking HTTP client (:class:`RestMQ`) and its COMET stream (:class:`Subscription`)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from restmq.client.wire import DEFAULT_URL, JSON_TYPE, Commands, _base, request_body, result_of, unreachable
from restmq.errors import RestMQError

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

    def call(self, name: str, /, **args: Any) -> Any:
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
