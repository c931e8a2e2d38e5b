"""The dispatcher and engine together on a real redis-server: every command of this issue."""

from __future__ import annotations

import pytest_twisted

from restmq import errors
from tests.conftest import fails, run




@pytest_twisted.ensureDeferred
async def test_add_then_take_is_fifo_and_text_stays_text(dispatcher):
    """Messages come back in order, with keys q:1, q:2 and numeric-looking text kept as text."""
    a = await run(dispatcher, "add", queue="q", value="42")
    b = await run(dispatcher, "add", queue="q", value={"x": [1, 2]})
    assert a == {"queue": "q", "value": "42", "key": "q:1"}
    assert b["key"] == "q:2"
    first = await run(dispatcher, "take", queue="q")
    assert first["key"] == "q:1" and first["value"] == "42" and first["count"] == 0
    assert first["priority"] == 5 and first["attempts"] == 0 and first["enqueued_at"] > 1e9
    assert (await run(dispatcher, "take", queue="q"))["value"] == {"x": [1, 2]}
    e = await fails(dispatcher, "empty", "take", queue="q")
    assert e.message == "empty queue"


@pytest_twisted.ensureDeferred
async def test_keys_are_never_reused_after_purge(dispatcher):
    """A purge empties the queue but the next key continues the counter."""
    await run(dispatcher, "add", queue="q", value="a")
    await run(dispatcher, "add", queue="q", value="b")
    assert await run(dispatcher, "purge", queue="q") == {"queue": "q", "status": 1, "purged": 2}
    assert await run(dispatcher, "purge", queue="q") == {"queue": "q", "status": 0, "purged": 0}
    assert (await run(dispatcher, "add", queue="q", value="c"))["key"] == "q:3"


@pytest_twisted.ensureDeferred
async def test_priority_orders_then_fifo(dispatcher):
    """Lower priority is served first and FIFO holds within one priority."""
    await run(dispatcher, "add", queue="q", value="low1", priority=9)
    await run(dispatcher, "add", queue="q", value="hi1", priority=0)
    await run(dispatcher, "add", queue="q", value="mid")
    await run(dispatcher, "add", queue="q", value="hi2", priority="0")
    got = await run(dispatcher, "take", queue="q", count=10)
    assert [m["value"] for m in got] == ["hi1", "hi2", "mid", "low1"]


@pytest_twisted.ensureDeferred
async def test_add_many_and_take_count(dispatcher):
    """add_many answers every key in order; take with count answers a list, empty when nothing."""
    r = await run(dispatcher, "add_many", queue="q", messages=["a", {"value": "b", "priority": 1}, 3])
    assert r == {"queue": "q", "keys": ["q:1", "q:2", "q:3"]}
    got = await run(dispatcher, "take", queue="q", count=2)
    assert [m["value"] for m in got] == ["b", "a"]
    assert [m["value"] for m in await run(dispatcher, "take", queue="q", count=5)] == [3]
    assert await run(dispatcher, "take", queue="q", count=5) == []


@pytest_twisted.ensureDeferred
async def test_peek_get_soft_get_and_del(dispatcher):
    """peek leaves messages; get by key reads one; soft get counts looks; del removes one."""
    await run(dispatcher, "add", queue="q", value="a")
    await run(dispatcher, "add", queue="q", value="b")
    assert [m["value"] for m in await run(dispatcher, "peek", queue="q", count=5)] == ["a", "b"]
    assert (await run(dispatcher, "get", queue="q", key="q:2"))["value"] == "b"
    assert (await run(dispatcher, "get", queue="q", key="2"))["key"] == "q:2"
    soft = await run(dispatcher, "get", queue="q")
    assert (soft["key"], soft["value"], soft["count"]) == ("q:1", "a", 1)
    assert (await run(dispatcher, "get", queue="q"))["count"] == 2
    assert await run(dispatcher, "del", queue="q", key="q:1") == {"queue": "q", "deleted": True, "key": "q:1"}
    assert (await run(dispatcher, "del", queue="q", key="q:1"))["deleted"] is False
    await fails(dispatcher, "not_found", "get", queue="q", key="q:1")
    await fails(dispatcher, "not_found", "get", queue="q", key="other:2")
    await fails(dispatcher, "bad_request", "del", queue="q", key="q:x")
    assert (await run(dispatcher, "len", queue="q"))["ready"] == 1


