"""The dispatcher: the one door to the queue engine for every front end.

``execute(name, args, principal)`` validates the arguments against the command table, checks the
caller's right, runs the command on the engine and answers the command's JSON shape (docs/commands.md), or
fails with a :class:`~restmq.errors.RestMQError`. Front ends only translate framing.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq import commands
from restmq.commands import check_push_url
from restmq.auth import permits
from restmq.coalesce import execute_run
from restmq.engine import QueueEngine
from restmq.streams import Sink, Subscription
from restmq.errors import BadRequest, Empty, Forbidden, LimitExceeded, NotFound, RestMQError, TooLarge
from restmq.engine.keys import DEAD_SUFFIX
from restmq.dispatch_schedules import SCHEDULE_COMMANDS, ScheduleCommands
from restmq.latency import Latency, PushMetrics
from restmq.parallel import gather
from restmq.ports import TRUSTED, Authorizer, Principal
from restmq.model import Message, QueueLength, QueueState, add_answer, add_many_answer, encode_value
from restmq.values import parse_int, shown

log = Logger()


#: A broadcast replay id (a Redis stream id).
REPLAY_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}\Z")
#: The largest message number: Redis counts them in a signed 64-bit integer.
MAX_NUMBER = 2**63 - 1

#: Per-queue counters that stats always shows (zero until something happens).
COUNTERS = ("added", "taken", "reserved", "acked", "nacked", "returned", "expired", "dead", "redriven")

#: Commands whose answer lists queues: they get the caller and show only the queues it may read.
LISTINGS = frozenset({"list", "stats", "state"})


def changes_settings(name: str, parsed: Mapping[str, Any]) -> bool:
    """``policy`` and ``config`` read with the read right, but change settings with admin."""
    if name == "policy":
        return bool(parsed.get("policy"))
    if name == "config":
        return any(value is not None for key, value in parsed.items() if key != "queue")
    return False


def _state_dict(state: QueueState) -> dict[str, Any]:
    """State in both spellings: ours (``state``) and the original's (``status`` 1 running / 0 paused)."""
    return {"queue": state.queue, "state": state.state, "status": 0 if state.paused else 1}


async def _first_of(waits: list[defer.Deferred[bool]]) -> None:
    """Wait until one of ``waits`` fires, then drop the others (their timers and waiter slots).
    Cancelling it (the client left) cancels them all and raises, so nothing is taken after."""
    def cancel_waits(_: defer.Deferred[None]) -> None:
        for d in waits:
            if not d.called:
                d.cancel()

    first: defer.Deferred[None] = defer.Deferred(cancel_waits)

    def fired(result: Any) -> None:
        if not first.called and not (isinstance(result, Failure) and result.check(defer.CancelledError)):
            first.callback(None)

    for d in waits:
        d.addBoth(fired)
    try:
        await first
    finally:
        for d in waits:
            if not d.called:
                d.cancel()


def _moment(ms_text: str | None) -> float | None:
    """A stored Redis time in ms as Unix seconds (None when never)."""
    return int(ms_text) / 1000.0 if ms_text else None


def push_dict(queue: str, found: Mapping[str, Any]) -> dict[str, Any]:
    """A subscription as ``push_get`` shows it: its settings (the secret redacted) and its state."""
    return {
        "queue": queue,
        "url": found["url"],
        "secret": "***" if found.get("secret") else None,
        "timeout": int(found.get("timeout", 0)) / 1000.0,
        "concurrency": int(found.get("concurrency", 1)),
        "backoff": json.loads(found.get("backoff", "[]")),
        "max_attempts": found["max_attempts"],
        "lease": found["lease"],
        "in_flight": found["in_flight"],
        "pushed": int(found.get("pushed", 0)),
        "failed": int(found.get("failed", 0)),
        "last_success": _moment(found.get("last_ok")),
        "last_error": found.get("last_error"),
        "last_error_at": _moment(found.get("last_error_at")),
    }


def _taken(messages: list[Message], count: int | None) -> Any:
    """A take's answer: the messages with ``count`` 0 (see :meth:`Dispatcher._cmd_take`)."""
    shapes = []
    for m in messages:
        shape = m.to_dict()
        shape["count"] = 0
        shapes.append(shape)
    return _one_or_list(shapes, count)


