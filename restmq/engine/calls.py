"""Redis calls that never take effect after their caller stopped waiting.

A stalled Redis (stopped, swapping, stuck in a long fork) keeps the commands already in its socket
buffer and runs them when it wakes. Without care, a take answered "timed out" would still remove
its messages and an add answered "timed out" would still store its message, so a client that
retries duplicates it. Two mechanisms close that:

1. Every script carries a deadline on the Redis server's own clock (:class:`RedisClock` estimates
   the local-to-Redis offset) set a safety margin before the caller stops waiting; a script that
   starts later changes nothing and answers ``DEADLINE``.
2. A reply that still arrives after the caller gave up (Redis ran the script, then stalled before
   its answer left) is handed to a ``late`` callback, which undoes the call (see
   ``QueueEngine._undo``).

So "Redis did not answer in time" means "nothing was applied". Only a connection that dies after
the call was sent leaves the outcome unknown, and the error says so.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq.errors import BackendUnavailable

log = Logger()

#: What txredisapi says when a connection died with replies outstanding: those calls were sent.
LOST_AFTER_SENDING = "Lost connection"

#: The error a script answers when it starts after its deadline (see ``scripts.assemble``).
DEADLINE_REFUSED = "DEADLINE"

#: How often the clock offset is measured again (a failover may bring another host's clock).
RESYNC_EVERY = 10.0


def margin(timeout: float) -> float:
    """Seconds between a script's deadline and the moment its caller stops waiting: room for the
    reply to travel back and for a busy reactor to read it."""
    return min(max(timeout * 0.2, 0.02), 0.5)


class RedisClock:
    """The offset between this host's clock and the Redis server's (``TIME``), so that deadlines
    can be written on Redis's clock. The sample with the shortest round trip wins: its error is
    at most half that round trip, which is added to the margin."""

    def __init__(self) -> None:
        self.offset: float | None = None
        self.uncertainty = 0.0
        self.measured_at = 0.0

    async def sync(self, redis: Any) -> None:
        """Measure the offset once (one ``TIME`` round trip)."""
        before = time.time()
        seconds, micros = await redis.execute_command("TIME")
        after = time.time()
        rtt = after - before
        remote = int(seconds) + int(micros) / 1e6
        stale = after - self.measured_at > 6 * RESYNC_EVERY
        if self.offset is None or stale or rtt / 2 <= self.uncertainty * 2:
            self.offset = remote - (before + after) / 2
            self.uncertainty = rtt / 2
            self.measured_at = after

    def forget(self) -> None:
        """A deadline was refused while its caller still waited: the offset is wrong (another
        Redis after a failover, or the clock stepped); measure again before the next call."""
        self.offset = None

    def deadline(self, budget: float) -> int:
        """The Redis time (ms) ``budget`` seconds from now, less the measurement's uncertainty."""
        assert self.offset is not None
        return int((time.time() + self.offset + budget - self.uncertainty) * 1000)


class Progress:
    """How far a call got before its caller stopped waiting: a replicated write whose script
    answered but whose ``WAIT`` did not is applied, and its timeout must say so."""

    __slots__ = ("applied",)

    def __init__(self) -> None:
        self.applied = False


class _Deadline:
    """One bounded call's place in a :class:`Deadlines` line: when it expires, and what to call
    then (None once the call settled: the sweep just drops it)."""

    __slots__ = ("at", "expire")

    def __init__(self, at: float, expire: Callable[[], None]) -> None:
        self.at = at
        self.expire: Callable[[], None] | None = expire


class _Line:
    """The calls of one timeout, in the order they started, which is the order they expire in:
    a FIFO and one timer set for the oldest call still waiting."""

    __slots__ = ("clock", "timeout", "waiting", "timer")

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self.clock, self.timeout = clock, timeout
        self.waiting: deque[_Deadline] = deque()
        self.timer: Any = None

    def add(self, expire: Callable[[], None]) -> _Deadline:
        entry = _Deadline(self.clock.seconds() + self.timeout, expire)
        self.waiting.append(entry)
        if self.timer is None:
            self.timer = self.clock.callLater(self.timeout, self.sweep)
        return entry

    def sweep(self) -> None:
        """Expire every call whose time has come, drop the settled ones, and set the timer for the
        oldest call still waiting (if any)."""
        self.timer = None
        now = self.clock.seconds()
        waiting = self.waiting
        while waiting:
            entry = waiting[0]
            expire = entry.expire
            if expire is not None and entry.at > now:
                break
            waiting.popleft()
            if expire is not None:
                entry.expire = None
                try:
                    expire()
                except Exception:
                    log.failure("expiring a redis call failed")
        if waiting:
            self.timer = self.clock.callLater(max(waiting[0].at - now, 0.0), self.sweep)


