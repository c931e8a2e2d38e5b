"""GET /metrics: the Prometheus text exposition over a real Site, Redis up and down."""

from __future__ import annotations

import shutil
import tempfile
import time
from typing import Any

import pytest_twisted
import treq
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from restmq.dispatch import Dispatcher
from restmq.latency import Latency
from restmq.frontends.http.metrics import Snapshot, render
from restmq.frontends.http.routes import build_site


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Scrape:
    """One parsed scrape: ``value(name, **labels)`` finds a sample (None when absent)."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float | None:
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        return None


async def scrape(base: str) -> tuple[int, list[str], Scrape]:
    response = await treq.get(base + "/metrics", persistent=False)
    body = await response.content()
    return response.code, response.headers.getRawHeaders("content-type"), Scrape(body.decode("utf-8"))


async def post(base: str, path: str, **kw: Any) -> Any:
    response = await treq.post(base + path, persistent=False, **kw)
    return response.code, await response.json() if response.code != 204 else None


@pytest_twisted.async_yield_fixture
async def base(dispatcher):
    """The base URL of a RestMQ Site on a free loopback port."""
    port = _reactor().listenTCP(0, build_site(dispatcher, reactor=_reactor()), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_scrape_shows_queue_gauges_and_event_counters(base):
    """After adds, a take, a reserve and an ack the scrape shows the right gauges and counters."""
    for value in ("a", "b", "c", "d"):
        assert (await post(base, "/q/jobs", json={"value": value}))[0] == 201
    await post(base, "/q/other", json={"value": "x"})
    taken = await treq.get(base + "/q/jobs", persistent=False)
    assert taken.code == 200
    await taken.content()
    reserved = await treq.get(base + "/q/jobs?lease=30&count=2", persistent=False)
    receipts = [m["receipt"] for m in await reserved.json()]
    assert len(receipts) == 2
    assert (await post(base, "/q/jobs/ack", json={"receipt": receipts[0]}))[1]["acked"] == 1

    status, content_type, found = await scrape(base)
    assert status == 200 and content_type == [CONTENT_TYPE_LATEST]
    assert found.value("restmq_queue_messages", queue="jobs", state="ready") == 1
    assert found.value("restmq_queue_messages", queue="jobs", state="reserved") == 1
    assert found.value("restmq_queue_messages", queue="jobs", state="delayed") == 0
    assert found.value("restmq_queue_messages", queue="jobs", state="dead") == 0
    assert found.value("restmq_queue_messages", queue="other", state="ready") == 1
    assert found.value("restmq_queue_subscribers", queue="jobs") == 0
    events = {e: found.value("restmq_queue_events_total", queue="jobs", event=e)
              for e in ("added", "taken", "reserved", "acked", "nacked", "returned", "expired", "dead", "redriven")}
    assert events == {"added": 4, "taken": 1, "reserved": 2, "acked": 1,
                      "nacked": 0, "returned": 0, "expired": 0, "dead": 0, "redriven": 0}
    assert found.families["restmq_queue_events"].type == "counter"
    assert found.families["restmq_queue_messages"].type == "gauge"
    assert found.value("restmq_commands_total", command="add") == 5
    assert found.value("restmq_commands_total", command="take") == 1
    assert found.value("restmq_commands_total", command="reserve") == 1
    assert found.value("restmq_commands_total", command="ack") == 1
    assert found.value("restmq_backend_up") == 1


@pytest_twisted.ensureDeferred
async def test_errors_are_counted_by_code(base):
    """Failed commands show up in restmq_errors_total by their error code."""
    assert (await post(base, "/q/bad%20name", json={"value": 1}))[0] == 400
    empty = await treq.get(base + "/q/nothing", persistent=False)
    assert empty.code == 204
    await empty.content()
    _, _, found = await scrape(base)
    assert found.value("restmq_errors_total", code="bad_queue_name") == 1
    assert found.value("restmq_errors_total", code="empty") == 1
    assert found.value("restmq_queue_messages", queue="nothing", state="ready") is None


@pytest_twisted.ensureDeferred
async def test_two_sites_in_one_process_do_not_share_numbers(base, engine):
    """Each Site reports its own dispatcher's counters: no global registry state."""
    other = Dispatcher(engine)
    port = _reactor().listenTCP(0, build_site(other, reactor=_reactor()), interface="127.0.0.1")
    try:
        second = f"http://127.0.0.1:{port.getHost().port}"
        await post(base, "/q/shared", json={"value": 1})
        await post(base, "/q/shared", json={"value": 2})
        _, _, one = await scrape(base)
        _, _, two = await scrape(second)
        assert one.value("restmq_commands_total", command="add") == 2
        assert two.value("restmq_commands_total", command="add") is None
        # The queue itself lives in Redis: both see it.
        assert two.value("restmq_queue_messages", queue="shared", state="ready") == 2
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_request_latency_histogram_per_command(base):
    """Commands run by the HTTP routes are timed into restmq_request_seconds{frontend, command}."""
    await post(base, "/q/lat", json={"value": 1})
    await post(base, "/q/lat", json={"value": 2})
    await post(base, "/queue", json={"cmd": "nosuch"})
    _, _, found = await scrape(base)
    assert found.families["restmq_request_seconds"].type == "histogram"
    assert found.value("restmq_request_seconds_count", frontend="http", command="add") == 2
    assert found.value("restmq_request_seconds_bucket", frontend="http", command="add", le="+Inf") == 2
    assert found.value("restmq_request_seconds_bucket", frontend="http", command="add", le="60.0") == 2
    assert 0 < found.value("restmq_request_seconds_sum", frontend="http", command="add") < 2
    assert found.value("restmq_request_seconds_count", frontend="http", command="unknown") == 1
    assert found.value("restmq_request_seconds_count", frontend="http", command="stats") is None


