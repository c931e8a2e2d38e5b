"""The firing loop: fires the recurring schedules that are due, in every process.

Each process runs one (started and stopped with the engine, beside the sweeper). Every
``interval`` it asks the global due index which schedules are due by Redis's clock and fires each
(see :meth:`ScheduleStore.fire`: the fire script adds a tick's message only if the schedule's
record is unchanged, so processes racing for one tick add one message). Every ``full_pass`` it
re-reads every schedule's record into the due index, which repairs an entry lost in a race or a
crash. The clock is injected (``IReactorTime``) so tests drive it with ``task.Clock``.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from restmq.engine.periodic import Periodic
from restmq.errors import RestMQError

log = Logger()

#: Schedules fired per pass at most (more wait for the next pass, ``interval`` later).
BATCH = 100


class Firing(Protocol):
    """What the loop needs of the schedule store."""

    def now_ms(self, seconds: float) -> int: ...

    async def due(self, now_ms: int, limit: int) -> list[tuple[str, int]]: ...

    async def fire(self, name: str, now_ms: int, seen: int = -1) -> str: ...

    async def repair(self) -> int: ...


class Firer(Periodic):
    """Fires due schedules every ``interval`` seconds; repairs the due index every ``full_pass``."""

    def __init__(
        self, store: Firing, clock: IReactorTime, *, interval: float = 0.2, full_pass: float = 30.0
    ) -> None:
        super().__init__(clock, interval)
        self.store, self.full_pass = store, full_pass
        self._last_full: float | None = None  # the first pass is a full one: a restart repairs
        #: What the fires of this process came to: fired, stale, full, early, gone, failed.
        self.outcomes: Counter[str] = Counter()

    async def once(self) -> Counter[str]:
        """One pass: fire what is due now (after a full repair when one is due); answers the
        outcomes of this pass. Failures are logged, never raised: the next pass tries again."""
        outcomes: Counter[str] = Counter()
        try:
            seconds = self.clock.seconds()
            if self._last_full is None or seconds - self._last_full >= self.full_pass:
                self._last_full = seconds
                await self.store.repair()
            now = self.store.now_ms(seconds)
            for name, seen in await self.store.due(now, BATCH):
                try:
                    outcomes[await self.store.fire(name, now, seen)] += 1
                except RestMQError as e:
                    outcomes["failed"] += 1
                    log.warn("schedule {name} not fired: {error}", name=name, error=e.message)
                except Exception:  # one broken record must not stop the others
                    outcomes["failed"] += 1
                    log.failure("schedule {name} not fired", name=name)
        except RestMQError as e:
            log.debug("schedules not looked at: {error}", error=e.message)
        except Exception:
            log.failure("firing schedules failed")
        self.outcomes.update(outcomes)
        return outcomes
