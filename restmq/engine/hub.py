"""The subscription hub: who gets which message, for every stream and long poll of this process.

Front ends register a sink (``deliver``, ``close``). The hub listens on each interesting queue's
Redis channel (sharded pub/sub: one connection per master, see shards.py) and, on a wake-up, drains the queue through the
engine's atomic stream step: in ``roundrobin`` each message goes to exactly one subscriber anywhere,
in ``broadcast`` the step publishes it and every process hands it to all its subscribers. Pause,
policy and purge live in Redis, so every process sharing the Redis honours them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from collections.abc import Awaitable
from typing import Any, Protocol

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger

from restmq.engine import keys as K
from restmq.engine.records import parse_broadcast
from restmq.engine.shards import ShardLinks
from restmq.model import Message
from restmq.streams import Sink

log = Logger()

#: Wait before draining again after a failed drain (Redis away): streams recover by themselves.
RETRY_DELAY = 1.0


#: Messages taken per ready take-mode subscriber in one drain step: one Redis round trip moves
#: a batch (the original RestMQ's COMET took 10 at a time); flow control still stops a sink
#: that does not drain.
STREAM_BATCH = 16

#: Broadcast messages a sink may be handed while it is not ready (its socket does not drain)
#: before the hub ends its stream with "slow consumer": a bound on what one client can buffer.
SLOW_CONSUMER_BACKLOG = 1000


class Source(Protocol):
    """What the hub needs of the engine: the atomic stream steps, nothing else."""

    async def stream_take(self, queue: str, count: int) -> tuple[str, list[Message]]: ...

    def reserve(self, queue: str, count: int, lease: float | None) -> Awaitable[list[Message]]: ...

    async def replayed(self, queue: str, since: str) -> list[Message]: ...

    async def count_subscribers(self, queue: str, delta: int, *, absolute: bool = False) -> None: ...


def _ready(sink: Sink) -> bool:
    return bool(getattr(sink, "ready", True))


@dataclass(frozen=True)
class SubscriberEndpoint:
    """How to open the hub's pub/sub connection: an endpoint plus the Redis credentials."""

    endpoint: IStreamClientEndpoint
    password: str | None = None
    username: str | None = None


@dataclass(eq=False)
class _Local:
    """This process's interest in one queue: stream sinks, long-poll waiters, drain state."""

    queue: str
    channel: bytes
    sinks: list[Sink] = field(default_factory=list)
    #: Sinks in reserve mode and their lease (None: the queue's); the others take by policy.
    leases: dict[Sink, float | None] = field(default_factory=dict)
    #: Broadcast messages handed to each sink while it was not ready.
    behind: dict[Sink, int] = field(default_factory=dict)
    waiters: list[defer.Deferred[bool]] = field(default_factory=list)
    watchers: int = 0
    subscribed: defer.Deferred[None] = field(default_factory=defer.Deferred)
    draining: bool = False
    again: bool = False
    turn: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def takers(self) -> list[Sink]:
        return [s for s in self.sinks if s not in self.leases]

    @property
    def idle(self) -> bool:
        return not self.sinks and not self.waiters and not self.watchers


def _replay_order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