@pytest_twisted.ensureDeferred
async def test_len_list_and_stats(dispatcher):
    """len, list and stats report what is queued and what happened."""
    await run(dispatcher, "add_many", queue="a", messages=["1", "2"])
    await run(dispatcher, "add", queue="b", value="x")
    await run(dispatcher, "take", queue="a")
    assert await run(dispatcher, "len", queue="a") == {
        "queue": "a", "len": 1, "ready": 1, "reserved": 0, "delayed": 0, "dead": 0,
    }
    listed = await run(dispatcher, "list")
    assert listed["count"] == 2 and listed["queues"]["b"]["len"] == 1
    one = await run(dispatcher, "stats", queue="a")
    assert one["queue"] == "a" and one["len"] == 1 and one["status"] == 1
    assert one["counters"]["added"] == 2 and one["counters"]["taken"] == 1
    assert one["redis"].startswith(("redis", "valkey"))
    server = await run(dispatcher, "stats")
    assert server["count"] == 2
    assert server["queues"]["a"] == {
        "name": "a", "len": 1, "status": 1, "state": "running", "policy": 1,
        "policy_name": "broadcast", "subscribers": 0,
    }


@pytest_twisted.ensureDeferred
async def test_pause_stops_delivery_but_accepts_adds(dispatcher):
    """A paused queue takes adds and delivers nothing until resumed."""
    assert await run(dispatcher, "pause", queue="q") == {"queue": "q", "state": "paused", "status": 0}
    await run(dispatcher, "add", queue="q", value="x")
    await fails(dispatcher, "empty", "take", queue="q")
    assert (await run(dispatcher, "state", queue="q"))["state"] == "paused"
    await run(dispatcher, "resume", queue="q")
    assert (await run(dispatcher, "take", queue="q"))["value"] == "x"


@pytest_twisted.ensureDeferred
async def test_policy_get_and_set(dispatcher):
    """policy answers the default, then what was set; a bad name is refused."""
    assert await run(dispatcher, "policy", queue="q") == {"queue": "q", "policy": "broadcast", "value": "broadcast"}
    assert (await run(dispatcher, "policy", queue="q", policy="RoundRobin"))["policy"] == "roundrobin"
    assert (await run(dispatcher, "policy", queue="q"))["value"] == "roundrobin"
    await fails(dispatcher, "bad_request", "policy", queue="q", policy="random")


@pytest_twisted.ensureDeferred
async def test_bad_input_changes_nothing(dispatcher):
    """Bad names, types, limits and unknown commands are refused with their codes and add nothing."""
    await fails(dispatcher, "bad_queue_name", "add", queue="bad name", value="x")
    await fails(dispatcher, "bad_queue_name", "add", queue="", value="x")
    await fails(dispatcher, "bad_queue_name", "add", queue="x" * 129, value="x")
    await fails(dispatcher, "bad_request", "add", queue="q")
    await fails(dispatcher, "bad_request", "add", queue="q", value="x", priority=10)
    await fails(dispatcher, "bad_request", "add", queue="q", value="x", priority="high")
    await fails(dispatcher, "bad_request", "add", queue="q", value="x", colour="red")
    await fails(dispatcher, "bad_request", "take", queue="q", count=1001)
    await fails(dispatcher, "bad_request", "take", queue="q", count=0)
    await fails(dispatcher, "bad_request", "take", queue="q", wait=61)
    await fails(dispatcher, "bad_request", "add_many", queue="q", messages=[])
    await fails(dispatcher, "bad_request", "add_many", queue="q", messages=["x"] * 1001)
    await fails(dispatcher, "too_large", "add", queue="q", value="x" * ((1 << 20) + 1))
    await fails(dispatcher, "unknown_command", "explode", queue="q")
    assert (await run(dispatcher, "len", queue="q"))["len"] == 0
    assert (await run(dispatcher, "list"))["count"] == 0


@pytest_twisted.ensureDeferred
async def test_take_wait_wakes_on_add(dispatcher):
    """A long-poll take answers as soon as a message is added, well before its wait runs out."""
    from twisted.internet import reactor, task

    import time

    start = time.monotonic()
    waiting = dispatcher.execute("take", {"queue": "q", "wait": 5})
    await task.deferLater(reactor, 0.1, lambda: None)
    await run(dispatcher, "add", queue="q", value="late")
    got = await waiting
    assert got["value"] == "late"
    assert time.monotonic() - start < 1.0


@pytest_twisted.ensureDeferred
async def test_take_wait_gives_up_empty(dispatcher):
    """A long-poll take on an empty queue answers empty after its wait."""
    import time

    start = time.monotonic()
    assert await run(dispatcher, "take", queue="q", count=3, wait=0.3) == []
    assert 0.25 < time.monotonic() - start < 1.5


