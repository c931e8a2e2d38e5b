"""The Twisted client: the same command methods returning Deferreds (treq, imported on first use)."""

from __future__ import annotations

from typing import Any

from restmq.client.wire import DEFAULT_URL, JSON_TYPE, Commands, _base, request_body, result_of, unreachable

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

    def call(self, name: str, /, **args: Any) -> Any:
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
