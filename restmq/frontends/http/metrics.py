"""``GET /metrics``: the server's numbers in the Prometheus text format (docs/operations.md).

Framing only, like every route: the numbers come from the dispatcher (one ``stats`` command with
``detail``: every listed queue's lengths and counters, plus its ``calls``/``errors`` counters),
never from the engine. The server's ``stats`` lists only the queues the caller may read, so a
scrape shows only those. Each scrape builds a fresh :class:`~prometheus_client.CollectorRegistry` over a
:class:`Snapshot`, so nothing is registered globally and several Sites in one process never clash.

Families:

- ``restmq_queue_messages{queue,state}`` gauge: ready / reserved / delayed / dead
- ``restmq_queue_subscribers{queue}`` gauge: live stream subscribers
- ``restmq_queue_events_total{queue,event}`` counter: added, taken, reserved, acked, nacked,
  returned (leases that ran out), expired, dead, redriven (kept in Redis, so they survive a restart of this process)
- ``restmq_commands_total{command}`` / ``restmq_errors_total{code}`` counters: this process's
  dispatcher (a scrape's own ``stats`` calls are counted too)
- ``restmq_backend_up`` gauge: 1 when the stats calls worked, 0 when Redis did not answer
  (``backend_unavailable``); the answer is still 200 with what is known.
- ``restmq_request_seconds{frontend,command}`` histogram: how long commands took, from the call to
  the answer (long polls included), timed by the dispatcher for every front end (http, xmlrpc,
  line, ws, syslog; ``metrics`` for scrapes' own stats calls).
- ``restmq_redis_seconds{kind,script}`` histogram: the Redis round trip of each engine script.
- ``restmq_push_delivered_total{queue}`` / ``restmq_push_failed_total{queue,reason}`` counters and
  ``restmq_push_seconds{queue,outcome}`` histogram: the push deliveries (every worker's with --workers; docs/push-and-schedules.md);
  ``reason`` is ``http_4xx``, ``http_5xx`` (any other status class likewise), ``timeout``,
  ``refused``, ``dns``, ``tls``, ``connection``, ``not_allowed`` (outside --push-allow) or
  ``stopped`` (this process stopped mid-push).
- ``restmq_connections`` gauge and ``restmq_limit_rejections_total{limit}`` counter: open
  connections of every listener, and what the limits refused (``connections``,
  ``connections_per_address``, ``header_timeout``, ``body_timeout``, ``idle_timeout``), when the
  Site was given the process's :class:`restmq.limits.Limits`.

With ``--workers`` every family speaks for the whole server: the ``stats`` answer then lists every
worker with its counters (restmq/workers/table.py), and a scrape adds the other workers' numbers
(reported at most a second ago) to the live ones of the worker it reached.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from twisted.internet import defer
from twisted.web.server import Request

from restmq.latency import Latency, PushMetrics
from restmq.limits import Limits
from restmq.errors import RestMQError
from restmq.frontends.http.common import GET, Answer, Endpoint, send
from restmq.ports import Dispatcher, Principal

#: Message states of ``stats <queue>``'s ``length``, in exposition order.
STATES = ("ready", "reserved", "delayed", "dead")
#: Per-queue event counters of ``stats <queue>``'s ``counters``.
EVENTS = ("added", "taken", "reserved", "acked", "nacked", "returned", "expired", "dead", "redriven")
#: Histogram buckets (seconds): fast commands up to the longest long poll (60 s).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def latency_family(
    latency: Latency,
    name: str = "restmq_request_seconds",
    doc: str = "How long commands took, by front end and command.",
    labels: tuple[str, str] = ("frontend", "command"),
) -> HistogramMetricFamily:
    """A :class:`Latency`'s series as one Prometheus histogram family."""
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for (frontend, command), (counts, total, n) in sorted(latency.series.items()):
        cumulative, buckets = 0, []
        for bound, c in zip(latency.buckets, counts):
            cumulative += c
            buckets.append((floatToGoString(bound), float(cumulative)))
        buckets.append(("+Inf", float(n)))
        family.add_metric([frontend, command], buckets, total)
    return family