class _Resuming:
    """A sink that reconnected with a replay id: live messages wait until the missed ones (from
    the replay stream) are delivered, and none is delivered twice."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._held: list[dict[str, Any]] | None = []
        self._last = (0, 0)

    @property
    def ready(self) -> bool:
        return _ready(self.sink)

    def deliver(self, message: dict[str, Any]) -> None:
        if self._held is not None:
            self._held.append(message)
        elif "event_id" not in message or _replay_order(message["event_id"]) > self._last:
            self.sink.deliver(message)

    def close(self, reason: str) -> None:
        self._held = None
        self.sink.close(reason)

    async def replay(self, source: Source, queue: str, since: str) -> None:
        try:
            missed = await source.replayed(queue, since)
        except Exception as e:  # the stream goes on live; say what was not replayed
            log.warn("replay failed queue={queue} since={since}: {error}", queue=queue, since=since, error=e)
            missed = []
        held, self._held = self._held or [], None
        for message in missed:
            self._last = _replay_order(message.event_id)
            self.sink.deliver(message.to_dict())
        for live in held:
            self.deliver(live)


class _Subscription:
    """A registered sink (see :class:`restmq.streams.Subscription`)."""

    def __init__(self, hub: Hub, queue: str, sink: Sink) -> None:
        self._hub, self.queue, self.sink = hub, queue, sink

    def cancel(self) -> None:
        self._hub._remove_sink(self.queue, self.sink)

    def wake(self) -> None:
        """The sink is ready again (its client drained): look at the queue for it."""
        local = self._hub._local.get(self.queue)
        if local is not None and self.sink in local.sinks:
            local.behind.pop(self.sink, None)
            self._hub.drain(local)


class _Watch:
    """Interest in a queue's adds for a long poll (see :class:`restmq.streams.Watch`); subscribed
    before the first look, so no add is missed between an empty take and the wait."""

    def __init__(self, hub: Hub, local: _Local) -> None:
        self._hub, self._local = hub, local

    def ready(self, timeout: float) -> defer.Deferred[bool]:
        """Fire True once the queue's channel is subscribed, False if that takes over ``timeout``
        (Redis away: the caller then just looks once more instead of waiting for wake-ups)."""
        if self._local.subscribed.called:
            return defer.succeed(True)
        d: defer.Deferred[bool] = defer.Deferred()

        def subscribed(result: None) -> None:
            if not d.called:
                d.callback(True)
            return result

        self._local.subscribed.addCallback(subscribed)
        return self._bound(d, timeout)

    def wait(self, timeout: float) -> defer.Deferred[bool]:
        """Fire True on the queue's next add or resume, False after ``timeout`` seconds."""

        def cancel(d: defer.Deferred[bool]) -> None:  # the long-polling client went away
            if d in self._local.waiters:
                self._local.waiters.remove(d)

        d: defer.Deferred[bool] = defer.Deferred(cancel)
        self._local.waiters.append(d)
        return self._bound(d, timeout)

    def _bound(self, d: defer.Deferred[bool], timeout: float) -> defer.Deferred[bool]:
        def expire() -> None:
            if d in self._local.waiters:
                self._local.waiters.remove(d)
            if not d.called:
                d.callback(False)

        call = self._hub.clock.callLater(timeout, expire)

        def settled(result: Any) -> Any:
            if call.active():
                call.cancel()
            return result

        return d.addBoth(settled)

    def close(self) -> None:
        self._local.watchers -= 1
        self._hub._maybe_forget(self._local)


