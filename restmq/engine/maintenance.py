"""The sweeper: brings idle queues up to date, so an expired lease or a due delay needs no visitor.

Scripts settle a queue whenever it is used; this covers the queues nobody touches. Each process
runs one: every ``interval`` it asks Redis which queues have a timer due (the global ``timers``
ZSET, kept by the engine after each script) and settles them; every ``full_pass`` it settles every
registered queue, which re-arms any timer lost in a race. Several processes sweeping the same Redis
is harmless: settling is idempotent; ``--workers`` still keeps it to one at a time with a short
Redis lease (:attr:`Sweeper.lease`, see restmq/workers/table.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from restmq.errors import RestMQError

log = Logger()

#: Queues settled per tick at most (more wait for the next tick, 100 ms later).
BATCH = 100


class Settler(Protocol):
    """What the sweeper needs of the engine."""

    async def queues(self) -> list[str]: ...

    async def due_queues(self, limit: int) -> list[str]: ...

    async def settle(self, queue: str) -> None: ...


class Sweeper:
    """Settles queues whose timers are due, and all queues now and then."""

    def __init__(
        self, engine: Settler, clock: IReactorTime, *, interval: float = 0.1, full_pass: float = 30.0
    ) -> None:
        self.engine, self.clock = engine, clock
        self.interval, self.full_pass = interval, full_pass
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = clock
        self._last_full = clock.seconds()
        self._running: defer.Deferred[int] | None = None
        #: When set (``--workers``): asked before each pass; only the process it answers True sweeps.
        self.lease: Callable[[], Awaitable[bool]] | None = None

    def start(self) -> None:
        self._loop.start(self.interval, now=False)

    async def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        if self._running is not None and not self._running.called:
            await self._running

    def _tick(self) -> None:
        if self._running is not None and not self._running.called:
            return  # the previous tick is still at work (a large backlog or a slow Redis)
        self._running = defer.ensureDeferred(self.sweep())

    async def sweep(self) -> int:
        """One pass: settle every queue that has something due; answers how many were settled."""
        try:
            if self.lease is not None and not await self.lease():
                return 0
            full = self.clock.seconds() - self._last_full >= self.full_pass
            if full:
                self._last_full = self.clock.seconds()
                queues = await self.engine.queues()
            else:
                queues = await self.engine.due_queues(BATCH)
            for queue in queues:
                await self.engine.settle(queue)
            return len(queues)
        except RestMQError as e:
            log.debug("sweep skipped: {error}", error=e.message)
        except Exception:
            log.failure("sweep failed")
        return 0