@dataclass
class Snapshot:
    """What one scrape learned: per-queue stats answers, the dispatcher's counters, backend health."""

    up: bool = True
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency: Latency | None = None
    redis_latency: Latency | None = None
    #: The process's :class:`restmq.limits.Limits` (connections, refusals), if known.
    limits: Limits | None = None
    #: This process's push deliveries, if it has a pusher.
    push: PushMetrics | None = None
    #: ``--workers``: the other workers' entries of the ``stats`` answer, counters included.
    others: list[dict[str, Any]] = field(default_factory=list)

    def merge_others(self) -> None:
        """Add the other workers' counters to this worker's (``--workers``)."""
        from restmq.workers.table import merge_push, merge_series

        if not self.others:
            return
        calls, errors = Counter(self.calls), Counter(self.errors)
        latency, redis_latency = _copy(self.latency), _copy(self.redis_latency)
        limits = Limits(0, 0)
        if self.limits is not None:
            limits.total, limits.rejected = self.limits.total, Counter(self.limits.rejected)
        for other in self.others:
            numbers = other.get("metrics") or {}
            calls.update({k: int(v) for k, v in (numbers.get("calls") or {}).items()})
            errors.update({k: int(v) for k, v in (numbers.get("errors") or {}).items()})
            limits.rejected.update({k: int(v) for k, v in (numbers.get("rejected") or {}).items()})
            limits.total += int(other.get("connections") or 0)
            if latency is not None:
                merge_series(latency, numbers.get("latency") or [])
            if redis_latency is not None:
                merge_series(redis_latency, numbers.get("redis_latency") or [])
        self.calls, self.errors = dict(calls), dict(errors)
        self.latency, self.redis_latency, self.limits = latency, redis_latency, limits
        if self.push is not None:
            push = PushMetrics()
            push.pushed.update(self.push.pushed)
            push.failed.update(self.push.failed)
            push.latency = _copy(self.push.latency) or push.latency
            for other in self.others:
                merge_push(push, (other.get("metrics") or {}).get("push"))
            self.push = push


def _copy(latency: Latency | None) -> Latency | None:
    if latency is None:
        return None
    copied = Latency(latency.buckets)
    copied.series = {k: [list(v[0]), v[1], v[2]] for k, v in latency.series.items()}
    return copied


