"""The Redis the rest of RestMQ talks to: a private embedded server or an external one, as one service.

Usage::

    backend = RedisBackend(url_or_None, data_dir="./restmq-data")
    backend.setServiceParent(root)
    client = await backend.whenReady()   # txredisapi handler, raw bytes in and out

For an external server that is down at start, ``whenReady`` still fires (after ``wait`` seconds):
the pool keeps reconnecting in the background and every command waits for a connection until its
caller's timeout, so the service starts and answers ``backend_unavailable`` until Redis is back.
See :mod:`restmq.backend.connect` for what the client does while disconnected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq.backend.connect import connect, redis_facts
from restmq.backend.embedded import EmbeddedRedis, EmbeddedRedisError
from restmq.backend.latch import Latch
from restmq.backend.redisconf import RedisTarget, parse_redis_url

if TYPE_CHECKING:
    import txredisapi

log = Logger()

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "RedisBackend", "RedisTarget", "parse_redis_url"]

#: How long the facts query (version, persistence warnings) may take before we give up logging them.
FACTS_TIMEOUT = 5.0


class RedisBackend(MultiService):
    """Owns the connection pool (and, without a URL, the embedded server it connects to)."""

    def __init__(
        self,
        url: str | None,
        *,
        data_dir: str = "./restmq-data",
        binary: str | None = None,
        durability: str = "everysec",
        poolsize: int = 10,
        timeout: float = 1.0,
        wait: float = 3.0,
        reactor: Any = None,
    ) -> None:
        """Validate everything that can be validated without I/O; bad URLs raise BadRequest here."""
        super().__init__()
        self.poolsize = poolsize
        self.timeout = timeout
        self.wait = wait
        self._reactor = reactor
        self.server: EmbeddedRedis | None = None
        if url is None:
            self.server = EmbeddedRedis(
                data_dir, binary=binary, durability=durability, reactor=reactor
            )
            self.server.setServiceParent(self)
            self.url: str = self.server.url
            self.target: RedisTarget = parse_redis_url(self.url)
        else:
            self.target = parse_redis_url(url)
            self.url = url
        self.embedded: bool = self.server is not None
        self.client: txredisapi.ConnectionHandler | None = None
        self.facts: dict[str, Any] | None = None
        self._ready = Latch()
        self._connecting: Deferred[Any] | None = None
        self._facts: Deferred[Any] | None = None

    def whenReady(self) -> Deferred[txredisapi.ConnectionHandler]:
        """Fires with the txredisapi handler (``charset=None``: bytes) once the pool exists.

        Errbacks if the embedded server could not start, or Redis refused our password/db.
        """
        return self._ready.wait()

    def startService(self) -> None:
        """Start the embedded server (if any), then connect; the result goes to :meth:`whenReady`."""
        if self._ready.fired:
            self._ready = Latch()
        super().startService()
        self._connecting = ensureDeferred(self._connect())
        self._connecting.addBoth(self._ready.fire)

    async def _connect(self) -> Any:
        target = self.target
        if self.server is not None:
            url = await self.server.whenReady()
            target = parse_redis_url(url)
        client = await connect(
            target,
            poolsize=self.poolsize,
            reactor=self._reactor,
            timeout=self.timeout,
            wait=self.wait,
        )
        self.client = client
        self._facts = redis_facts(client)
        self._facts.addTimeout(FACTS_TIMEOUT, self._get_reactor())
        self._facts.addCallbacks(self._log_facts, self._facts_failed)
        return client

    def _get_reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            return reactor
        return self._reactor

    def _log_facts(self, facts: dict[str, Any]) -> None:
        """Tell the operator what they run on, and what about it could lose messages."""
        self.facts = facts
        log.info(
            "redis backend ready url={url} embedded={embedded} flavour={flavour} version={version} "
            "appendonly={appendonly} appendfsync={appendfsync}",
            url=self.target.display(),
            embedded=self.embedded,
            flavour=facts["flavour"],
            version=facts["version"],
            appendonly=facts["appendonly"],
            appendfsync=facts["appendfsync"],
        )
        for warning in facts["warnings"]:
            log.warn("redis backend warning: {warning}", warning=warning)

    def _facts_failed(self, failure: Failure) -> None:
        if not failure.check(defer.CancelledError, defer.TimeoutError):
            log.warn("could not read redis facts: {error}", error=failure.getErrorMessage())

    def stopService(self) -> Deferred[None]:
        """Close the pool first (no command in flight to a dying server), then stop the server."""
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        for pending in (self._connecting, self._facts):
            if pending is not None and not pending.called:
                pending.cancel()
        client, self.client = self.client, None
        if client is not None:
            try:
                await client.disconnect()
            except Exception as e:
                log.warn("error closing redis pool: {error}", error=str(e))
        await super().stopService()