def _one_or_list(shapes: list[dict[str, Any]], count: int | None) -> Any:
    """With ``count``, the list; without, the one message (``empty`` when there is none)."""
    if count is not None:
        return shapes
    if not shapes:
        raise Empty("empty queue")
    return shapes[0]


def _length_dict(queue: str, length: QueueLength) -> dict[str, Any]:
    return {"queue": queue, "len": length.total, **length.to_dict()}


class Dispatcher(ScheduleCommands):
    """Runs commands from the table against one engine; counts them for stats and metrics."""

    def __init__(
        self,
        engine: QueueEngine,
        *,
        max_message_size: int = 1 << 20,
        authorize: Authorizer | None = None,
        check_token: Callable[[str], None] | None = None,
        max_subscribers: int = 0,
        push_allow: tuple[str, ...] = (),
    ) -> None:
        self.engine = engine
        #: URL prefixes a push subscription may deliver to (``--push-allow``); none: push is off.
        self.push_allow = push_allow
        self.max_message_size = max_message_size
        self.authorize = authorize
        #: How ``auth TOKEN`` is judged: the tokens file's check (None: through ``authorize``).
        self.check_token = check_token
        #: Most stream subscribers of one queue in this process (0: no limit).
        self.max_subscribers = max_subscribers
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.latency = Latency()
        #: ``--workers``: what ``stats`` adds for the whole server (processes, summed commands,
        #: the server's uptime), given ``detail`` (see restmq/workers/table.py). None: this process is the server.
        self.server_view: Callable[[bool], Awaitable[dict[str, Any]]] | None = None
        #: This process's push deliveries (the pusher counts; metrics show them).
        self.push_metrics = PushMetrics()

    @property
    def redis_latency(self) -> Latency:
        """How long Redis calls took, by script (the engine measures; metrics show it)."""
        return self.engine.redis_latency

    # -- the door -----------------------------------------------------------------------------

    def execute(
        self, name: str, args: Mapping[str, Any], principal: Principal = None, *, frontend: str = "other"
    ) -> defer.Deferred[Any]:
        """Run command ``name``; the Deferred fires with its JSON-able answer or a RestMQError.

        ``frontend`` labels the command's duration in :attr:`latency` (a name that is not a
        command is labelled ``unknown``, so clients cannot grow the label set).
        """
        start = time.monotonic()
        label = name if isinstance(name, str) and name in commands.COMMANDS else "unknown"
        latency = self.latency

        def timed(outcome: Any) -> Any:
            latency.observe(frontend, label, time.monotonic() - start)
            return outcome

        try:
            result = self._start(name, args, principal)
        except RestMQError as e:
            self.errors[e.code] += 1
            d: defer.Deferred[Any] = defer.fail(e)
        except Exception:
            d = defer.fail()
        else:
            # The hot commands answer a Deferred chain; the others are coroutines.
            d = result if isinstance(result, defer.Deferred) else defer.ensureDeferred(result)
            d.addErrback(self._count_error)
        return d.addBoth(timed)

    def _start(self, name: str, args: Mapping[str, Any], principal: Principal) -> Any:
        """Check and start command ``name``: its handler's Deferred or coroutine. Validation and
        authorization are synchronous, so a refused command costs no Deferred chain."""
        return self.run_parsed(name, self.prepare(name, args, principal), principal)

    def _count_error(self, failure: Failure) -> Failure:
        error = failure.value
        if isinstance(error, RestMQError):
            self.errors[error.code] += 1
        return failure

    def prepare(self, name: str, args: Mapping[str, Any], principal: Principal) -> dict[str, Any]:
        """Check ``args`` against the table and the caller's right, and count the call: what every
        command does before it runs (alone, or in a coalesced run, see restmq/coalesce.py)."""
        command = commands.lookup(name)
        parsed = commands.parse(command, args)
        if self.authorize is not None and principal is not TRUSTED:
            right = "admin" if changes_settings(name, parsed) else command.right
            for target in parsed.get("queues") or [parsed.get("queue")]:  # take over several
                self.authorize(principal, right, target)
        self.calls[name] += 1
        return parsed

    def run_parsed(self, name: str, parsed: dict[str, Any], principal: Principal) -> Any:
        """Run a command that :meth:`prepare` checked, on its own."""
        handler = getattr(self, "_cmd_" + name)
        if name in LISTINGS or name in SCHEDULE_COMMANDS:
            return handler(principal=principal, **parsed)
        return handler(**parsed)

    def execute_run(
        self, calls: Sequence[tuple[str, Mapping[str, Any]]], principal: Principal = None, *, frontend: str = "other"
    ) -> defer.Deferred[list[Any]]:
        """Run consecutive commands of one connection in order, coalescing runs of one kind on one
        queue into one script each (see restmq/coalesce.py); fires with each command's answer or
        its Failure, in order."""
        return defer.ensureDeferred(execute_run(self, calls, principal, frontend))

    def authenticate(self, token: str) -> None:
        """Check a token up front (the line protocol's ``auth``): ``unauthorized`` if unknown,
        ``bad_request`` when this server has no tokens."""
        if self.check_token is not None:
            self.check_token(token)
            return
        if self.authorize is None:
            raise BadRequest("auth is not enabled on this server")
        try:
            self.authorize(token, "read", None)
        except Forbidden:
            pass  # known, just without read: its own commands will say what it may do

    def subscribe(
        self,
        queue: str,
        sink: Sink,
        *,
        mode: str = "take",
        lease: Any = None,
        since: Any = None,
        principal: Principal = None,
    ) -> Subscription:
        """Register a stream sink for ``queue`` (COMET, SSE, WebSocket, line subscribe).

        ``mode`` ``take`` follows the queue's policy; ``reserve`` delivers each message to one
        subscriber with a receipt, hidden for ``lease`` seconds (the queue's lease when None).
        ``since``: a broadcast ``event_id`` this subscriber saw last (SSE's ``Last-Event-ID``);
        the broadcast messages after it that the replay stream still holds come first.
        """
        if since is not None and not (isinstance(since, str) and REPLAY_ID.match(since)):
            raise BadRequest(f"since must be a broadcast event id like 1700000000000-0, not {shown(since)}")
        commands.check_queue(queue)
        if mode not in ("take", "reserve"):
            raise BadRequest(f"stream mode must be take or reserve, not {shown(mode)}")
        if lease is not None:
            lease = commands.parse(commands.COMMANDS["reserve"], {"queue": queue, "lease": lease})["lease"]
        if self.authorize is not None and principal is not TRUSTED:
            self.authorize(principal, "read", queue)
        if self.max_subscribers and self.engine.subscribers(queue) >= self.max_subscribers:
            self.errors["limit_exceeded"] += 1
            raise LimitExceeded(
                f"queue {queue} has {self.max_subscribers} subscribers here, the limit (--max-subscribers)"
            )
        self.calls["subscribe"] += 1
        return self.engine.subscribe(queue, sink, mode=mode, lease=lease, since=since)

    # -- commands -----------------------------------------------------------------------------

    def _encode(self, value: Any) -> bytes:
        """The stored JSON of ``value``, refused when the message itself is over the limit: a text
        counts its UTF-8 bytes, any other value its compact JSON (not the JSON escaping of a text,
        which can double it: 600,000 ``"`` are 600,000 bytes, not 1.2 MB)."""
        encoded = encode_value(value)
        size = len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else len(encoded)
        if size > self.max_message_size:
            raise TooLarge(
                f"message is {size} bytes; the limit is {self.max_message_size}",
            )
        return encoded

    def _cmd_add(
        self,
        queue: str,
        value: Any,
        priority: int,
        ttl: float,
        delay: float,
        dedup: str | None,
        unique: bool,
        len: bool,  # noqa: A002 - the argument's name in the command table
    ) -> defer.Deferred[dict[str, Any]]:
        """A plain Deferred chain (every add's path); the answer is :func:`_added_one`'s."""
        items = [(self._encode(value), priority, ttl, delay, dedup, unique)]
        return self.engine.add_counted(queue, items).addCallback(
            lambda added: add_answer(queue, value, added[0][0], added[1] if len else None)
        )

    def _cmd_add_many(
        self, queue: str, messages: list[dict[str, Any]], len: bool  # noqa: A002 - as in the table
    ) -> defer.Deferred[dict[str, Any]]:
        """A plain Deferred chain; the answer is :func:`_added_many`'s."""
        items = [
            (self._encode(m["value"]), m["priority"], m["ttl"], m["delay"], m["dedup"], m["unique"])
            for m in messages
        ]
        return self.engine.add_counted(queue, items).addCallback(
            lambda added: add_many_answer(queue, added[0], added[1] if len else None)
        )

    async def _cmd_find(self, queue: str, value: Any) -> dict[str, Any]:
        """Encoded exactly as add stores it, so "the same value" means the same JSON text."""
        n = await self.engine.find(queue, self._encode(value))
        return {"queue": queue, "key": None if n is None else f"{queue}:{n}"}

    def _cmd_take(self, queue: str | None, count: int | None, wait: float, queues: list[str] | None) -> Any:
        """A take answers ``count`` 0, as the original's did (only its soft get counts looks).
        With ``queues``, from the first listed queue that has messages (each message names it).
        A take from one queue without ``wait`` (the common one) is a plain Deferred chain."""
        if (queue is None) == (queues is None):
            raise BadRequest("take needs queue or queues (not both)")
        if queues is None and wait <= 0:
            return self.engine.take(queue or "", count or 1).addCallback(_taken, count)
        return defer.ensureDeferred(self._take_waiting(queue, count, wait, queues))

    async def _take_waiting(
        self, queue: str | None, count: int | None, wait: float, queues: list[str] | None
    ) -> Any:
        if queues is not None:
            delivered = await self._deliver_first(queues, count or 1, wait)
        else:
            delivered = await self._deliver(queue or "", count or 1, wait, None)
        return _taken(delivered, count)

    async def _deliver_first(self, queues: list[str], count: int, wait: float) -> list[Message]:
        """Take up to ``count`` from the first of ``queues`` that has any, long-polling on all."""

        async def once() -> list[Message]:
            for queue in queues:
                messages = await self.engine.take(queue, count)
                if messages:
                    return messages
            return []

        return await self._long_poll(queues, once, wait)

    async def _cmd_reserve(self, queue: str, count: int | None, lease: float | None, wait: float) -> Any:
        return _one_or_list([m.to_dict() for m in await self._deliver(queue, count or 1, wait, lease or 0.0)], count)

    async def _deliver(self, queue: str, count: int, wait: float, lease: float | None) -> list[Message]:
        """Take (``lease`` None) or reserve up to ``count``, long-polling up to ``wait`` seconds."""

        def once() -> Any:
            if lease is None:
                return self.engine.take(queue, count)
            return self.engine.reserve(queue, count, lease or None)

        return await self._long_poll([queue], once, wait)

    async def _long_poll(
        self, queues: list[str], once: Callable[[], Awaitable[list[Message]]], wait: float
    ) -> list[Message]:
        """``once()`` now, then again each time an add (anywhere) wakes one of ``queues``, for up
        to ``wait`` seconds: no polling. The queues are watched before the second look, so no add
        falls between an empty look and the wait."""
        messages = await once()
        if messages or wait <= 0:
            return messages
        deadline = time.monotonic() + wait
        watches = [self.engine.watch(queue) for queue in queues]
        try:
            await gather(w.ready(wait) for w in watches)
            while True:
                messages = await once()
                remaining = deadline - time.monotonic()
                if messages or remaining <= 0:
                    return messages
                await _first_of([w.wait(remaining) for w in watches])
        finally:
            for w in watches:
                w.close()

    def _cmd_ack(self, queue: str, receipt: list[str], next: bool, lease: float | None, wait: float) -> Any:
        """With ``next``, a worker's loop is one request and one script per message: the ack and
        the next reserve run together (then, if nothing was ready, a long poll up to ``wait``). A
        stale receipt fails the whole call before anything is reserved, so no message is left
        leased to a caller that was told "error". A plain Deferred chain: a worker's hot path."""
        if not next:
            return self.engine.ack(queue, receipt).addCallback(lambda acked: {"queue": queue, "acked": acked})

        def shaped(delivered: list[Message]) -> dict[str, Any]:
            return {"queue": queue, "acked": len(receipt), "next": delivered[0].to_dict() if delivered else None}

        def answer(delivered: list[Message]) -> Any:
            if not delivered and wait > 0:  # nothing ready: long-poll for the next one
                return defer.ensureDeferred(self._deliver(queue, 1, wait, lease or 0.0)).addCallback(shaped)
            return shaped(delivered)

        return self.engine.ack_next(queue, receipt, lease or None).addCallback(answer)

    async def _cmd_nack(self, queue: str, receipt: str, delay: float, error: str | None) -> dict[str, Any]:
        where = await self.engine.nack(queue, receipt, delay, error)
        return {"queue": queue, "nacked": 1, "state": where}

    async def _cmd_touch(self, queue: str, receipt: str, lease: float | None) -> dict[str, Any]:
        return {"queue": queue, "lease_until": await self.engine.touch(queue, receipt, lease)}

    async def _cmd_config(self, queue: str, **settings: Any) -> dict[str, Any]:
        changes = {name: value for name, value in settings.items() if value is not None}
        return {"queue": queue, **await self.engine.config(queue, changes)}

    async def _cmd_redrive(self, queue: str, count: int | None) -> dict[str, Any]:
        if queue.endswith(DEAD_SUFFIX):
            raise BadRequest(f"redrive the queue itself ({queue[: -len(DEAD_SUFFIX)]}), not its dead letters")
        return {"queue": queue, "moved": await self.engine.redrive(queue, count)}

    async def _cmd_peek(self, queue: str, count: int | None, state: str) -> Any:
        if state == "dead":
            queue, state = queue + DEAD_SUFFIX, "ready"
        return _one_or_list([m.to_dict() for m in await self.engine.peek(queue, count or 1, state)], count)

    @staticmethod
    def _number(queue: str, key: str) -> int:
        """The ``n`` of key ``<queue>:<n>`` (a bare ``n`` is accepted too), in ASCII digits."""
        prefix, _, n = key.rpartition(":")
        if prefix and prefix != queue:
            raise NotFound(f"key {shown(key, 200)} does not belong to queue {queue!r}")
        number = parse_int(n, signed=False, digits=19)
        if number is None or number > MAX_NUMBER:
            raise BadRequest(f"bad message key {shown(key, 200)}: expected '{queue}:<number>'")
        return number

    async def _cmd_get(self, queue: str, key: str | None) -> dict[str, Any]:
        if key is None:
            message = await self.engine.soft_get(queue)
            if message is None:
                raise Empty("empty queue")
        else:
            message = await self.engine.get(queue, self._number(queue, key))
            if message is None:
                raise NotFound(f"no message {key!r} in queue {queue!r}")
        return message.to_dict()

    async def _cmd_del(self, queue: str, key: str | None, value: Any) -> dict[str, Any]:
        """By ``key`` (``deleted`` true/false, as the original answered), or by ``value``: the held
        unique message with that value, found and deleted in one script (``deleted`` 0 or 1)."""
        if (key is None) == (value is None):
            raise BadRequest("del needs key or value (not both)")
        if key is None:
            found = await self.engine.delete_value(queue, self._encode(value))
            return {"queue": queue, "deleted": int(found is not None), "key": None if found is None else f"{queue}:{found}"}
        n = self._number(queue, key)
        deleted = await self.engine.delete(queue, n)
        return {"queue": queue, "deleted": deleted, "key": f"{queue}:{n}"}

    async def _cmd_purge(self, queue: str) -> dict[str, Any]:
        purged = await self.engine.purge(queue)
        return {"queue": queue, "status": 1 if purged else 0, "purged": purged}

    async def _cmd_len(self, queue: str) -> dict[str, Any]:
        return _length_dict(queue, await self.engine.length(queue))

    async def _readable_queues(self, principal: Principal) -> list[str]:
        """The queues ``principal`` may read, sorted: the one rule of every listing, applied
        before anything is fetched, so a hidden queue costs no script and its name shows nowhere."""
        names = await self.engine.queues()
        if self.authorize is None or principal is TRUSTED:
            return names
        return [name for name in names if permits(self.authorize, principal, "read", name)]

    async def _cmd_list(self, principal: Principal) -> dict[str, Any]:
        names = await self._readable_queues(principal)
        lengths = await self.engine.lengths(names)
        return {
            "queues": {name: _length_dict(name, length) for name, length in lengths.items()},
            "count": len(names),
        }

    async def _redis_description(self) -> str:
        info = await self.engine.redis_info()
        flavour = "valkey" if "valkey_version" in info else "redis"
        version = info.get("valkey_version") or info.get("redis_version", "?")
        return f"{flavour} {version}"

    async def _cmd_stats(self, queue: str | None, detail: bool, principal: Principal) -> dict[str, Any]:
        """Without a queue: every readable queue's state, and with ``detail`` its lengths and
        counters too, read a batch of queues per script (metrics, RESP INFO and memcached stats
        use that instead of asking queue by queue)."""
        redis = await self._redis_description()
        if queue is not None:
            found = await self.engine.queue_stats(queue)
            length: QueueLength = found["length"]
            counters = {k: found["counters"].get(k, 0) for k in COUNTERS}
            return {
                **_state_dict(found["state"]),
                "len": length.total,
                "redis": redis,
                "policy": found["state"].policy,
                "length": length.to_dict(),
                "counters": counters,
                "subscribers": found["subscribers"],
                "push": await self._push_state(queue),
            }
        names = await self._readable_queues(principal)
        found_all = await self.engine.queues_stats(names)
        queues = {}
        for name, found in found_all.items():
            state: QueueState = found["state"]
            queues[name] = {
                "name": name,
                "len": found["length"].total,
                "status": 0 if state.paused else 1,
                "state": state.state,
                "policy": 1 if state.policy == "broadcast" else 2,
                "policy_name": state.policy,
                "subscribers": found["subscribers"],
            }
            if detail:
                queues[name]["length"] = found["length"].to_dict()
                queues[name]["counters"] = {k: found["counters"].get(k, 0) for k in COUNTERS}
        answer = {
            "queues": queues,
            "count": len(names),
            "redis": redis,
            "uptime": round(time.time() - self.engine.started_at, 3),
            "process": self.engine.process_id,
            "commands": dict(self.calls),
        }
        if self.server_view is not None:
            answer.update(await self.server_view(detail))
        return answer

    async def _push_state(self, queue: str) -> dict[str, Any] | None:
        """The queue's push subscription and its state for ``/stats/<q>`` (None: none)."""
        found = await self.engine.push(queue)
        return None if found is None else push_dict(queue, found)

    async def _cmd_state(self, queue: str | None, principal: Principal) -> dict[str, Any]:
        if queue is not None:
            return _state_dict(await self.engine.queue_state(queue))
        names = await self._readable_queues(principal)
        states = await gather(defer.ensureDeferred(self.engine.queue_state(q)) for q in names)
        return {"queues": {s.queue: _state_dict(s) for s in states}}

    async def _cmd_pause(self, queue: str) -> dict[str, Any]:
        return _state_dict(await self.engine.queue_state(queue, "pause"))

    async def _cmd_resume(self, queue: str) -> dict[str, Any]:
        return _state_dict(await self.engine.queue_state(queue, "resume"))

    async def _cmd_policy(self, queue: str, policy: str | None) -> dict[str, Any]:
        state = await self.engine.queue_state(queue, "policy" if policy else "get", policy or "")
        return {"queue": queue, "policy": state.policy, "value": state.policy}

    async def _cmd_push_set(
        self, queue: str, url: str, secret: str | None, timeout: float, concurrency: int, backoff: tuple[float, ...]
    ) -> dict[str, Any]:
        if queue.endswith(DEAD_SUFFIX):
            raise BadRequest(f"a dead-letter queue ({queue}) cannot have a push subscription")
        check_push_url(url, self.push_allow)
        fields = {
            "url": url,
            "timeout": str(round(timeout * 1000)),
            "concurrency": str(concurrency),
            "backoff": json.dumps(list(backoff)),
        }
        if secret:
            fields["secret"] = secret
        found = await self.engine.push(queue, "set", fields)
        assert found is not None  # just set
        return push_dict(queue, found)

    async def _cmd_push_get(self, queue: str) -> dict[str, Any]:
        found = await self.engine.push(queue)
        if found is None:
            raise NotFound(f"queue {queue!r} has no push subscription")
        return push_dict(queue, found)

    async def _cmd_push_rm(self, queue: str) -> dict[str, Any]:
        found = await self.engine.push(queue)
        await self.engine.push(queue, "rm")
        return {"queue": queue, "removed": found is not None}

    async def _cmd_health(self) -> dict[str, Any]:
        facts = await self.engine.facts()
        answer = {"status": "ok", "redis": facts, "warnings": facts.get("warnings", [])}
        if self.server_view is not None:  # --workers: how many answer (each reported within seconds)
            answer["workers"] = (await self.server_view(False))["workers"]
        return answer
