"""A pass of work run every ``interval`` seconds on an injected clock, never two at once.

The sweeper (maintenance.py) and the schedule firing loop (firing.py) are both this: a pass that
talks to Redis, skipped while the previous one is still at work, and waited for on stop.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime


class Periodic:
    """Runs :meth:`once` every ``interval`` seconds of ``clock`` (the first one after a whole
    interval), skipping a beat while a pass is still running."""

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self.clock, self.interval = clock, interval
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = clock
        self._running: defer.Deferred[Any] | None = None

    def start(self) -> None:
        self._loop.start(self.interval, now=False)

    async def stop(self) -> None:
        """Stop the loop and wait for a pass under way."""
        if self._loop.running:
            self._loop.stop()
        if self._running is not None and not self._running.called:
            await self._running

    def _tick(self) -> None:
        if self._running is not None and not self._running.called:
            return  # the previous pass is still at work (a large backlog or a slow Redis)
        self._running = defer.ensureDeferred(self.once())

    async def once(self) -> Any:  # pragma: no cover - every loop overrides it
        raise NotImplementedError