@pytest_twisted.ensureDeferred
async def test_scripts_reload_after_script_flush(dispatcher, redis):
    """After Redis forgets the Lua scripts (restart, SCRIPT FLUSH) commands still work."""
    redis.cli("SCRIPT", "FLUSH")
    assert (await run(dispatcher, "add", queue="q", value="x"))["key"] == "q:1"


@pytest_twisted.ensureDeferred
async def test_health_reports_redis_facts_and_warns_without_persistence(dispatcher):
    """health answers the Redis version and warns that the test Redis (no AOF, no RDB) loses data."""
    health = await run(dispatcher, "health")
    assert health["status"] == "ok"
    assert health["redis"]["flavour"] in ("redis", "valkey")
    assert health["redis"]["appendonly"] == "no"
    assert any("persist" in w for w in health["warnings"])


@pytest_twisted.ensureDeferred
async def test_redis_gone_is_backend_unavailable_then_recovers(redis_server):
    """With Redis stopped commands fail fast with backend_unavailable; they work again once it is back."""
    import tempfile
    import time

    from restmq.dispatch import Dispatcher
    from tests.conftest import make_engine, start_redis

    private = start_redis(tempfile.mkdtemp(prefix="restmq-gone-"))
    engine = await make_engine(private, timeout=0.5)
    dispatcher = Dispatcher(engine)
    try:
        assert (await run(dispatcher, "add", queue="q", value="x"))["key"] == "q:1"
        private.process.terminate()
        private.process.wait(10)
        start = time.monotonic()
        await fails(dispatcher, "backend_unavailable", "add", queue="q", value="y")
        await fails(dispatcher, "backend_unavailable", "len", queue="q")
        assert time.monotonic() - start < 2.5
        directory = tempfile.mkdtemp(prefix="restmq-back-")
        private = start_redis(directory, port=private.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert (await run(dispatcher, "add", queue="q", value="z"))["queue"] == "q"
                break
            except errors.BackendUnavailable:
                assert time.monotonic() < deadline, "did not recover"
                from twisted.internet import reactor, task

                await task.deferLater(reactor, 0.1, lambda: None)
        assert time.monotonic() - start < 5
    finally:
        private.process.terminate()
        await engine.stop()
        engine.redis.disconnect()


@pytest_twisted.ensureDeferred
async def test_ttl_drops_unconsumed_messages_and_counts_them(dispatcher):
    """A message past its ttl is never delivered or shown, and stats count it as expired."""
    from twisted.internet import reactor, task

    await run(dispatcher, "add", queue="q", value="short", ttl=0.05)
    await run(dispatcher, "add_many", queue="q", messages=[{"value": "brief", "ttl": "0.05"}, "keeps"])
    await task.deferLater(reactor, 0.1, lambda: None)
    await fails(dispatcher, "not_found", "get", queue="q", key="q:1")
    assert [m["value"] for m in await run(dispatcher, "peek", queue="q", count=5)] == ["keeps"]
    assert (await run(dispatcher, "get", queue="q"))["value"] == "keeps"
    assert [m["value"] for m in await run(dispatcher, "take", queue="q", count=5)] == ["keeps"]
    counters = (await run(dispatcher, "stats", queue="q"))["counters"]
    assert counters["expired"] == 2 and counters["taken"] == 1
    await fails(dispatcher, "bad_request", "add", queue="q", value="x", ttl=-1)
    await fails(dispatcher, "bad_request", "add", queue="q", value="x", ttl="soon")
    await fails(dispatcher, "bad_request", "add_many", queue="q", messages=[{"value": "x", "ttl": -1}])


@pytest_twisted.ensureDeferred
async def test_health_before_redis_is_connected_is_backend_unavailable():
    """health, add and take on an engine with no Redis yet answer backend_unavailable (chaos found a 500 and unhandled errors)."""
    import gc

    from twisted.internet import reactor
    from twisted.logger import globalLogPublisher

    from restmq.dispatch import Dispatcher
    from restmq.engine import QueueEngine

    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        await fails(Dispatcher(QueueEngine(clock=reactor)), "backend_unavailable", "health")
        for engine in (QueueEngine(clock=reactor), QueueEngine(clock=reactor, max_queues=5)):
            await fails(Dispatcher(engine), "backend_unavailable", "add", queue="q", value="x")
            await fails(Dispatcher(engine), "backend_unavailable", "take", queue="q")
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert not [e for e in logged if "Unhandled error" in str(e.get("log_format", ""))]
