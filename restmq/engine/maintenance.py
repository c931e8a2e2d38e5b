"""The sweeper: brings idle queues up to date, so an expired lease or a due delay needs no visitor.

Scripts settle a queue whenever it is used; this covers the queues nobody touches. Each process
runs one: every ``interval`` it asks Redis which queues have a timer due (the global ``timers``
ZSET, kept by the engine after each script) and settles them; every ``full_pass`` it settles every
registered queue, which re-arms any timer lost in a race. Several processes sweeping the same Redis
would be harmless (settling is idempotent) but wasteful, so each bucket of timers (one on a single
Redis; a cluster splits the timers and the registry into several) is swept by the one process
holding its short lease, whatever the number of processes and ``--workers`` (see due.lua and
QueueEngine.due_queues), the full pass included.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from restmq.engine.periodic import Periodic
from restmq.errors import RestMQError

log = Logger()

#: Queues settled per tick at most (more wait for the next tick, 100 ms later).
BATCH = 100


class Settler(Protocol):
    """What the sweeper needs of the engine."""

    async def swept_queues(self) -> list[str]: ...

    async def due_queues(self, limit: int) -> list[str]: ...

    async def settle(self, queue: str) -> None: ...


class Sweeper(Periodic):
    """Settles queues whose timers are due, and all queues now and then."""

    def __init__(
        self, engine: Settler, clock: IReactorTime, *, interval: float = 0.1, full_pass: float = 30.0
    ) -> None:
        super().__init__(clock, interval)
        self.engine = engine
        self.full_pass = full_pass
        self._last_full = clock.seconds()

    async def once(self) -> int:
        return await self.sweep()

    async def sweep(self) -> int:
        """One pass: settle every queue that has something due; answers how many were settled."""
        try:
            full = self.clock.seconds() - self._last_full >= self.full_pass
            if full:
                self._last_full = self.clock.seconds()
                queues = await self.engine.swept_queues()
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
