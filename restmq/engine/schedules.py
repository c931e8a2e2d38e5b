"""Recurring schedules in Redis: where each one is kept, and the one step that fires a tick.

The truth about a schedule (its definition, next tick, last fire) is one record in its target
queue's ``schedules`` hash, under that queue's hash tag, so that a fire is one script on one
slot (lua/sched.lua): it adds the message and moves the record on only if the record is still
exactly the one the firer read, so each tick adds one message however many processes try.

Two global indexes, written by separate idempotent commands (keys.py), let a process find the
schedules: ``SCHEDULES`` (name -> queue: the authority on which queue holds a schedule; a
record in any other queue is ignored) and ``SCHEDULES_DUE`` (name -> next tick, what the firing
loops poll). The due index may lag the truth; :meth:`ScheduleStore.fire` repairs an entry that is
early and :meth:`ScheduleStore.repair` (the loop's full pass) re-reads every record.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from twisted.logger import Logger

from restmq.commands import PRIORITY
from restmq.engine import keys as K
from restmq.engine.calls import RedisClock
from restmq.engine.scripts import Scripts, send
from restmq.model import encode_value
from restmq.parallel import gather
from restmq.recurrence import Schedule

log = Logger()


class Engine(Protocol):
    """What the store uses of :class:`restmq.engine.core.QueueEngine` (which creates it)."""

    redis: Any
    scripts: Scripts
    redis_clock: RedisClock
    late_calls: Counter[str]
    max_queues: int
    _registered: dict[str, float]

    def _bounded(self, work: Any, late: Callable[[Any], None] | None = None) -> Any: ...

    def _script(self, name: str, queue: str, args: list[Any], late: Callable[[list[Any]], None] | None = None, *,
                keys: list[str] | None = None, raw: bool = False) -> Any: ...

    def _register(self, queue: str) -> Any: ...

    async def _check_new_queue(self, queue: str) -> None: ...


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class ScheduleStore:
    """Schedule operations on the engine's Redis; every script goes through ``QueueEngine._script``
    (deadline on Redis's clock, late replies handled), global index writes are plain commands."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def now_ms(self, seconds: float) -> int:
        """``seconds`` on a local clock as ms on Redis's clock: every process then agrees on
        which tick is due (the offset is 0 until it is first measured)."""
        return int((seconds + (self.engine.redis_clock.offset or 0.0)) * 1000)

    def _send(self, *command: Any) -> Any:
        return self.engine._bounded(send(self.engine.redis, *command))

    def _undo(self, queue: str, name: str, what: str) -> Any:
        """The late handler of a set or del: the caller was told nothing happened, so put the
        record back as it was, unless something else has changed it since."""

        def late(reply: list[Any]) -> None:
            written = reply[2] if what == "set" else b""
            self.engine.late_calls["sched"] += 1
            qk = K.for_queue(queue)
            call = self.engine.scripts.call(
                self.engine.redis, "sched", qk.pick(self.engine.scripts.keys["sched"]),
                [qk.channel, "undo", name, written, reply[1]],
            )
            call.addCallbacks(
                lambda r: log.warn("redis ran schedule {what} of {name} after its caller gave up; "
                                   "undone={undone}", what=what, name=name, undone=int(r[1])),
                lambda f: log.error("undoing a late schedule {what} of {name} failed: {error}",
                                    what=what, name=name, error=f.value),
            )

        return late

    async def queue_of(self, name: str) -> str | None:
        """The queue that holds schedule ``name`` (the name index), or None."""
        found = await self._send(b"HGET", K.SCHEDULES, name)
        return None if found is None else _text(found)

    async def put(self, schedule: Schedule) -> Schedule:
        """Create or replace ``schedule`` (its ``next_ms`` already computed); a replaced one keeps
        its last fire and count, and moving it to another queue removes it from the old one."""
        if self.engine.max_queues and schedule.queue not in self.engine._registered:
            await self.engine._check_new_queue(schedule.queue)  # --max-queues, as an add would
        old = await self.queue_of(schedule.name)
        if schedule.queue != old:
            await self._send(b"HSET", K.SCHEDULES, schedule.name, schedule.queue)
        try:
            reply = await self.engine._script(
                "sched", schedule.queue, ["set", schedule.name, schedule.record()],
                self._undo(schedule.queue, schedule.name, "set"),
            )
        except Exception:
            if old is not None and schedule.queue != old:  # the set did not happen: point back
                await self._send(b"HSET", K.SCHEDULES, schedule.name, old)
            raise
        if old is not None and old != schedule.queue:
            # A late reply here leaves a record nothing points to: ignored, never fired.
            await self.engine._script("sched", old, ["del", schedule.name])
        await self._send(b"ZADD", K.SCHEDULES_DUE, schedule.next_ms, schedule.name)
        register = self.engine._register(schedule.queue)
        if register is not None:
            await register
        return Schedule.parse(schedule.name, reply[1])

    async def get(self, name: str) -> Schedule | None:
        """Schedule ``name`` as stored, or None."""
        queue = await self.queue_of(name)
        if queue is None:
            return None
        (record,) = await self.engine._script("sched", queue, ["get", name])
        return Schedule.parse(name, record) if record else None

    async def remove(self, name: str) -> Schedule | None:
        """Delete schedule ``name`` (its record, then its index entries); what was removed, or
        None when there was no such schedule."""
        queue = await self.queue_of(name)
        if queue is None:
            return None
        (previous,) = await self.engine._script("sched", queue, ["del", name], self._undo(queue, name, "del"))
        await gather([self._send(b"HDEL", K.SCHEDULES, name), self._send(b"ZREM", K.SCHEDULES_DUE, name)])
        return Schedule.parse(name, previous) if previous else None

    async def all(self, queues: set[str] | None = None) -> list[Schedule]:
        """Every schedule (of ``queues`` only, when given), sorted by name: one script per queue
        that holds some."""
        raw = await self._send(b"HGETALL", K.SCHEDULES)
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2])
        by_queue: dict[str, set[str]] = defaultdict(set)
        for name, queue in pairs:
            if queues is None or _text(queue) in queues:
                by_queue[_text(queue)].add(_text(name))
        found: list[Schedule] = []
        for queue, names in by_queue.items():
            flat = await self.engine._script("sched", queue, ["list", ""])
            for i in range(0, len(flat), 2):
                name = _text(flat[i])
                if name in names:  # a record the name index points elsewhere is a leftover
                    found.append(Schedule.parse(name, flat[i + 1]))
        return sorted(found, key=lambda s: s.name)

    async def due(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        """The names whose due entry is at or before ``now_ms``, with that entry."""
        raw = await self._send(b"ZRANGEBYSCORE", K.SCHEDULES_DUE, b"-inf", now_ms, b"WITHSCORES", b"LIMIT", 0, limit)
        return [(_text(raw[i]), int(float(raw[i + 1]))) for i in range(0, len(raw), 2)]

    async def fire(self, name: str, now_ms: int, seen: int = -1) -> str:
        """Fire schedule ``name`` if its stored tick is due at ``now_ms`` (``seen``: its entry in
        the due index, dropped only if still that when the schedule is gone). Answers what happened:
        ``fired``, ``stale`` (another process fired it or a set changed it first), ``full``,
        ``early`` (the due index was behind the record: repaired) or ``gone``.

        The next tick is the first after both ``now_ms`` and the tick fired, so ticks missed
        while no process ran give one catch-up fire, not a burst."""
        queue = await self.queue_of(name)
        record = None
        if queue is not None:
            (record,) = await self.engine._script("sched", queue, ["get", name])
        if not record:
            await self.engine._script("undue", K.SCHEDULES_DUE, [name, seen], keys=[K.SCHEDULES_DUE], raw=True)
            return "gone"
        assert queue is not None
        schedule = Schedule.parse(name, record)
        if schedule.next_ms > now_ms:
            await self._send(b"ZADD", K.SCHEDULES_DUE, schedule.next_ms, name)
            return "early"
        after = schedule.timing.next_after(max(now_ms, schedule.next_ms))
        register = self.engine._register(queue)
        if register is not None:
            await register
        # No undo for a late reply: the fire happened once and its record says so (a retry finds
        # it stale); a fire Redis reaches after its deadline changes nothing and is tried again.
        reply = await self.engine._script(
            "sched", queue, ["fire", name, record, after, encode_value(schedule.value), PRIORITY.default]
        )
        outcome = _text(reply[0])
        if outcome == "stale":
            return "stale"
        await self._send(b"ZADD", K.SCHEDULES_DUE, after, name)
        if outcome == "full":
            log.warn("schedule {name} skipped a tick: queue {queue} is full ({held} of {limit})",
                     name=name, queue=queue, held=int(reply[1]), limit=int(reply[2]))
            return "full"
        log.debug("schedule {name} fired into {queue} key={key}", name=name, queue=queue, key=int(reply[1]))
        return "fired"

    async def repair(self) -> int:
        """Set every schedule's due entry from its record (the loop's full pass); answers how
        many schedules there are."""
        schedules = await self.all()
        if schedules:
            flat = [x for s in schedules for x in (s.next_ms, s.name)]
            await self._send(b"ZADD", K.SCHEDULES_DUE, *flat)
        return len(schedules)