class SnapshotCollector(Collector):
    """A prometheus_client collector over one :class:`Snapshot` (registered per scrape only)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        messages = GaugeMetricFamily(
            "restmq_queue_messages", "Messages in the queue by state.", labels=["queue", "state"]
        )
        subscribers = GaugeMetricFamily(
            "restmq_queue_subscribers", "Live stream subscribers of the queue.", labels=["queue"]
        )
        events = CounterMetricFamily(
            "restmq_queue_events", "Message events of the queue since it was created.", labels=["queue", "event"]
        )
        for name in sorted(snap.queues):
            stats = snap.queues[name]
            length = stats.get("length") or {}
            for state in STATES:
                messages.add_metric([name, state], float(length.get(state, 0)))
            subscribers.add_metric([name], float(stats.get("subscribers", 0)))
            counters = stats.get("counters") or {}
            for event in EVENTS:
                events.add_metric([name, event], float(counters.get(event, 0)))
        yield messages
        yield subscribers
        yield events
        yield counter_family("restmq_commands", "Commands run by the server (every worker).", ["command"], snap.calls)
        yield counter_family("restmq_errors", "Command failures by error code (every worker).", ["code"], snap.errors)
        yield GaugeMetricFamily(
            "restmq_backend_up", "1 when Redis answered this scrape, 0 when not.", value=1.0 if snap.up else 0.0
        )
        if snap.limits is not None:
            yield GaugeMetricFamily(
                "restmq_connections", "Open connections of every listener.", value=float(snap.limits.total)
            )
            yield counter_family("restmq_limit_rejections", "Connections and requests refused by a limit.",
                                 ["limit"], snap.limits.rejected)
        if snap.push is not None:
            yield from push_families(snap.push)
        if snap.latency is not None:
            yield latency_family(snap.latency)
        if snap.redis_latency is not None:
            yield latency_family(
                snap.redis_latency, "restmq_redis_seconds", "Redis round trips of the engine's scripts.",
                ("kind", "script"),
            )


def counter_family(name: str, doc: str, labels: list[str], counts: Mapping[Any, int]) -> CounterMetricFamily:
    """A counter family from ``counts``: label value (or a tuple of them, in ``labels``' order) -> count."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], float(n))
    return family


def push_families(push: PushMetrics) -> Iterator[Metric]:
    """The push deliveries of this process: delivered and failed (by reason), and their durations."""
    yield counter_family("restmq_push_delivered", "Messages pushed and acked (a 2xx answer), by queue.",
                         ["queue"], push.pushed)
    yield counter_family("restmq_push_failed", "Push deliveries that failed, by queue and reason.",
                         ["queue", "reason"], push.failed)
    yield latency_family(push.latency, "restmq_push_seconds", "How long push deliveries took.", ("queue", "outcome"))


def render(snapshot: Snapshot) -> bytes:
    """The Prometheus text exposition of ``snapshot`` (a fresh registry each time)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


async def take_snapshot(dispatcher: Dispatcher, principal: Principal = None) -> Snapshot:
    """Ask the dispatcher for the server's stats with every queue's detail (one ``stats`` call,
    a few scripts however many queues).

    A failing backend marks ``up`` false (``backend_unavailable``); what could not be read is left
    out and the scrape still answers. Only a refused caller (401/403) fails it.
    """
    snap = Snapshot()
    try:
        server = await dispatcher.execute("stats", {"detail": True}, principal, frontend="metrics")
    except RestMQError as e:
        if e.code in ("unauthorized", "forbidden"):
            raise  # answered 401/403 like any route
        snap.up = e.code != "backend_unavailable"
        server = {}
    queues = (server.get("queues") or {}) if isinstance(server, Mapping) else {}
    if isinstance(server, Mapping):
        snap.others = [p for p in server.get("processes") or () if p.get("process") != server.get("process")]
    for name, stats in queues.items():
        if isinstance(stats, Mapping):
            snap.queues[name] = dict(stats)
    # Copied after the stats calls so a scrape shows its own calls consistently.
    snap.calls = dict(getattr(dispatcher, "calls", {}))
    snap.errors = dict(getattr(dispatcher, "errors", {}))
    return snap


class PrometheusAnswer(Answer):
    """Writes the exposition bytes with Prometheus's content type."""

    __slots__ = ()

    def ok(self, request: Request, result: Any, callback: str | None) -> None:
        send(request, 200, result, CONTENT_TYPE_LATEST.encode("ascii"))


PROMETHEUS = PrometheusAnswer()


class Metrics(Endpoint):
    """``GET /metrics``: the Prometheus text exposition (HEAD answers the same without a body)."""

    methods = (GET,)

    def render_GET(self, request: Request) -> int:
        dispatcher = self.front.dispatcher
        d = defer.ensureDeferred(take_snapshot(dispatcher, self.front.principal(request)))
        d.addCallback(self._render, dispatcher, getattr(request.site, "limits", None))
        return self.front.respond(request, d, PROMETHEUS)

    def _render(self, snapshot: Snapshot, dispatcher: Dispatcher, limits: Limits | None) -> bytes:
        snapshot.latency = getattr(dispatcher, "latency", None)
        snapshot.redis_latency = getattr(dispatcher, "redis_latency", None)
        snapshot.limits = limits
        snapshot.push = getattr(dispatcher, "push_metrics", None)
        snapshot.merge_others()
        return render(snapshot)
