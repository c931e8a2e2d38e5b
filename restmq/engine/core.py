"""QueueEngine: one async method per queue operation, each one Lua script (one round trip).

The engine knows Redis and Deferreds and nothing of HTTP; the dispatcher is its only caller. Every
Redis call is bounded by ``timeout`` so a dead or frozen Redis turns into ``backend_unavailable``
quickly instead of a hung request.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import txredisapi
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq import commands
from restmq.engine import keys as K
from restmq.engine.hub import Hub, SubscriberEndpoint
from restmq.engine.maintenance import Sweeper
from restmq.engine.firing import Firer
from restmq.engine.schedules import ScheduleStore
from restmq.engine.records import parse_broadcast, parse_deliveries, parse_reads
from restmq.engine.calls import (
    DEADLINE_REFUSED, RESYNC_EVERY, Deadlines, Progress, RedisClock, bounded, margin, redis_failed,
)
from restmq.engine.scripts import Replicated, Scripts, send
from restmq.latency import REDIS_BUCKETS, Latency
from restmq.errors import BackendUnavailable, LimitExceeded, QueueFull, RestMQError, StaleReceipt
from restmq.model import Message, QueueLength, QueueState
from restmq.parallel import gather
from restmq.streams import Sink, Subscription, Watch

log = Logger()

def script_defaults() -> dict[str, int]:
    """The queue settings' defaults from the command table, times in ms, for the scripts."""
    return {a.name: ms(a.default) if a.kind == "seconds" else int(a.default) for a in commands.SETTINGS}


#: Seconds after which the stream subscribers of a process that stopped saying it is alive (it
#: crashed) no longer count; live processes say so every ``Hub.HEARTBEAT`` seconds.
SUBSCRIBERS_FORGOTTEN = 20.0

#: Queues whose statistics one script reads (see lua/stats.lua): enough that a scrape of a
#: thousand queues is a handful of scripts, few enough that one script never blocks Redis long.
STATS_BATCH = 200

#: How long a queue name stays in this process's "already registered" cache before the next add
#: registers it again (cheap insurance after a FLUSHALL or a restored backup).
REGISTRY_REFRESH = 10.0
#: How long a process keeps a bucket's sweeper lease without renewing it (it renews it every
#: sweep, 100 ms): a crashed sweeper's buckets are taken over after this.
SWEEPER_LEASE = 1.0
NOT_CONNECTED = "redis is not connected yet"
#: Scripts whose writes a client is told about: with ``--replicas`` they are answered after WAIT.
#: ``take`` (take, reserve, streams) is not: it hands messages over, and refusing to answer after
#: the take happened would lose them; unreplicated, a failover can only bring them back (again).
REPLICATED = frozenset({"add", "ack", "nack", "touch", "del", "purge", "redrive", "config", "conf", "push", "pushed"})


def parse_push(reply: list[Any]) -> dict[str, Any] | None:
    """push.lua's answer (after the timer): the subscription's fields as text, with ``in_flight``,
    ``lease`` (s) and ``max_attempts``; None when the queue has none."""
    inflight, lease, max_attempts, *flat = reply
    fields = {flat[i].decode(): flat[i + 1].decode("utf-8", "replace") for i in range(0, len(flat), 2)}
    if "url" not in fields:
        return None
    return {**fields, "in_flight": int(inflight), "lease": int(lease) / 1000.0, "max_attempts": int(max_attempts)}


def _delivered(reply: list[Any], queue: str) -> list[Message]:
    """take.lua's answer: the messages delivered (none when the queue is empty or paused)."""
    return parse_deliveries(queue, reply[1:]) if reply[0] == b"ok" else []


def _stale_receipts(stale: list[str]) -> StaleReceipt:
    """The error of an ack (all or nothing) that had stale receipts: nothing of it was done."""
    return StaleReceipt(
        f"stale or unknown receipt(s): {', '.join(stale[:10])}; the lease ended or the "
        "message was acked or delivered again. Nothing was acked.",
        receipts=stale,
    )


def _added(reply: list[Any]) -> tuple[list[int], int]:
    """add.lua's answer: the numbers of the items, then the ready length."""
    return [int(n) for n in reply[1:-1]], int(reply[-1])


def _after(result: Any, first: defer.Deferred[Any]) -> Any:
    """``result`` once ``first`` (which never fails) has fired too."""
    return first.addCallback(lambda _: result)


def ms(seconds: float) -> int:
    """Seconds (fractions allowed) as the integer milliseconds scripts work in."""
    return int(round(seconds * 1000)) if seconds else 0