def test_latency_buckets_are_cumulative():
    """Latency puts each duration in its bucket and exposes cumulative counts, sum and count."""
    latency = Latency(buckets=(0.1, 1.0))
    for seconds in (0.05, 0.5, 0.7, 5.0):
        latency.observe("http", "take", seconds)
    found = Scrape(render(Snapshot(latency=latency)).decode())
    labels = {"frontend": "http", "command": "take"}
    assert found.value("restmq_request_seconds_bucket", le="0.1", **labels) == 1
    assert found.value("restmq_request_seconds_bucket", le="1.0", **labels) == 3
    assert found.value("restmq_request_seconds_bucket", le="+Inf", **labels) == 4
    assert found.value("restmq_request_seconds_count", **labels) == 4
    assert found.value("restmq_request_seconds_sum", **labels) == 6.25


def test_render_is_prometheus_text_without_a_global_registry():
    """render() exposes a snapshot in the text format, and two renders do not interfere."""
    snap = Snapshot(up=False, queues={"q": {"length": {"ready": 3}, "counters": {"added": 7}, "subscribers": 2}},
                    calls={"add": 7}, errors={"empty": 1})
    first = Scrape(render(snap).decode())
    second = Scrape(render(Snapshot()).decode())
    assert first.value("restmq_queue_messages", queue="q", state="ready") == 3
    assert first.value("restmq_queue_messages", queue="q", state="reserved") == 0
    assert first.value("restmq_queue_subscribers", queue="q") == 2
    assert first.value("restmq_queue_events_total", queue="q", event="added") == 7
    assert first.value("restmq_errors_total", code="empty") == 1
    assert first.value("restmq_backend_up") == 0
    assert second.value("restmq_backend_up") == 1
    assert second.value("restmq_queue_messages") is None


@pytest_twisted.ensureDeferred
async def test_backend_down_answers_200_with_backend_up_0(redis_server):
    """With Redis gone the scrape still answers 200, quickly, with restmq_backend_up 0 and the counters."""
    from tests.conftest import make_engine, start_redis

    directory = tempfile.mkdtemp(prefix="restmq-metrics-gone-")
    private = start_redis(directory)
    engine = await make_engine(private, timeout=0.3)
    port = _reactor().listenTCP(0, build_site(Dispatcher(engine), reactor=_reactor()), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    try:
        await post(base, "/q/q", json={"value": "x"})
        _, _, before = await scrape(base)
        assert before.value("restmq_backend_up") == 1
        assert before.value("restmq_queue_messages", queue="q", state="ready") == 1
        private.process.terminate()
        private.process.wait(10)
        start = time.monotonic()
        status, content_type, after = await scrape(base)
        assert time.monotonic() - start < 1.5
        assert status == 200 and content_type == [CONTENT_TYPE_LATEST]
        assert after.value("restmq_backend_up") == 0
        assert after.value("restmq_commands_total", command="add") == 1
        assert after.value("restmq_errors_total", code="backend_unavailable") >= 1
    finally:
        if private.process.poll() is None:
            private.process.terminate()
        await port.stopListening()
        await engine.stop()
        engine.redis.disconnect()
        shutil.rmtree(directory, ignore_errors=True)


@pytest_twisted.ensureDeferred
async def test_every_front_end_is_timed_by_the_dispatcher(base, dispatcher):
    """Commands from any front end (here the line protocol's label) appear in the latency histogram."""
    await dispatcher.execute("add", {"queue": "t", "value": "x"}, frontend="line")
    _, _, found = await scrape(base)
    assert found.value("restmq_request_seconds_count", frontend="line", command="add") == 1


@pytest_twisted.ensureDeferred
async def test_redis_round_trips_are_timed_by_script(base, dispatcher):
    """The engine's script round trips appear as restmq_redis_seconds{kind="script", script}."""
    await dispatcher.execute("add", {"queue": "r", "value": "x"})
    _, _, found = await scrape(base)
    assert found.value("restmq_redis_seconds_count", kind="script", script="add") == 1
