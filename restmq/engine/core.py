"""QueueEngine: one async method per queue operation, each one Lua script (one round trip).

The engine knows Redis and Deferreds and nothing of HTTP; the dispatcher is its only caller. Every
Redis call is bounded by ``timeout`` so a dead or frozen Redis turns into ``backend_unavailable``
quickly instead of a hung request.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq.engine import keys as K
from restmq.engine.hub import Hub, SubscriberEndpoint
from restmq.engine.scripts import Scripts
from restmq.errors import BackendUnavailable, RestMQError
from restmq.model import Message, QueueLength, QueueState

log = Logger()

#: How long a queue name stays in this process's "already registered" cache before the next add
#: registers it again (cheap insurance after a FLUSHALL or a restored backup).
REGISTRY_REFRESH = 10.0


def parse_record(queue: str, n: bytes | int, record: bytes, seen: bytes | int = 0) -> Message:
    """Turn a stored record ``priority:enqueued_ms:attempts:expire_ms:value`` into a Message."""
    priority, enqueued, attempts, _expire, value = record.split(b":", 4)
    return Message(queue, int(n), value, int(priority), int(attempts), int(enqueued), int(seen))


def parse_triples(queue: str, flat: Sequence[Any], start: int = 0) -> list[Message]:
    """Scripts answer messages as flat ``n, record, seen`` triples."""
    return [parse_record(queue, flat[i], flat[i + 1], flat[i + 2]) for i in range(start, len(flat), 3)]


class QueueEngine:
    """The queue operations on one Redis, shared by every front end through the dispatcher."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        timeout: float = 1.0,
        default_policy: str = "broadcast",
    ) -> None:
        self.redis: Any = None
        self.clock = clock
        self.timeout = timeout
        self.default_policy = default_policy
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.scripts = Scripts()
        self.hub = Hub(self, clock=clock)
        self._registered: dict[str, float] = {}
        self.started_at = time.time()

    # -- plumbing -----------------------------------------------------------------------------

    async def attach(self, redis: Any, subscriber: SubscriberEndpoint) -> None:
        """Start working on ``redis`` (a txredisapi pool); until then commands answer
        ``backend_unavailable``. ``subscriber`` opens the hub's pub/sub connection."""
        self.redis = redis
        self.hub.start(subscriber)
        try:
            await self._bounded(self.scripts.load(redis))
        except RestMQError as e:
            log.warn("redis not ready at start ({error}); scripts load on first use", error=e.message)

    async def stop(self) -> None:
        """End every stream and stop listening."""
        await self.hub.stop()

    def _bounded(self, work: Any) -> defer.Deferred[Any]:
        """``work`` (a coroutine or Deferred) bounded by ``timeout``, Redis failures mapped to
        ``backend_unavailable``. A plain Deferred chain: this is on every command's path."""
        if self.redis is None:
            if not isinstance(work, defer.Deferred):
                work.close()
            return defer.fail(BackendUnavailable("redis is not connected yet"))
        d = work if isinstance(work, defer.Deferred) else defer.ensureDeferred(work)
        return d.addTimeout(self.timeout, self.clock).addErrback(self._redis_failed)

    def _redis_failed(self, failure: Failure) -> Failure:
        if failure.check(defer.TimeoutError):
            raise BackendUnavailable(f"redis did not answer within {self.timeout:g} s")
        if failure.check(txredisapi.ConnectionError, ConnectionError):
            raise BackendUnavailable(f"redis is unreachable: {failure.value}")
        if failure.check(txredisapi.ResponseError):
            text = str(failure.value)
            if text.startswith(("LOADING", "MASTERDOWN", "READONLY", "BUSY", "MISCONF", "OOM")):
                raise BackendUnavailable(f"redis refused: {text}")
        return failure

    def _script(self, name: str, queue: str, args: list[Any]) -> defer.Deferred[Any]:
        keys = K.for_queue(queue).pick(self.scripts.keys[name])
        return self._bounded(self.scripts.call(self.redis, name, keys, args))

    def _register(self, queue: str) -> defer.Deferred[Any] | None:
        """Keep the queue in the registry of names (a separate, idempotent write: see keys.py);
        None when this process registered it recently."""
        now = self.clock.seconds()
        if now - self._registered.get(queue, -REGISTRY_REFRESH) < REGISTRY_REFRESH:
            return None

        def done(_: Any) -> None:
            self._registered[queue] = now

        return self._bounded(self.redis.sadd(K.REGISTRY, queue)).addCallback(done)

    # -- commands -----------------------------------------------------------------------------

    async def add(self, queue: str, items: Sequence[tuple[bytes, int, float]]) -> tuple[float, list[int]]:
        """Store messages (value JSON, priority, ttl seconds or 0); answer the enqueue time and
        their numbers."""
        args: list[Any] = [K.for_queue(queue).channel]
        for value_json, priority, ttl in items:
            args += (priority, int(ttl * 1000), value_json)
        # Sent alongside the script; best effort, since failing an add that Redis applied would make
        # the client retry and duplicate it.
        register = self._register(queue)
        if register is not None:
            register.addErrback(
                lambda f: log.warn("could not register queue={queue}: {error}", queue=queue, error=f.value)
            )
        reply = await self._script("add", queue, args)
        if register is not None:
            await register
        return int(reply[0]) / 1000.0, [int(n) for n in reply[1:]]

    async def take(self, queue: str, count: int) -> list[Message]:
        """Remove up to ``count`` ready messages (none while the queue is paused)."""
        reply = await self._script("take", queue, [count, "take"])
        return parse_triples(queue, reply, 1) if reply[0] == b"ok" else []

    async def stream_take(self, queue: str, count: int) -> tuple[str, list[Message]]:
        """The hub's drain step: ``("paused", [])``, ``("broadcast", [])`` after publishing, or
        ``("roundrobin", messages)`` for this process's subscribers to share."""
        qk = K.for_queue(queue)
        reply = await self._script("take", queue, [count, "stream", qk.channel, self.default_policy])
        status = reply[0].decode()
        if status == "ok":
            return "roundrobin", parse_triples(queue, reply, 1)
        if status == "broadcast":
            return ("broadcast", []) if int(reply[1]) else ("empty", [])
        return status, []

    async def peek(self, queue: str, count: int) -> list[Message]:
        """The next ``count`` ready messages, left in place."""
        return parse_triples(queue, await self._script("read", queue, ["peek", count]))

    async def get(self, queue: str, n: int) -> Message | None:
        """Message number ``n`` if it is still queued."""
        found = parse_triples(queue, await self._script("read", queue, ["key", n]))
        return found[0] if found else None

    async def soft_get(self, queue: str) -> Message | None:
        """The original soft get: the next message, left in place, its look count increased."""
        found = parse_triples(queue, await self._script("read", queue, ["soft"]))
        return found[0] if found else None

    async def delete(self, queue: str, n: int) -> bool:
        """Delete message ``n`` wherever it is; False when it was not there."""
        return bool(await self._script("del", queue, [n]))

    async def purge(self, queue: str) -> int:
        """Remove every message and end the queue's streams everywhere; answer how many went."""
        return int(await self._script("purge", queue, [K.for_queue(queue).channel]))

    async def length(self, queue: str) -> QueueLength:
        """Messages by state."""
        ready, reserved, delayed, dead = await self._script("len", queue, [])
        return QueueLength(int(ready), int(reserved), int(delayed), int(dead))

    async def queues(self) -> list[str]:
        """Every queue name ever added to, sorted."""
        names = await self._bounded(self.redis.smembers(K.REGISTRY))
        return sorted(n.decode() if isinstance(n, bytes) else n for n in names)

    async def lengths(self, queues: Sequence[str]) -> dict[str, QueueLength]:
        """Lengths of many queues, their scripts sent together (pipelined on the pool)."""
        found = await defer.gatherResults(
            [defer.ensureDeferred(self.length(q)) for q in queues], consumeErrors=True
        ).addErrback(lambda f: f.value.subFailure.raiseException())
        return dict(zip(queues, found))

    async def conf(self, queue: str, op: str = "get", policy: str = "") -> QueueState:
        """Read the queue's state and policy, or pause / resume / set the policy."""
        channel = K.for_queue(queue).channel
        state, current = await self._script("conf", queue, [channel, op, policy, self.default_policy])
        return QueueState(queue, state == b"paused", current.decode())

    async def queue_stats(self, queue: str) -> dict[str, Any]:
        """Counters, lengths, state, policy and subscribers of one queue."""
        counters, lens, state, policy, subs = await self._script("stats", queue, [self.default_policy])
        flat = [c.decode() if isinstance(c, bytes) else c for c in counters]
        numbers = {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}
        length = QueueLength(*(int(x) for x in lens))
        return {
            "length": length,
            "counters": numbers,
            "state": QueueState(queue, state == b"paused", policy.decode()),
            "subscribers": int(subs),
        }

    async def count_subscribers(self, queue: str, delta: int) -> None:
        """Add ``delta`` to this process's stream subscribers on ``queue`` (summed by stats)."""
        await self._script("subs", queue, [self.process_id, delta])

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

        return dict(await self._bounded(redis_facts(self.redis)))
