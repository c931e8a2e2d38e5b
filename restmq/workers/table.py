"""The process table: each worker's numbers in Redis, so any worker answers for the whole server.

Every second each worker writes one JSON record under its process id in the ``rmq:processes`` hash
(:data:`restmq.engine.keys.PROCESSES`): pid, worker index, uptime, open connections, stream
subscribers, and its counters (commands, errors, refusals, latency histograms). ``stats`` adds the
live records to its answer (``processes``; with ``detail`` their counters too), and ``/metrics``
sums them, so a scrape or the dashboard sees every worker whichever one it reached. A record
older than :data:`STALE` seconds is a worker that died: it is left out, and removed after
:data:`FORGET`. (One sweep at a time across workers is the engine's own sweeper lease, see
restmq/engine/maintenance.py.)
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from restmq.engine import QueueEngine
from restmq.engine import keys as K
from restmq.latency import Latency
from restmq.limits import Limits

log = Logger()

#: Seconds between a worker's reports.
INTERVAL = 1.0
#: A record this old (seconds) belongs to a worker that is gone.
STALE = 3.5
#: A record this old (seconds) is deleted by whoever reads it.
FORGET = 60.0


def series_of(latency: Latency) -> list[list[Any]]:
    """A Latency's series as JSON: [[label, label, counts, sum, count], …]."""
    return [[a, b, counts, total, n] for (a, b), (counts, total, n) in latency.series.items()]


def merge_series(into: Latency, series: list[list[Any]]) -> None:
    """Add another process's series (from :func:`series_of`) into ``into``."""
    for a, b, counts, total, n in series:
        mine = into.series.get((a, b))
        if mine is None:
            mine = into.series[(a, b)] = [[0] * len(into.buckets), 0.0, 0]
        for i, c in enumerate(counts[: len(into.buckets)]):
            mine[0][i] += int(c)
        mine[1] += float(total)
        mine[2] += int(n)


def push_of(push: Any) -> dict[str, Any] | None:
    """A :class:`restmq.latency.PushMetrics` as JSON (None without a pusher)."""
    if push is None:
        return None
    return {
        "pushed": dict(push.pushed),
        "failed": [[queue, reason, n] for (queue, reason), n in push.failed.items()],
        "latency": series_of(push.latency),
    }


def merge_push(into: Any, other: dict[str, Any] | None) -> None:
    """Add another process's push deliveries (from :func:`push_of`) into ``into``."""
    if not other:
        return
    into.pushed.update({q: int(n) for q, n in (other.get("pushed") or {}).items()})
    into.failed.update({(q, r): int(n) for q, r, n in other.get("failed") or []})
    merge_series(into.latency, other.get("latency") or [])


class ProcessTable(Service):
    """This worker's line in the table (written every second), and every live worker's."""

    def __init__(
        self, engine: QueueEngine, dispatcher: Any, limits: Limits, index: int, started: float, ready: Any
    ) -> None:
        self.engine, self.dispatcher, self.limits = engine, dispatcher, limits
        #: the backend, whose readiness starts the reports (the engine attaches first)
        self.ready = ready
        self.index = index
        self.server_started = started
        self.started = time.time()
        self._loop = LoopingCall(self._publish)

    def startService(self) -> None:
        super().startService()
        self.ready.whenReady().addCallbacks(self._begin, lambda _: None)

    def _begin(self, _: Any) -> None:
        if self.running and not self._loop.running:
            self._loop.start(INTERVAL, now=True)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return defer.ensureDeferred(self._withdraw())

    def record(self) -> dict[str, Any]:
        """What this worker reports now."""
        return {
            "process": self.engine.process_id,
            "pid": os.getpid(),
            "worker": self.index,
            "uptime": round(time.time() - self.started, 3),
            "connections": self.limits.total,
            "subscribers": self.engine.hub.total_subscribers(),
            "at": time.time(),
            "calls": dict(self.dispatcher.calls),
            "errors": dict(self.dispatcher.errors),
            "rejected": dict(self.limits.rejected),
            "latency": series_of(self.dispatcher.latency),
            "redis_latency": series_of(self.engine.redis_latency),
            "push": push_of(getattr(self.dispatcher, "push_metrics", None)),
        }

    def _publish(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self.publish())

    async def publish(self) -> None:
        if self.engine.redis is None:
            return
        try:
            await self.engine._bounded(self.engine.redis.execute_command(
                "HSET", K.PROCESSES, self.engine.process_id, json.dumps(self.record())))
        except Exception as e:  # reporting only: a Redis outage is served as such elsewhere
            log.debug("process report not written: {error}", error=e)

    async def _withdraw(self) -> None:
        if self.engine.redis is None:
            return
        try:
            await self.engine._bounded(self.engine.redis.execute_command("HDEL", K.PROCESSES, self.engine.process_id))
        except Exception as e:
            log.debug("process report not removed: {error}", error=e)

    async def everyone(self) -> list[dict[str, Any]]:
        """Every live worker's record, this one's as of now, by worker index."""
        raw = await self.engine._bounded(self.engine.redis.execute_command("HGETALL", K.PROCESSES))
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2])
        now, found, gone = time.time(), {}, []
        for key, value in pairs:
            name = key.decode() if isinstance(key, bytes) else str(key)
            try:
                record = json.loads(value)
            except ValueError:
                continue
            age = now - float(record.get("at", 0))
            if age > FORGET:
                gone.append(name)
            if age <= STALE and name != self.engine.process_id:
                found[name] = record
        if gone:
            self.engine.redis.execute_command("HDEL", K.PROCESSES, *gone).addErrback(lambda _: None)
        found[self.engine.process_id] = self.record()
        return sorted(found.values(), key=lambda r: (r.get("worker", 0), r.get("pid", 0)))

    async def server_stats(self, detail: bool) -> dict[str, Any]:
        """What ``stats`` adds for the whole server: the processes, the summed command counts and
        the server's uptime (since the parent started)."""
        records = await self.everyone()
        commands: dict[str, int] = {}
        for record in records:
            for name, n in record.get("calls", {}).items():
                commands[name] = commands.get(name, 0) + int(n)
        short = ("process", "pid", "worker", "uptime", "connections", "subscribers")
        return {
            "uptime": round(time.time() - self.server_started, 3),
            "commands": commands,
            "workers": len(records),
            "processes": [
                {k: r.get(k) for k in short} | ({"metrics": {k: r.get(k) for k in (
                    "calls", "errors", "rejected", "latency", "redis_latency", "push")}} if detail else {})
                for r in records
            ],
        }
