"""The Redis key schema, in one place.

Every key of queue ``q`` carries the hash tag ``{q}``; the dead-letter queue ``q.dead`` shares it, so
one script never touches two Redis Cluster slots. Cross-queue structures (the registry of names) are
written by separate idempotent commands. Pure: no Redis, no Twisted.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

PREFIX = "rmq"
REGISTRY = f"{PREFIX}:queues"
#: ZSET queue -> when something in it is next due (delay, lease, ttl): what the sweeper looks at.
TIMERS = f"{PREFIX}:timers"
#: On a Redis Cluster the registry and the timers are split into this many buckets, each under its
#: own hash tag, so that they spread over the shards and no one slot is hot (see global_keys).
CLUSTER_BUCKETS = 16
#: HASH process id -> JSON of what that worker process reports (``--workers``: /stats, /metrics).
PROCESSES = f"{PREFIX}:processes"
#: SET of the queues that have a push subscription: where delivering processes look (written
#: with separate idempotent commands, beside the queue's own script).
PUSHING = f"{PREFIX}:push"
DEAD_SUFFIX = ".dead"
# -- recurring schedules (restmq/engine/schedules.py): each schedule's truth lives in its target
# queue's ``schedules`` hash; these two global indexes are written by separate idempotent commands
# and repaired from that truth when they lag.
#: HASH schedule name -> its target queue.
SCHEDULES = f"{PREFIX}:schedules"
#: ZSET schedule name -> when it is next due (ms): what the firing loops look at.
SCHEDULES_DUE = f"{PREFIX}:schedules:due"
#: ZSET score = priority * PRIORITY_STEP + n: lower priority first, FIFO (by n) within one.
PRIORITY_STEP = 10**13
#: A unique message's record keeps this byte before its value JSON (JSON text never starts with
#: it), so every script can tell, from the record alone, that removing it must update the index.
UNIQUE_MARK = b"u"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The names of one queue's keys and of its event channel."""

    queue: str
    ready: str  # ZSET n -> priority * PRIORITY_STEP + n
    reserved: str  # ZSET n -> lease deadline (ms)
    delayed: str  # ZSET n -> due time (ms)
    messages: str  # HASH n -> record "priority:enqueued_ms:attempts:expire_ms:" + ["u"] + value JSON
    seen: str  # HASH n -> how often the soft get looked at it
    receipts: str  # HASH n -> the receipt of its current reservation
    errors: str  # HASH n -> the last error a nack carried
    expiry: str  # ZSET n -> when it is dropped unless consumed (ttl), ms
    dedup: str  # HASH dedup string -> n
    dedup_until: str  # ZSET dedup string -> end of its window, ms
    unique: str  # HASH sha1 of a unique message's value JSON -> n, while that message is held
    seq: str  # STRING counter of n, shared with the dead-letter queue: keys are never reused
    conf: str  # HASH state, policy and settings (max_attempts, lease, ...)
    stats: str  # HASH counters: added, taken, reserved, acked, nacked, expired, dead
    subs: str  # HASH process id -> number of stream subscribers there
    subs_seen: str  # HASH process id -> when it last said it is alive (ms), for crashed processes
    dead: str  # ZSET: the dead-letter queue's ready set
    dead_messages: str  # HASH: the dead-letter queue's records
    dead_errors: str  # HASH: the dead-letter queue's last errors
    replay: str  # STREAM of the last broadcast messages, for subscribers that reconnect
    push: str  # HASH the push subscription (url, secret, timeout, concurrency, backoff) and its state
    push_inflight: str  # ZSET n -> lease deadline (ms) of each message being pushed now
    channel: str  # pub/sub channel for wake-ups, purge and broadcast
    schedules: str  # HASH schedule name -> "next_ms:last_ms:fires:last_n:" + definition JSON

    def pick(self, roles: tuple[str, ...]) -> list[str]:
        """The key names for ``roles`` (a script's declared ``-- KEYS:`` line), in that order."""
        return [getattr(self, role) for role in roles]


@lru_cache(maxsize=65536)
def script_keys(queue: str, roles: tuple[str, ...]) -> tuple[list[str], str]:
    """The key names a script declares (``roles``) for ``queue``, and its channel: cached, as every
    command asks (a script takes up to fifteen keys). The list is shared: never change it."""
    qk = for_queue(queue)
    return qk.pick(roles), qk.channel


@lru_cache(maxsize=65536)
def for_queue(queue: str) -> QueueKeys:
    """Keys of ``queue``; ``x.dead`` lives beside ``x`` under the same hash tag."""
    if queue.endswith(DEAD_SUFFIX) and len(queue) > len(DEAD_SUFFIX):
        tag, part = queue[: -len(DEAD_SUFFIX)], "d:"
    else:
        tag, part = queue, ""
    base = f"{PREFIX}:{{{tag}}}:{part}"
    own = f"{PREFIX}:{{{tag}}}:"
    # A dead-letter queue has no dead-letter queue of its own: its ``dead*`` keys stay empty.
    dead = own + "d:" if not part else base + "dead:"
    return QueueKeys(
        queue=queue,
        ready=base + "ready",
        reserved=base + "reserved",
        delayed=base + "delayed",
        messages=base + "msg",
        seen=base + "seen",
        receipts=base + "rcpt",
        errors=base + "err",
        expiry=base + "ttl",
        dedup=base + "dedup",
        dedup_until=base + "dedupx",
        unique=base + "uniq",
        seq=own + "seq",
        conf=base + "conf",
        stats=base + "stats",
        subs=base + "subs",
        subs_seen=base + "subseen",
        dead=dead + "ready",
        dead_messages=dead + "msg",
        dead_errors=dead + "err",
        replay=base + "replay",
        push=base + "push",
        push_inflight=base + "pushing",
        channel=base + "ev",
        schedules=base + "sched",
    )


@dataclass(frozen=True, slots=True)
class GlobalKeys:
    """The cross-queue keys of one bucket: its share of the registry and of the timers, and the
    sweeper's lease on it. They share one hash tag, so one script may use them together."""

    registry: str  # SET of queue names
    timers: str  # ZSET queue -> when something in it is next due
    sweeper: str  # STRING: the process sweeping this bucket now (expires: a short lease)


def bucket_of(queue: str, buckets: int) -> int:
    """The bucket of ``queue``'s registry entry and timer: a stable hash of its name."""
    return zlib.crc32(queue.encode("utf-8", "surrogatepass")) % buckets if buckets > 1 else 0


@lru_cache(maxsize=256)
def global_keys(bucket: int, buckets: int) -> GlobalKeys:
    """Keys of ``bucket`` out of ``buckets``. One bucket (a single Redis, Sentinel) is the
    historical layout: ``rmq:queues`` and ``rmq:timers``. Several (a cluster) are
    ``rmq:{~N}:queues`` …: the tag ``~N`` cannot clash with a queue's keys, whose names end in other
    words (see for_queue)."""
    if buckets <= 1:
        return GlobalKeys(REGISTRY, TIMERS, f"{PREFIX}:sweeper")
    base = f"{PREFIX}:{{~{bucket}}}:"
    return GlobalKeys(base + "queues", base + "timers", base + "sweeper")