class Deadlines:
    """The timers of every bounded call of one engine: instead of a ``callLater`` per Redis call
    (created, then cancelled when the reply comes: a few percent of a request's cost), calls of
    one timeout wait in one FIFO with one timer, which fires about once per timeout under
    steady load and expires exactly the calls that are due."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._lines: dict[float, _Line] = {}

    def add(self, timeout: float, expire: Callable[[], None]) -> _Deadline:
        """Call ``expire`` in ``timeout`` seconds unless the returned entry's ``expire`` is set to
        None first (the call settled or was cancelled)."""
        line = self._lines.get(timeout)
        if line is None:
            line = self._lines[timeout] = _Line(self.clock, timeout)
        return line.add(expire)


def bounded(
    work: defer.Deferred[Any],
    timeout: float,
    clock: IReactorTime,
    *,
    late: Callable[[Any], None] | None = None,
    progress: Progress | None = None,
    deadlines: Deadlines | None = None,
) -> defer.Deferred[Any]:
    """``work``'s outcome if it comes within ``timeout`` seconds, else ``backend_unavailable``.

    Unlike ``addTimeout`` this does not cancel ``work``: the request is on the wire and its reply
    will come. When it comes after the caller gave up (timed out, or cancelled because the client
    went away), a successful reply goes to ``late`` so that its effect can be undone. The timer is
    ``deadlines``' shared one (see :class:`Deadlines`); without it, a ``callLater`` of its own.
    """

    def cancelled(_: defer.Deferred[Any]) -> None:
        entry.expire = None

    outer: defer.Deferred[Any] = defer.Deferred(cancelled)

    def expire() -> None:
        if outer.called:
            return
        if progress is not None and progress.applied:
            outer.errback(BackendUnavailable(
                f"the write was applied, but its replication was not confirmed within {timeout:g} s: "
                "it may not survive a failover",
                applied="unknown",
            ))
            return
        outer.errback(BackendUnavailable(
            f"redis did not answer within {timeout:g} s; nothing was applied (safe to retry)",
            applied=False,
        ))

    if deadlines is None:
        deadlines = Deadlines(clock)
    entry = deadlines.add(timeout, expire)

    def settled(result: Any) -> None:
        entry.expire = None
        if not outer.called:
            outer.callback(result)  # a Failure errbacks
        elif not isinstance(result, Failure) and late is not None:
            late(result)
        elif isinstance(result, Failure) and not result.check(txredisapi.ResponseError, txredisapi.ConnectionError):
            log.failure("redis call failed after its caller gave up", result)

    work.addBoth(settled)
    return outer


def redis_failed(failure: Failure, timeout: float) -> Failure:
    """Map a Redis client failure to ``backend_unavailable`` with what is known of the outcome."""
    if failure.check(txredisapi.ConnectionError):
        text = str(failure.value)
        if LOST_AFTER_SENDING in text:
            raise BackendUnavailable(
                "the connection to redis was lost after the call was sent; the outcome is unknown "
                "(it may or may not have been applied)",
                applied="unknown",
            )
        raise BackendUnavailable(f"redis is unreachable: {text}; nothing was applied", applied=False)
    if failure.check(ConnectionError):
        raise BackendUnavailable(f"redis is unreachable: {failure.value}; nothing was applied", applied=False)
    if failure.check(txredisapi.ResponseError) and str(failure.value).startswith(DEADLINE_REFUSED):
        raise BackendUnavailable(
            f"redis ran the call after its deadline ({timeout:g} s), so nothing was applied (safe to retry)",
            applied=False,
        )
    return failure