class QueueEngine:
    """The queue operations on one Redis, shared by every front end through the dispatcher."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        timeout: float = 1.0,
        default_policy: str = "broadcast",
        replay: int = 1000,
        max_queues: int = 0,
        replicas: int = 0,
    ) -> None:
        self.redis: Any = None
        #: Writes answered only once this many replicas have them (WAIT); 0: as soon as the master has.
        self.replicas = replicas
        #: Most queues in the registry; an add that would create one more is refused (0: no limit).
        self.max_queues = max_queues
        #: Broadcast messages kept per queue for subscribers that reconnect (0: none).
        self.replay = replay
        self.clock = clock
        self.timeout = timeout
        #: The timers of every Redis call: one per timeout, not one per call (see calls.py).
        self._deadlines = Deadlines(clock)
        self.default_policy = default_policy
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.scripts = Scripts(script_defaults())
        self.hub = Hub(self, clock=clock)
        self.sweeper = Sweeper(self, clock)
        #: Recurring schedules (stored per target queue) and this process's loop that fires them.
        self.schedules = ScheduleStore(self)
        self.firer = Firer(self.schedules, clock)
        self._registered: dict[str, float] = {}
        self.started_at = time.time()
        #: Redis round trips of the scripts, by script name.
        self.redis_latency = Latency(REDIS_BUCKETS)
        #: Redis's clock as seen from here: every script carries a deadline on it.
        self.redis_clock = RedisClock()
        self._resync = task.LoopingCall(lambda: defer.ensureDeferred(self._sync_clock()))
        self._resync.clock = clock
        #: Scripts Redis ran after their caller had stopped waiting (then undone), by script.
        self.late_calls: Counter[str] = Counter()
        #: Buckets of the registry and the timers: 1 (``rmq:queues``, ``rmq:timers``) on one Redis,
        #: keys.CLUSTER_BUCKETS on a cluster (see keys.global_keys).
        self.buckets = 1
        #: The buckets whose sweeper lease this process held at its last sweep.
        self.sweeping: set[int] = set()

    # -- plumbing -----------------------------------------------------------------------------

    async def attach(self, redis: Any, subscriber: SubscriberEndpoint) -> None:
        """Start working on ``redis`` (a txredisapi pool); until then commands answer
        ``backend_unavailable``. ``subscriber`` opens the hub's pub/sub connection."""
        self.redis = redis
        cluster = bool(getattr(type(redis), "cluster", False))
        self.buckets = K.CLUSTER_BUCKETS if cluster else 1
        # on a cluster the hub listens to every master (sharded pub/sub, see shards.py)
        self.hub.start(subscriber, router=redis if cluster else None)
        if cluster:
            try:  # not bounded by the call timeout: a large registry takes longer; started once
                await self._migrate_global_keys()
            except Exception as e:
                log.warn("registry and timers not moved into buckets yet ({error}); the next start does it",
                         error=str(e))
        self.sweeper.start()
        self.firer.start()
        try:
            await self._bounded(self.scripts.load(redis))
        except RestMQError as e:
            log.warn("redis not ready at start ({error}); scripts load on first use", error=e.message)
        self._resync.start(RESYNC_EVERY, now=True)

    async def _migrate_global_keys(self) -> None:
        """A data set written with one registry and one timers key (``rmq:queues``,
        ``rmq:timers``, e.g. imported from a single Redis) is moved into the cluster's buckets.
        Idempotent (SADD, ZADD LT), and safe when several processes start at once."""
        names = await send(self.redis, b"SMEMBERS", K.REGISTRY)
        timers = await send(self.redis, b"ZRANGE", K.TIMERS, 0, -1, b"WITHSCORES")
        if not names and not timers:
            return
        text = [n.decode() if isinstance(n, bytes) else n for n in names]
        await gather(send(self.redis, b"SADD", self._globals(q).registry, q) for q in text)
        due = [(t.decode() if isinstance(t, bytes) else t, at) for t, at in zip(timers[::2], timers[1::2])]
        # LT: a timer a newer process already set earlier in its bucket stands
        await gather(send(self.redis, b"ZADD", self._globals(q).timers, b"LT", at, q) for q, at in due)
        await send(self.redis, b"DEL", K.REGISTRY)
        await send(self.redis, b"DEL", K.TIMERS)
        log.info("moved {queues} queue names and {timers} timers into {buckets} cluster buckets",
                 queues=len(names), timers=len(timers) // 2, buckets=self.buckets)

    def _globals(self, queue: str) -> K.GlobalKeys:
        """The registry, timers and sweeper keys of ``queue``'s bucket."""
        return K.global_keys(K.bucket_of(queue, self.buckets), self.buckets)

    def _all_globals(self) -> list[K.GlobalKeys]:
        return [K.global_keys(b, self.buckets) for b in range(self.buckets)]

    async def stop(self) -> None:
        """Stop sweeping, end every stream and stop listening."""
        if self._resync.running:
            self._resync.stop()
        await self.sweeper.stop()
        await self.firer.stop()
        await self.hub.stop()

    def _bounded(
        self, work: Any, late: Callable[[Any], None] | None = None, progress: Progress | None = None
    ) -> defer.Deferred[Any]:
        """``work`` (a coroutine or Deferred) bounded by ``timeout``, Redis failures mapped to
        ``backend_unavailable``; a reply that comes after the caller gave up goes to ``late``
        (see calls.py). A plain Deferred chain: this is on every command's path."""
        if self.redis is None:
            if not isinstance(work, defer.Deferred):
                work.close()
            return defer.fail(BackendUnavailable(NOT_CONNECTED, applied=False))
        d = work if isinstance(work, defer.Deferred) else defer.ensureDeferred(work)
        return bounded(
            d, self.timeout, self.clock, late=late, progress=progress, deadlines=self._deadlines
        ).addErrback(self._redis_failed)

    def _redis_failed(self, failure: Failure) -> Failure:
        if failure.check(txredisapi.ResponseError):
            text = str(failure.value)
            if text.startswith(DEADLINE_REFUSED):
                # Refused while its caller still waited: our idea of Redis's clock is off.
                self.redis_clock.forget()
            elif text.startswith(("LOADING", "MASTERDOWN", "READONLY", "BUSY", "MISCONF", "OOM")):
                raise BackendUnavailable(f"redis refused: {text}; nothing was applied", applied=False)
            elif text.startswith("QUEUE_FULL"):
                _, held, limit = text.split()[:3]
                raise QueueFull(f"the queue holds {held} messages; its max_length is {limit}")
        return redis_failed(failure, self.timeout)

    async def _sync_clock(self) -> None:
        """Measure Redis's clock against ours (see calls.RedisClock); logged when it fails."""
        try:
            await self._bounded(self.redis_clock.sync(self.redis))
        except RestMQError as e:
            log.debug("redis clock not measured: {error}", error=e.message)

    def _script(
        self,
        name: str,
        queue: str,
        args: list[Any],
        late: Callable[[list[Any]], None] | None = None,
        *,
        keys: list[str] | None = None,
        raw: bool = False,
        replicate: bool = True,
    ) -> defer.Deferred[Any]:
        """Run a per-queue script (``ARGV[1]`` is the queue's channel) with a deadline on Redis's
        clock a margin before this call stops waiting. Every script answers ``{next due, …}``;
        when the queue has something due the global timer is kept, and the rest of the answer is
        returned. ``late`` undoes a reply that comes after the caller gave up. The round trip is
        timed into :attr:`redis_latency`. The sweeper's scripts pass ``keys`` (global keys, no
        channel) and take the ``raw`` answer (no timer to keep). ``replicate`` False: a read of a
        script that can also write (no ``WAIT`` with ``--replicas``)."""
        if self.redis is None:
            return defer.fail(BackendUnavailable(NOT_CONNECTED, applied=False))
        start = time.monotonic()
        until = start + self.timeout - margin(self.timeout)
        if keys is None:
            keys, channel = K.script_keys(queue, self.scripts.keys[name])
            argv = [channel, *args]
        else:
            argv = [b"", *args]
        progress = None
        replicated = None
        if self.replicas and replicate and name in REPLICATED:
            progress = Progress()
            replicated = Replicated(self.replicas, until, progress)
        if self.redis_clock.offset is not None:
            deadline = self.redis_clock.deadline(until - start)
            call = self.scripts.call(self.redis, name, keys, argv, deadline, replicated)
        else:
            call = defer.ensureDeferred(self._call_after_sync(name, keys, argv, until, replicated))

        latency = self.redis_latency

        def answered(reply: Any) -> Any:
            latency.observe("script", name, time.monotonic() - start)
            return reply if raw else self._keep_timer(reply, queue)

        def failed(failure: Failure) -> Any:
            latency.observe("script", name, time.monotonic() - start)
            return self._redis_failed(failure)

        # One callback pair after the bound: the latency, then the answer or the mapped failure.
        return bounded(
            call, self.timeout, self.clock, late=late or self._logged_only(queue, name), progress=progress,
            deadlines=self._deadlines,
        ).addCallbacks(answered, failed)

    def _logged_only(self, queue: str, name: str) -> Callable[[list[Any]], None]:
        """The late handler of a call with nothing to undo: it is only counted and logged."""

        def logged_only(reply: list[Any]) -> None:
            self._late(queue, name, "", [])

        return logged_only

    async def _call_after_sync(
        self, name: str, keys: list[str], argv: list[Any], until: float, replicated: Replicated | None
    ) -> Any:
        """The first call (or the first after a refused deadline) measures the clock first."""
        await self.redis_clock.sync(self.redis)
        deadline = self.redis_clock.deadline(until - time.monotonic())
        return await self.scripts.call(self.redis, name, keys, argv, deadline, replicated)

    def _late(self, queue: str, name: str, what: str, args: list[Any]) -> None:
        """Undo a call Redis ran after its caller gave up (see undo.lua); logged either way.
        What has nothing to undo (``args`` empty) is a write whose repetition is harmless (an ack
        or nack repeated answers ``stale_receipt``; purge, pause and settings are idempotent) or
        a read."""
        self.late_calls[name] += 1
        if not args:
            (log.info if name in REPLICATED else log.debug)(
                "redis ran {script} on queue={queue} after its caller gave up; nothing to undo",
                script=name, queue=queue,
            )
            return
        qk = K.for_queue(queue)
        call = self.scripts.call(self.redis, "undo", qk.pick(self.scripts.keys["undo"]), [qk.channel, what, *args])

        def undone(reply: list[Any]) -> None:
            log.warn(
                "redis ran {script} on queue={queue} after its caller gave up; undone={undone}",
                script=name, queue=queue, undone=int(reply[1]),
            )

        def failed(failure: Failure) -> None:
            log.error(
                "redis ran {script} on queue={queue} after its caller gave up, and undoing it failed: {error}",
                script=name, queue=queue, error=failure.value,
            )

        call.addCallbacks(undone, failed)

    def _undo_take(self, queue: str, name: str) -> Callable[[list[Any]], None]:
        """The late handler of a take or reserve (take.lua's answer): give the messages back."""

        def late(reply: list[Any]) -> None:
            if len(reply) < 2 or reply[1] != b"ok":
                self._late(queue, name, "take", [])
                return
            flat = reply[3:]
            if any(flat[i + 3] for i in range(0, len(flat), 4)):  # receipts: a reservation
                self._late(queue, name, "reserve", [flat[i + 3] for i in range(0, len(flat), 4)])
            else:
                self._late(queue, name, "take", [x for i in range(0, len(flat), 4) for x in flat[i:i + 3]])

        return late

    def _keep_timer(self, reply: list[Any], queue: str) -> list[Any]:
        due = int(reply[0])
        if due >= 0:
            # LT: never postpone a timer someone else set earlier. Best effort: the sweeper's
            # full pass re-arms any timer lost here.
            send(self.redis, b"ZADD", self._globals(queue).timers, b"LT", due, queue).addErrback(
                lambda f: log.debug("timer not set queue={queue}: {e}", queue=queue, e=f.value)
            )
        return reply[1:]

    def _register(self, queue: str) -> defer.Deferred[Any] | None:
        """Keep the queue in the registry of names (a separate, idempotent write: see keys.py);
        None when this process registered it recently."""
        now = self.clock.seconds()
        if self.redis is None or now - self._registered.get(queue, -REGISTRY_REFRESH) < REGISTRY_REFRESH:
            return None  # registered recently, or no Redis yet (the add itself fails then)

        def done(_: Any) -> None:
            self._registered[queue] = now

        return self._bounded(self.redis.sadd(self._globals(queue).registry, queue)).addCallback(done)

    # -- commands -----------------------------------------------------------------------------

    async def add(
        self, queue: str, items: Sequence[tuple[bytes, int, float, float, str | None, bool]]
    ) -> list[int]:
        """Store messages (value JSON, priority, ttl s, delay s, dedup or None, unique); answer
        their numbers. An item that added nothing (a dedup hit, a unique value still held, a repeat
        earlier in the batch) answers the existing message's number negated."""
        return (await self.add_counted(queue, items))[0]

    def add_counted(
        self, queue: str, items: Sequence[tuple[bytes, int, float, float, str | None, bool]]
    ) -> defer.Deferred[tuple[list[int], int]]:
        """:meth:`add`, and the queue's ready length just after it, from the same script. A plain
        Deferred chain (every add's path); only the first add to a queue under ``--max-queues``
        takes the coroutine that checks the limit first."""
        if self.max_queues and queue not in self._registered:
            return defer.ensureDeferred(self._add_new_queue(queue, items))
        return self._add(queue, items)

    async def _add_new_queue(
        self, queue: str, items: Sequence[tuple[bytes, int, float, float, str | None, bool]]
    ) -> tuple[list[int], int]:
        await self._check_new_queue(queue)
        return await self._add(queue, items)

    def _add(
        self, queue: str, items: Sequence[tuple[bytes, int, float, float, str | None, bool]]
    ) -> defer.Deferred[tuple[list[int], int]]:
        args: list[Any] = []
        mark = K.UNIQUE_MARK
        for value_json, priority, ttl, delay, dedup, unique in items:
            args += (priority, ms(delay) if delay else 0, ms(ttl) if ttl else 0, dedup or "",
                     mark + value_json if unique else value_json)
        # Sent alongside the script; best effort, since failing an add that Redis applied would make
        # the client retry and duplicate it.
        register = self._register(queue)
        if register is not None:
            register.addErrback(
                lambda f: log.warn("could not register queue={queue}: {error}", queue=queue, error=f.value)
            )

        def late(reply: list[Any]) -> None:
            dedups = [dedup or "" for _, _, _, _, dedup, _ in items]
            added = [x for n, d in zip(reply[2:], dedups) if int(n) > 0 for x in (n, d)]
            self._late(queue, "add", "add", added)

        d = self._script("add", queue, args, late).addCallback(_added)
        if register is not None:
            d.addCallback(_after, register)
        return d

    async def _check_new_queue(self, queue: str) -> None:
        """``--max-queues``: refuse an add that would create a queue past the limit. Looked at once
        per queue and process (then the registry cache knows it), so adds pay nothing after."""

        async def ask() -> list[Any]:
            return await gather(
                [send(self.redis, b"SISMEMBER", self._globals(queue).registry, queue)]
                + [send(self.redis, b"SCARD", g.registry) for g in self._all_globals()]
            )

        known, *counts = await self._bounded(ask())  # a coroutine: not even started without Redis
        count = sum(int(c) for c in counts)
        if not int(known) and int(count) >= self.max_queues:
            raise LimitExceeded(f"this server holds {int(count)} queues, its limit (--max-queues)")

    def take(self, queue: str, count: int) -> defer.Deferred[list[Message]]:
        """Remove up to ``count`` ready messages (none while the queue is paused). A plain
        Deferred chain: every take's path."""
        return self._script(
            "take", queue, [count, "take", 0, "", "", 0], self._undo_take(queue, "take")
        ).addCallback(_delivered, queue)

    def reserve(self, queue: str, count: int, lease: float | None) -> defer.Deferred[list[Message]]:
        """Deliver up to ``count`` ready messages hidden for ``lease`` seconds (None: the queue's
        lease), each with a receipt."""
        nonce = secrets.token_hex(4)
        return self._script(
            "take", queue, [count, "reserve", ms(lease or 0), nonce, "", 0], self._undo_take(queue, "reserve")
        ).addCallback(_delivered, queue)

    def ack_next(self, queue: str, receipts: Sequence[str], lease: float | None) -> defer.Deferred[list[Message]]:
        """Ack ``receipts`` (all or nothing) and reserve the next message in the same script: a
        worker's loop pays one round trip per message. A stale receipt raises ``stale_receipt``,
        with nothing acked and nothing reserved. If the answer comes too late the reservation is
        given back; the ack stays, as a late ack does (repeated, it answers stale_receipt)."""
        nonce = secrets.token_hex(4)

        def answered(reply: list[Any]) -> list[Message]:
            if reply[0] == b"stale":
                raise _stale_receipts([r.decode() for r in reply[1:]])
            return _delivered(reply, queue)

        return self._script(
            "take", queue, [1, "reserve", ms(lease or 0), nonce, "", 0, *receipts], self._undo_take(queue, "reserve")
        ).addCallback(answered)

    async def stream_take(self, queue: str, count: int) -> tuple[str, list[Message]]:
        """The hub's drain step: ``("paused", [])``, ``("broadcast", [])`` after publishing, or
        ``("roundrobin", messages)`` for this process's subscribers to share."""
        reply = await self._script(
            "take", queue, [count, "stream", 0, "", self.default_policy, self.replay], self._undo_take(queue, "stream")
        )
        status = reply[0].decode()
        if status == "ok":
            return "roundrobin", parse_deliveries(queue, reply[1:])
        if status == "broadcast":
            return ("broadcast", []) if int(reply[1]) else ("empty", [])
        return status, []

    def ack(self, queue: str, receipts: Sequence[str]) -> defer.Deferred[int]:
        """Finish reservations; all or nothing: any stale receipt raises ``stale_receipt``."""

        def one(outcomes: list[int | StaleReceipt]) -> int:
            if isinstance(outcomes[0], StaleReceipt):
                raise outcomes[0]
            return outcomes[0]

        return defer.ensureDeferred(self.ack_each(queue, [receipts])).addCallback(one)

    async def ack_each(self, queue: str, acks: Sequence[Sequence[str]]) -> list[int | StaleReceipt]:
        """Several acks in one script, in order, each all or nothing on its own: per ack the
        number acked, or the ``stale_receipt`` error it answers (the others still ack)."""
        args: list[Any] = [" ".join(str(len(receipts)) for receipts in acks)]
        for receipts in acks:
            args += receipts
        reply = await self._script("ack", queue, args)
        outcomes: list[int | StaleReceipt] = []
        for answer in reply:
            if answer[0] == b"stale":
                outcomes.append(_stale_receipts([r.decode() for r in answer[1:]]))
            else:
                outcomes.append(int(answer[1]))
        return outcomes

    async def nack(self, queue: str, receipt: str, delay: float, error: str | None) -> str:
        """Give a reservation back; answers where the message went: ready, delayed or dead."""
        reply = await self._script("nack", queue, [receipt, ms(delay), error or ""])
        if reply[0] == b"stale":
            raise self._stale(receipt)
        return str(reply[1].decode())

    async def touch(self, queue: str, receipt: str, lease: float | None) -> float:
        """Extend a reservation from now; answers the new deadline (unix seconds)."""
        reply = await self._script("touch", queue, [receipt, ms(lease or 0)])
        if reply[0] == b"stale":
            raise self._stale(receipt)
        return int(reply[1]) / 1000.0

    @staticmethod
    def _stale(receipt: str) -> StaleReceipt:
        return StaleReceipt(
            f"stale or unknown receipt {receipt!r}: the lease ended or the message was acked or "
            "delivered again",
            receipts=[receipt],
        )

    async def config(self, queue: str, changes: dict[str, float]) -> dict[str, Any]:
        """Set the given settings (seconds for times), then answer every setting."""
        args: list[Any] = []
        for name, value in changes.items():
            args += (name, ms(value) if name in ("lease", "dedup_window") else int(value))
        max_attempts, lease, window, max_length = await self._script("config", queue, args)
        return {
            "max_attempts": int(max_attempts),
            "lease": int(lease) / 1000.0,
            "dedup_window": int(window) / 1000.0,
            "max_length": int(max_length),
        }

    # -- push subscriptions (the delivering service is restmq.push; it speaks HTTP, not this) ------

    async def push(self, queue: str, op: str = "get", fields: dict[str, str] | None = None) -> dict[str, Any] | None:
        """Set (``fields``: the subscription's settings as text), read or remove (``rm``) the queue's
        push subscription, keeping the index of subscribed queues (:data:`keys.PUSHING`, a separate
        idempotent write) in step. Answers the subscription as stored, with ``in_flight``, the
        queue's ``lease`` (s) and ``max_attempts``, or None when there is none."""
        args: list[Any] = [op]
        for name, value in (fields or {}).items():
            args += (name, value)
        found = parse_push(await self._script("push", queue, args, replicate=op != "get"))
        if op == "set":
            await self._bounded(send(self.redis, b"SADD", K.PUSHING, queue))
        elif op == "rm":
            await self.unindex_push(queue)
        return found

    async def unindex_push(self, queue: str) -> None:
        """Take ``queue`` out of the index of subscribed queues, unless it has a subscription
        again (a set that ran meanwhile must stay findable: looked at after the removal)."""
        await self._bounded(send(self.redis, b"SREM", K.PUSHING, queue))
        if parse_push(await self._script("push", queue, ["get"], replicate=False)) is not None:
            await self._bounded(send(self.redis, b"SADD", K.PUSHING, queue))

    async def pushing(self) -> list[str]:
        """The queues that have a push subscription (the index; an entry may be stale)."""
        names = await self._bounded(send(self.redis, b"SMEMBERS", K.PUSHING))
        return sorted(n.decode() if isinstance(n, bytes) else n for n in names)

    async def push_reserve(self, queue: str, count: int) -> tuple[str, list[Message]]:
        """Reserve up to ``count`` messages for push deliveries: ``("ok", messages)``, or
        ``("paused"|"none"|"busy", [])`` (paused, no subscription, its concurrency reached)."""
        nonce = secrets.token_hex(4)
        reply = await self._script("take", queue, [count, "push", 0, nonce, "", 0], self._undo_take(queue, "push"))
        status = reply[0].decode()
        return status, parse_deliveries(queue, reply[1:]) if status == "ok" else []

    async def pushed(self, queue: str, receipt: str, error: str, delay: float) -> str:
        """A push delivery ended: ack it (``error`` empty), else nack it after ``delay`` s with
        ``error``; the subscription records the outcome. Answers where the message went (acked,
        ready, delayed, dead, expired) or ``stale`` (its lease ran out first)."""
        reply = await self._script("pushed", queue, [receipt, error, ms(delay)])
        return "stale" if reply[0] == b"stale" else str(reply[1].decode())

    async def redrive(self, queue: str, count: int | None) -> int:
        """Move dead-letter messages (all, or ``count``) back to ``queue``."""
        return int((await self._script("redrive", queue, [count or 0]))[0])

    async def settle(self, queue: str) -> None:
        """Bring ``queue`` up to date now and set its timer to what is next due (the sweeper's
        step for idle queues)."""
        due, settled_at = await self._script("settle", queue, [], raw=True)
        timers = self._globals(queue).timers
        await self._script("retime", timers, [queue, due, settled_at], keys=[timers], raw=True)

    async def due_queues(self, limit: int) -> list[str]:
        """Queues whose timers are due by Redis's clock. On a cluster, of the buckets whose sweeper
        lease this process holds (or takes now): one process sweeps each bucket at a time."""
        owner = self.process_id

        async def bucket(number: int, g: K.GlobalKeys) -> list[Any]:
            try:
                reply = await self._script(
                    "due", g.timers, [limit, owner, ms(SWEEPER_LEASE)], keys=[g.timers, g.sweeper], raw=True
                )
            except RestMQError as e:
                if self.buckets == 1:
                    raise
                log.debug("bucket {key} not swept: {error}", key=g.timers, error=e.message)
                reply = [0]
            (self.sweeping.add if int(reply[0]) else self.sweeping.discard)(number)
            return list(reply)

        replies = await gather(defer.ensureDeferred(bucket(b, g)) for b, g in enumerate(self._all_globals()))
        return [q.decode() for reply in replies for q in reply[1:]]

    async def swept_queues(self) -> list[str]:
        """The sweeper's full pass: the queues of the buckets whose lease this process holds (the
        other processes, and workers, sweep the others or wait)."""
        held = [K.global_keys(b, self.buckets) for b in sorted(self.sweeping)]

        async def ask() -> list[Any]:
            return await gather(send(self.redis, b"SMEMBERS", g.registry) for g in held)

        found = await self._bounded(ask())
        return sorted({n.decode() if isinstance(n, bytes) else n for names in found for n in names})

    async def replayed(self, queue: str, since: str) -> list[Message]:
        """The broadcast messages after replay id ``since`` that the replay stream still holds."""
        reply = await self._script("replay", queue, [since, max(self.replay, 1)])
        return [parse_broadcast(queue, reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]

    async def peek(self, queue: str, count: int, state: str = "ready") -> list[Message]:
        """The next ``count`` messages in ``state`` (ready, reserved, delayed), left in place."""
        return parse_reads(queue, await self._script("read", queue, ["peek", count, state]))

    async def get(self, queue: str, n: int) -> Message | None:
        """Message number ``n`` if it is still queued."""
        found = parse_reads(queue, await self._script("read", queue, ["key", n]))
        return found[0] if found else None

    async def soft_get(self, queue: str) -> Message | None:
        """The original soft get: the next message, left in place, its look count increased."""
        found = parse_reads(queue, await self._script("read", queue, ["soft"]))
        return found[0] if found else None

    async def find(self, queue: str, value_json: bytes) -> int | None:
        """The number of the held unique message whose value JSON is ``value_json``, or None."""
        reply = await self._script("find", queue, [value_json])
        return int(reply[0]) if reply else None

    async def delete(self, queue: str, n: int) -> bool:
        """Delete message ``n`` wherever it is; False when it was not there."""
        return (await self._delete(queue, [n, ""])) is not None

    async def delete_value(self, queue: str, value_json: bytes) -> int | None:
        """Delete the held unique message whose value JSON is ``value_json`` (found and deleted in
        one script, so two deletes of one value remove it once); its number, or None."""
        return await self._delete(queue, ["", value_json])

    async def _delete(self, queue: str, args: list[Any]) -> int | None:
        def late(reply: list[Any]) -> None:
            # The caller was told nothing was deleted: put the message back (ready).
            self._late(queue, "del", "del", list(reply[2:5]) if len(reply) >= 5 and int(reply[1]) else [])

        reply = await self._script("del", queue, args, late)
        return int(reply[1]) if int(reply[0]) else None

    async def purge(self, queue: str) -> int:
        """Remove every message and end the queue's streams everywhere; answer how many went."""
        return int((await self._script("purge", queue, []))[0])

    async def length(self, queue: str) -> QueueLength:
        """Messages by state (expired leases and due delays settled first)."""
        ready, reserved, delayed, dead = await self._script("len", queue, [])
        return QueueLength(int(ready), int(reserved), int(delayed), int(dead))

    async def queues(self) -> list[str]:
        """Every queue name ever added to, sorted."""
        async def ask() -> list[Any]:
            return await gather(send(self.redis, b"SMEMBERS", g.registry) for g in self._all_globals())

        found = await self._bounded(ask())  # a coroutine: not even started without Redis
        return sorted({n.decode() if isinstance(n, bytes) else n for names in found for n in names})

    async def lengths(self, queues: Sequence[str]) -> dict[str, QueueLength]:
        """Lengths of many queues, their scripts sent together (pipelined on the pool)."""
        found = await gather(defer.ensureDeferred(self.length(q)) for q in queues)
        return dict(zip(queues, found))

    async def queue_state(self, queue: str, op: str = "get", policy: str = "") -> QueueState:
        """Read the queue's state and policy, or pause / resume / set the policy."""
        state, current = await self._script("conf", queue, [op, policy, self.default_policy])
        return QueueState(queue, state == b"paused", current.decode())

    async def queue_stats(self, queue: str) -> dict[str, Any]:
        """Counters, lengths, state, policy and subscribers of one queue."""
        return (await self.queues_stats([queue]))[queue]

    async def queues_stats(self, queues: Sequence[str]) -> dict[str, dict[str, Any]]:
        """:meth:`queue_stats` of many queues, :data:`STATS_BATCH` queues per script: a scrape of
        every queue costs a few round trips, not one per queue."""
        groups: list[list[str]] = [list(queues)]
        if getattr(type(self.redis), "cluster", False):
            # One script touches one slot on a cluster: batch the queues of each slot together.
            by_slot: dict[int, list[str]] = {}
            for queue in queues:
                by_slot.setdefault(self.redis.slot_of(K.for_queue(queue).conf), []).append(queue)
            groups = list(by_slot.values())
        batches = [g[i:i + STATS_BATCH] for g in groups for i in range(0, len(g), STATS_BATCH)]
        replies = await gather(defer.ensureDeferred(self._stats_batch(batch)) for batch in batches)
        return {queue: found for batch in replies for queue, found in batch.items()}

    async def _stats_batch(self, queues: list[str]) -> dict[str, dict[str, Any]]:
        roles = self.scripts.keys["stats"]
        keys = [key for queue in queues for key in K.for_queue(queue).pick(roles)]
        reply = await self._script("stats", "", [self.default_policy, ms(SUBSCRIBERS_FORGOTTEN)], keys=keys)
        found = {}
        for queue, (counters, lens, state, policy, subs) in zip(queues, reply):
            flat = [c.decode() if isinstance(c, bytes) else c for c in counters]
            found[queue] = {
                "length": QueueLength(*(int(x) for x in lens)),
                "counters": {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)},
                "state": QueueState(queue, state == b"paused", policy.decode()),
                "subscribers": int(subs),
            }
        return found

    # -- streams (the hub does the work; the dispatcher only sees these) -----------------------

    def subscribe(
        self, queue: str, sink: Sink, *, mode: str = "take", lease: float | None = None, since: str | None = None
    ) -> Subscription:
        """Register a stream sink on ``queue`` (see :meth:`Hub.subscribe`)."""
        return self.hub.subscribe(queue, sink, mode=mode, lease=lease, since=since)

    def watch(self, queue: str) -> Watch:
        """Watch ``queue`` for adds, for a long poll."""
        return self.hub.watch(queue)

    def subscribers(self, queue: str) -> int:
        """How many stream sinks this process has on ``queue``."""
        return self.hub.subscribers(queue)

    async def count_subscribers(self, queue: str, delta: int, *, absolute: bool = False) -> None:
        """Add ``delta`` to this process's stream subscribers on ``queue`` (summed by stats), or
        with ``absolute`` make the count ``delta`` (the hub's heartbeat)."""
        await self._script("subs", queue, [self.process_id, delta, "set" if absolute else ""])

    async def redis_info(self) -> dict[str, str]:
        """Redis's INFO server section as text fields (version, mode, uptime)."""
        raw = await self._bounded(self.redis.execute_command("INFO", "server"))
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        info = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                k, _, v = line.partition(":")
                info[k] = v.strip()
        return info

    async def facts(self) -> dict[str, Any]:
        """What an operator must know about this Redis: version, persistence, eviction, warnings."""
        from restmq.backend.connect import redis_facts

        async def ask() -> dict[str, Any]:
            return await redis_facts(self.redis)

        return dict(await self._bounded(ask()))  # a coroutine: not even started without Redis