class Hub:
    """Per-process registry of stream sinks and long-poll waiters, fed by Redis pub/sub."""

    #: Seconds between "still alive" notes for this process's subscriber counts (see stats.lua).
    HEARTBEAT = 5.0

    def __init__(self, source: Source, *, clock: IReactorTime) -> None:
        self.source = source
        self.clock = clock
        self._local: dict[str, _Local] = {}
        self._by_channel: dict[bytes, _Local] = {}
        self._proto: ShardLinks | None = None
        self._links: ShardLinks | None = None
        self._alive: task.LoopingCall | None = None
        self._pending_counts: dict[str, int] = {}
        self._count_flush: Any = None
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, target: SubscriberEndpoint, router: Any = None) -> None:
        """Open (and keep reopening) the pub/sub connections, one per master of ``router`` (a
        cluster client) or one to ``target`` (see shards.py); sinks registered earlier wait."""
        self._links = ShardLinks(self, target, router, self.clock)
        self._links.start()
        self._connected(self._links)
        self._alive = task.LoopingCall(self._say_alive)
        self._alive.clock = self.clock
        self._alive.start(self.HEARTBEAT, now=False)

    def _say_alive(self) -> None:
        """Write this process's subscriber counts as they are (not as increments), so stats keeps
        counting them and a count Redis lost (it came back empty) is repaired."""
        for local in self._local.values():
            if local.sinks:
                self._pending_counts.pop(local.queue, None)  # the absolute count includes them
                defer.ensureDeferred(self._count(local.queue, len(local.sinks), absolute=True))

    async def stop(self) -> None:
        """End every stream (``shutdown``) and close the pub/sub connection."""
        self._stopping = True
        if self._alive is not None and self._alive.running:
            self._alive.stop()
        if self._count_flush is not None and self._count_flush.active():
            self._count_flush.cancel()
        for queue, delta in self._pending_counts.items():
            if delta:
                await self._count(queue, delta)
        self._pending_counts = {}
        for local in list(self._local.values()):
            if local.sinks:
                await self._count(local.queue, -len(local.sinks))
            for sink in list(local.sinks):
                sink.close("shutdown")
            waiters, local.waiters = local.waiters, []
            for d in waiters:
                if not d.called:
                    d.callback(False)
        if self._links is not None:
            await self._links.stop()

    # -- registration -------------------------------------------------------------------------

    def subscribe(
        self,
        queue: str,
        sink: Sink,
        *,
        mode: str = "take",
        lease: float | None = None,
        since: str | None = None,
    ) -> _Subscription:
        """Register a stream sink. In ``take`` mode it receives the queue's messages by the queue's
        policy (at-most-once); in ``reserve`` mode each message goes to one reserve sink with a
        receipt, and comes back after ``lease`` unless acked (at-least-once, whatever the policy).
        ``since`` (a broadcast replay id) first replays the broadcast messages after it."""
        if since is not None:
            sink = _Resuming(sink)
            defer.ensureDeferred(sink.replay(self.source, queue, since))
        local = self._interest(queue)
        local.sinks.append(sink)
        if mode == "reserve":
            local.leases[sink] = lease
        self._note_count(queue, 1)
        local.subscribed.addCallback(lambda _: self.drain(local))
        return _Subscription(self, queue, sink)

    def watch(self, queue: str) -> _Watch:
        """Start watching a queue for adds (long polls)."""
        local = self._interest(queue)
        local.watchers += 1
        return _Watch(self, local)

    def subscribers(self, queue: str) -> int:
        """How many stream sinks this process has on ``queue``."""
        local = self._local.get(queue)
        return len(local.sinks) if local else 0

    def total_subscribers(self) -> int:
        """How many stream sinks this process has, all queues together (the process table)."""
        return sum(len(local.sinks) for local in self._local.values())

    def _interest(self, queue: str) -> _Local:
        local = self._local.get(queue)
        if local is None:
            channel = K.for_queue(queue).channel.encode()
            local = self._local[queue] = _Local(queue, channel)
            self._by_channel[channel] = local
            if self._proto is not None:
                self._subscribe(self._proto, local)
        return local

    def _remove_sink(self, queue: str, sink: Sink) -> None:
        local = self._local.get(queue)
        if local is None or sink not in local.sinks:
            return
        local.sinks.remove(sink)
        local.leases.pop(sink, None)
        local.behind.pop(sink, None)
        if not self._stopping:
            self._note_count(queue, -1)
        self._maybe_forget(local)

    def _maybe_forget(self, local: _Local) -> None:
        if local.idle and self._local.get(local.queue) is local:
            del self._local[local.queue]
            del self._by_channel[local.channel]
            if self._proto is not None and self._proto.connected:
                self._proto.unsubscribe([local.channel]).addErrback(lambda _: None)

    def _note_count(self, queue: str, delta: int) -> None:
        """Collect subscriber count changes and send each queue's net change once per reactor
        turn: ten thousand clients leaving at once cost one Redis call, not ten thousand."""
        self._pending_counts[queue] = self._pending_counts.get(queue, 0) + delta
        if self._count_flush is None or not self._count_flush.active():
            self._count_flush = self.clock.callLater(0, self._flush_counts)

    def _flush_counts(self) -> None:
        pending, self._pending_counts = self._pending_counts, {}
        for queue, delta in pending.items():
            if delta:
                defer.ensureDeferred(self._count(queue, delta))

    async def _count(self, queue: str, delta: int, *, absolute: bool = False) -> None:
        try:
            await self.source.count_subscribers(queue, delta, absolute=absolute)
        except Exception as e:  # stats only: never let it break a stream
            log.debug("could not count subscribers queue={queue}: {error}", queue=queue, error=e)

    # -- pub/sub connection -------------------------------------------------------------------

    def _subscribe(self, proto: ShardLinks, local: _Local) -> None:
        def done(_: Any) -> None:
            if not local.subscribed.called:
                local.subscribed.callback(None)

        proto.subscribe([local.channel]).addCallbacks(done, lambda f: log.failure("subscribe", f))

    def _connected(self, proto: ShardLinks) -> None:
        log.info("redis pub/sub started queues={count}", count=len(self._local))
        self._proto = proto
        again = False
        for local in self._local.values():
            self._subscribe(proto, local)
            if local.subscribed.called:
                # Reconnected: events may have been missed while away, so look at the queue again.
                again = True
                self.drain(local)
                self._wake(local)
        if again:
            self._say_alive()  # Redis may have come back without our counts

    def _missed(self, channel: bytes) -> None:
        """``channel`` was subscribed again (a reconnect, a failover, its slot moved): events
        published meanwhile went unheard, so look at its queue again."""
        local = self._by_channel.get(channel)
        if local is not None:
            self.drain(local)
            self._wake(local)

    def _event(self, channel: bytes, message: bytes) -> None:
        local = self._by_channel.get(channel)
        if local is None:
            return
        kind = message[:1]
        if kind == b"a" or kind == b"r":
            self._wake(local)
            if local.sinks:
                self.drain(local)
        elif kind == b"b":
            self._broadcast(local, message[1:])
        elif kind == b"p":
            for sink in list(local.sinks):
                sink.close("purged")

    def _wake(self, local: _Local) -> None:
        waiters, local.waiters = local.waiters, []
        for d in waiters:
            if not d.called:  # a cancelled long poll (client gone) is already called
                d.callback(True)

    def _broadcast(self, local: _Local, payload: bytes) -> None:
        event_id, body = payload.split(b"|", 1)
        message = parse_broadcast(local.queue, event_id, body).to_dict()
        for sink in local.takers:
            if not _ready(sink):
                local.behind[sink] = local.behind.get(sink, 0) + 1
                if local.behind[sink] > SLOW_CONSUMER_BACKLOG:
                    log.info("slow consumer dropped queue={queue}", queue=local.queue)
                    sink.close("slow consumer")
                    continue
            sink.deliver(message)

    # -- draining -----------------------------------------------------------------------------

    def drain(self, local: _Local) -> None:
        """Move ready messages to this process's sinks until the queue is empty or paused."""
        if local.draining:
            local.again = True
            return
        defer.ensureDeferred(self._drain(local))

    async def _drain(self, local: _Local) -> None:
        local.draining = True
        try:
            while local.sinks and self._local.get(local.queue) is local:
                local.again = False
                moved = await self._drain_takers(local) + await self._drain_reservers(local)
                if not moved and not local.again:
                    break
        except Exception as e:
            log.warn("stream drain failed queue={queue}: {error}; retrying", queue=local.queue, error=e)
            self.clock.callLater(RETRY_DELAY, self.drain, local)
        finally:
            local.draining = False

    async def _drain_takers(self, local: _Local) -> int:
        """One step for take-mode sinks: by policy. Answers how much moved (0: nothing to do)."""
        ready = [s for s in local.takers if _ready(s)]
        if not ready:
            return 0  # nobody can take more now: messages stay queued until a sink wakes
        status, messages = await self.source.stream_take(local.queue, len(ready) * STREAM_BATCH)
        for message in messages:
            ready = [s for s in local.takers if _ready(s)] or local.takers
            if not ready:
                break  # nobody left; at-most-once take: the message is gone, like the original
            ready[next(local.turn) % len(ready)].deliver(message.to_dict())
        return 1 if status == "broadcast" else len(messages)

    async def _drain_reservers(self, local: _Local) -> int:
        """One step for reserve-mode sinks: one message each, per distinct lease, with receipts.
        A reserved message whose sink left meanwhile simply comes back after its lease."""
        moved = 0
        by_lease: dict[float | None, list[Sink]] = {}
        for sink, lease in local.leases.items():
            if _ready(sink):
                by_lease.setdefault(lease, []).append(sink)
        for lease, sinks in by_lease.items():
            messages = await self.source.reserve(local.queue, len(sinks), lease)
            for sink, message in zip(sinks, messages):
                if sink in local.leases:
                    sink.deliver(message.to_dict())
            moved += len(messages)
        return moved

