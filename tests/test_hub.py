"""The stream hub across processes: two engines on one Redis stand for two RestMQ processes."""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted
from twisted.internet import reactor, task

from restmq.dispatch import Dispatcher
from tests.conftest import make_engine


class Sink:
    """A stream consumer that records what it gets and how it ended."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed: str | None = None

    def deliver(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def close(self, reason: str) -> None:
        self.closed = reason


async def until(check, timeout: float = 3.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "condition not met in time"
        await task.deferLater(reactor, 0.005, lambda: None)
    return time.monotonic() - start


@pytest_twisted.async_yield_fixture
async def two(redis):
    """Two dispatchers over two engines (two 'processes') sharing the test Redis."""
    engines = [await make_engine(redis), await make_engine(redis)]
    yield [Dispatcher(e) for e in engines]
    for e in engines:
        await e.stop()
        await e.redis.disconnect()


async def subscribed(dispatcher: Dispatcher, queue: str) -> Sink:
    sink = Sink()
    dispatcher.subscribe(queue, sink)
    await dispatcher.engine.hub.watch(queue).ready(2)
    return sink


@pytest_twisted.ensureDeferred
async def test_broadcast_reaches_subscribers_in_every_process_quickly(two):
    """With the default broadcast policy every subscriber anywhere gets each message, within 100 ms."""
    a, b = two
    sinks = [await subscribed(a, "news"), await subscribed(b, "news"), await subscribed(b, "news")]
    start = time.monotonic()
    await a.execute("add", {"queue": "news", "value": "hello"})
    await until(lambda: all(s.messages for s in sinks))
    assert time.monotonic() - start < 0.1
    assert [s.messages[0]["value"] for s in sinks] == ["hello"] * 3
    assert (await a.execute("len", {"queue": "news"}))["len"] == 0


@pytest_twisted.ensureDeferred
async def test_roundrobin_gives_each_message_to_exactly_one_subscriber_across_processes(two):
    """With roundrobin every message goes to exactly one subscriber, whichever process it is in."""
    a, b = two
    await a.execute("policy", {"queue": "jobs", "policy": "roundrobin"})
    sinks = [await subscribed(a, "jobs"), await subscribed(b, "jobs")]
    await b.execute("add_many", {"queue": "jobs", "messages": [str(i) for i in range(40)]})
    await until(lambda: sum(len(s.messages) for s in sinks) >= 40)
    await task.deferLater(reactor, 0.05, lambda: None)
    got = sorted(int(m["value"]) for s in sinks for m in s.messages)
    assert got == list(range(40))


@pytest_twisted.ensureDeferred
async def test_pause_holds_streams_and_resume_releases(two):
    """A paused queue delivers nothing to streams; resuming delivers what accumulated."""
    a, b = two
    sink = await subscribed(b, "held")
    await a.execute("pause", {"queue": "held"})
    await a.execute("add", {"queue": "held", "value": "wait"})
    await task.deferLater(reactor, 0.1, lambda: None)
    assert sink.messages == []
    await a.execute("resume", {"queue": "held"})
    await until(lambda: sink.messages)
    assert sink.messages[0]["value"] == "wait"


@pytest_twisted.ensureDeferred
async def test_purge_ends_streams_in_every_process(two):
    """Purging a queue closes its streams everywhere with the reason 'purged'."""
    a, b = two
    sinks = [await subscribed(a, "gone"), await subscribed(b, "gone")]
    await b.execute("purge", {"queue": "gone"})
    await until(lambda: all(s.closed for s in sinks))
    assert [s.closed for s in sinks] == ["purged", "purged"]


@pytest_twisted.ensureDeferred
async def test_subscribers_are_counted_across_processes_and_forgotten_on_cancel(two):
    """stats counts the subscribers of every process; a cancelled subscription stops counting."""
    a, b = two
    a.subscribe("count", Sink())
    subscription = b.subscribe("count", Sink())
    b.subscribe("count", Sink())
    await task.deferLater(reactor, 0.1, lambda: None)
    assert (await a.execute("stats", {"queue": "count"}))["subscribers"] == 3
    subscription.cancel()
    await task.deferLater(reactor, 0.1, lambda: None)
    assert (await a.execute("stats", {"queue": "count"}))["subscribers"] == 2


@pytest_twisted.ensureDeferred
async def test_stream_backlog_is_delivered_on_subscribe(two):
    """Messages waiting in the queue go to the first subscriber as soon as it subscribes."""
    a, _ = two
    await a.execute("add_many", {"queue": "backlog", "messages": ["1", "2", "3"]})
    sink = await subscribed(a, "backlog")
    await until(lambda: len(sink.messages) == 3)
    assert [m["value"] for m in sink.messages] == ["1", "2", "3"]


@pytest_twisted.ensureDeferred
async def test_subscribe_refuses_bad_queue_names(two):
    """A stream on an invalid queue name is refused with bad_queue_name."""
    from restmq.errors import BadQueueName

    a, _ = two
    try:
        a.subscribe("bad name", Sink())
    except BadQueueName:
        return
    raise AssertionError("expected bad_queue_name")


@pytest_twisted.ensureDeferred
async def test_long_poll_in_one_process_wakes_on_an_add_in_another(two):
    """A reserve waiting in one process answers within 50 ms of an add made through another."""
    a, b = two
    latencies = []
    for i in range(5):
        waiting = b.execute("reserve", {"queue": "lp", "wait": 5, "lease": 5})
        await task.deferLater(reactor, 0.05, lambda: None)
        start = time.monotonic()
        await a.execute("add", {"queue": "lp", "value": i})
        got = await waiting
        latencies.append(time.monotonic() - start)
        assert got["value"] == i
    assert sorted(latencies)[2] < 0.05, latencies


@pytest_twisted.ensureDeferred
async def test_reserve_streams_share_messages_with_receipts_and_redeliver_after_a_lease(two):
    """Reserve-mode streams get each message once with a receipt; one a gone subscriber held comes
    back after its lease to a subscriber in the other process."""
    a, b = two
    first = Sink()
    subscription = a.subscribe("work", first, mode="reserve", lease=0.2)
    await a.engine.hub.watch("work").ready(2)
    await b.execute("add", {"queue": "work", "value": "job"})
    await until(lambda: first.messages)
    held = first.messages[0]
    assert held["value"] == "job" and held["receipt"] and held["attempts"] == 1
    subscription.cancel()  # the subscriber dies without acking
    second = Sink()
    b.subscribe("work", second, mode="reserve", lease=5)
    await until(lambda: second.messages, timeout=3)
    again = second.messages[0]
    assert again["key"] == held["key"] and again["attempts"] == 2
    assert (await b.execute("ack", {"queue": "work", "receipt": again["receipt"]}))["acked"] == 1
    assert (await a.execute("len", {"queue": "work"}))["len"] == 0


@pytest_twisted.ensureDeferred
async def test_stream_modes_are_checked(two):
    """An unknown stream mode or a bad lease is refused with bad_request."""
    from restmq.errors import BadRequest

    a, _ = two
    for kwargs in ({"mode": "peek"}, {"mode": "reserve", "lease": -1}):
        try:
            a.subscribe("q", Sink(), **kwargs)
        except BadRequest:
            continue
        raise AssertionError(f"accepted {kwargs}")


@pytest_twisted.ensureDeferred
async def test_a_sink_that_is_not_ready_gets_nothing_in_roundrobin_until_it_wakes(two):
    """A paused (not reading) roundrobin subscriber is skipped, and messages wait in the queue for it."""
    a, _ = two
    await a.execute("policy", {"queue": "slow", "policy": "roundrobin"})
    sink = Sink()
    sink.ready = False
    subscription = a.subscribe("slow", sink)
    await a.engine.hub.watch("slow").ready(2)
    await a.execute("add_many", {"queue": "slow", "messages": ["1", "2"]})
    await task.deferLater(reactor, 0.1, lambda: None)
    assert sink.messages == []
    assert (await a.execute("len", {"queue": "slow"}))["ready"] == 2
    sink.ready = True
    subscription.wake()
    await until(lambda: len(sink.messages) == 2)


@pytest_twisted.ensureDeferred
async def test_a_broadcast_subscriber_that_does_not_read_is_dropped_after_a_bound(two, monkeypatch):
    """In broadcast a subscriber that stopped reading is ended as a slow consumer, not buffered forever."""
    from restmq.engine import hub

    monkeypatch.setattr(hub, "SLOW_CONSUMER_BACKLOG", 3)
    a, b = two
    slow, fast = Sink(), Sink()
    slow.ready = False
    a.subscribe("news", slow)
    a.subscribe("news", fast)
    await a.engine.hub.watch("news").ready(2)
    await b.execute("add_many", {"queue": "news", "messages": [str(i) for i in range(6)]})
    await until(lambda: len(fast.messages) == 6)
    assert slow.closed == "slow consumer" and len(slow.messages) == 3


@pytest_twisted.ensureDeferred
async def test_subscribers_of_a_crashed_process_stop_counting(two, monkeypatch):
    """Subscriber counts of a process that stopped saying it is alive are forgotten by stats."""
    from restmq.engine import core

    a, b = two
    a.subscribe("crash", Sink())
    b.subscribe("crash", Sink())
    await task.deferLater(reactor, 0.1, lambda: None)
    assert (await a.execute("stats", {"queue": "crash"}))["subscribers"] == 2
    b.engine.hub._alive.stop()  # b "crashes": it says nothing more
    a.engine.hub._say_alive()
    monkeypatch.setattr(core, "SUBSCRIBERS_FORGOTTEN", 0.2)
    await task.deferLater(reactor, 0.15, lambda: None)
    a.engine.hub._say_alive()
    await task.deferLater(reactor, 0.1, lambda: None)
    assert (await a.execute("stats", {"queue": "crash"}))["subscribers"] == 1


@pytest_twisted.ensureDeferred
async def test_reconnecting_with_since_replays_missed_broadcasts_once(two):
    """A subscriber back with the last event id it saw gets what it missed, then live ones, no repeats."""
    a, b = two
    first = await subscribed(a, "feed")
    await b.execute("add_many", {"queue": "feed", "messages": ["1", "2", "3"]})
    await until(lambda: len(first.messages) == 3)
    seen = first.messages[0]["event_id"]
    back = Sink()
    b.subscribe("feed", back, since=seen)
    await until(lambda: len(back.messages) == 2)
    await a.execute("add", {"queue": "feed", "value": "4"})
    await until(lambda: len(back.messages) == 3)
    await task.deferLater(reactor, 0.05, lambda: None)
    assert [m["value"] for m in back.messages] == ["2", "3", "4"]
    for bad in ("feed:1", "x-1", 42):
        try:
            b.subscribe("feed", Sink(), since=bad)
        except Exception as e:
            assert getattr(e, "code", None) == "bad_request"
        else:
            raise AssertionError(f"accepted since={bad!r}")
