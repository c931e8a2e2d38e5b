"""The Redis key schema, in one place.

Every key of queue ``q`` carries the hash tag ``{q}``; the dead-letter queue ``q.dead`` shares it, so
one script never touches two Redis Cluster slots. Cross-queue structures (the registry of names) are
written by separate idempotent commands. Pure: no Redis, no Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

PREFIX = "rmq"
REGISTRY = f"{PREFIX}:queues"
DEAD_SUFFIX = ".dead"
#: ZSET score = priority * PRIORITY_STEP + n: lower priority first, FIFO (by n) within one.
PRIORITY_STEP = 10**13


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The names of one queue's keys and of its event channel."""

    queue: str
    ready: str  # ZSET n -> priority * PRIORITY_STEP + n
    reserved: str  # ZSET n -> lease deadline (ms); used from the delivery issue on
    delayed: str  # ZSET n -> due time (ms)
    messages: str  # HASH n -> record "priority:enqueued_ms:attempts:expire_ms:" + value JSON
    seen: str  # HASH n -> how often the soft get looked at it
    seq: str  # STRING counter of n, never reset: keys are never reused
    conf: str  # HASH state, policy and (later) settings
    stats: str  # HASH counters: added, taken, ...
    subs: str  # HASH process id -> number of stream subscribers there
    dead: str  # ZSET of the dead-letter queue's ready set
    channel: str  # pub/sub channel for wake-ups, purge and broadcast

    def pick(self, roles: tuple[str, ...]) -> list[str]:
        """The key names for ``roles`` (a script's declared ``-- KEYS:`` line), in that order."""
        return [getattr(self, role) for role in roles]


@lru_cache(maxsize=65536)
def for_queue(queue: str) -> QueueKeys:
    """Keys of ``queue``; ``x.dead`` lives beside ``x`` under the same hash tag."""
    if queue.endswith(DEAD_SUFFIX) and len(queue) > len(DEAD_SUFFIX):
        tag, part = queue[: -len(DEAD_SUFFIX)], "d:"
    else:
        tag, part = queue, ""
    base = f"{PREFIX}:{{{tag}}}:{part}"
    # A dead-letter queue has no dead-letter queue of its own: its ``dead`` key stays empty.
    dead = f"{PREFIX}:{{{tag}}}:d:ready" if not part else base + "dead"
    return QueueKeys(
        queue=queue,
        ready=base + "ready",
        reserved=base + "reserved",
        delayed=base + "delayed",
        messages=base + "msg",
        seen=base + "seen",
        seq=base + "seq",
        conf=base + "conf",
        stats=base + "stats",
        subs=base + "subs",
        dead=dead,
        channel=base + "ev",
    )
