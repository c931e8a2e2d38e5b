"""The commands the RESP front end needed, written once in the table and the engine: delete by
value, add answering the length, take over several queues, and stats with detail."""

from __future__ import annotations

import time

import pytest_twisted
import redis
import treq
from twisted.internet import defer, reactor, task, threads

from restmq.frontends.http.routes import build_site
from restmq.frontends.resp import RespFactory
from tests.conftest import fails, run


def scripts(dispatcher, name: str) -> int:
    """How many times the engine ran script ``name`` (the Redis latency histogram counts them)."""
    return sum(s[2] for (_, script), s in dispatcher.redis_latency.series.items() if script == name)


@pytest_twisted.ensureDeferred
async def test_del_by_value_removes_the_held_unique_message(dispatcher):
    """del with value deletes the held unique message with that value and says how many went."""
    await run(dispatcher, "add", queue="q", value="a", unique=True)
    await run(dispatcher, "add", queue="q", value={"x": 1}, unique=True)
    assert await run(dispatcher, "del", queue="q", value="a") == {"queue": "q", "deleted": 1, "key": "q:1"}
    assert await run(dispatcher, "del", queue="q", value="a") == {"queue": "q", "deleted": 0, "key": None}
    assert (await run(dispatcher, "del", queue="q", value={"x": 1}))["deleted"] == 1
    assert (await run(dispatcher, "len", queue="q"))["ready"] == 0
    assert (await run(dispatcher, "find", queue="q", value="a"))["key"] is None


@pytest_twisted.ensureDeferred
async def test_del_by_value_ignores_plain_messages_and_refuses_bad_input(dispatcher):
    """A plain (non-unique) message is not found by value; key and value together, or neither, is bad_request."""
    await run(dispatcher, "add", queue="q", value="a")
    assert (await run(dispatcher, "del", queue="q", value="a"))["deleted"] == 0
    assert (await run(dispatcher, "len", queue="q"))["ready"] == 1
    await fails(dispatcher, "bad_request", "del", queue="q")
    await fails(dispatcher, "bad_request", "del", queue="q", key="q:1", value="a")
    await fails(dispatcher, "bad_request", "del", queue="q", key="q:1", nonsense=1)


@pytest_twisted.ensureDeferred
async def test_concurrent_deletes_of_one_value_remove_it_once(dispatcher):
    """Ten deletes of the same value sent at once remove the message once: exactly one answers 1."""
    await run(dispatcher, "add", queue="q", value="v", unique=True)
    answers = await defer.gatherResults([defer.ensureDeferred(run(dispatcher, "del", queue="q", value="v")) for _ in range(10)])
    assert sorted(a["deleted"] for a in answers) == [0] * 9 + [1]
    counters = (await run(dispatcher, "stats", queue="q"))["counters"]
    assert counters["added"] == 1


@pytest_twisted.ensureDeferred
async def test_add_with_len_answers_the_ready_length_in_one_script(dispatcher):
    """add and add_many with len answer the ready length after the add, costing one script; without it the answer is unchanged."""
    assert await run(dispatcher, "add", queue="q", value="a") == {"queue": "q", "value": "a", "key": "q:1"}
    before = scripts(dispatcher, "add"), scripts(dispatcher, "len")
    answer = await run(dispatcher, "add_many", queue="q", messages=["b", "c"], len=True)
    assert answer == {"queue": "q", "keys": ["q:2", "q:3"], "len": 3}
    assert (scripts(dispatcher, "add"), scripts(dispatcher, "len")) == (before[0] + 1, before[1])
    one = await run(dispatcher, "add", queue="q", value="d", len="true")
    assert one == {"queue": "q", "value": "d", "key": "q:4", "len": 4}
    assert await run(dispatcher, "add_many", queue="q", messages=["e"]) == {"queue": "q", "keys": ["q:5"]}
    dup = await run(dispatcher, "add_many", queue="u", messages=[{"value": 1, "unique": True}] * 2, len=True)
    assert dup == {"queue": "u", "keys": ["u:1", "u:1"], "duplicates": [1], "len": 1}
    await fails(dispatcher, "bad_request", "add", queue="q", value="x", len="maybe")


@pytest_twisted.ensureDeferred
async def test_take_from_several_queues_takes_from_the_first_listed_with_a_message(dispatcher):
    """take with queues answers a message of the first listed queue that has one, naming its queue."""
    await run(dispatcher, "add", queue="b", value="from-b")
    await run(dispatcher, "add", queue="c", value="from-c")
    got = await run(dispatcher, "take", queues=["a", "c", "b"])
    assert (got["queue"], got["value"], got["key"]) == ("c", "from-c", "c:1")
    listed = await run(dispatcher, "take", queues=["a", "c", "b"], count=5)
    assert [(m["queue"], m["value"]) for m in listed] == [("b", "from-b")]
    await fails(dispatcher, "empty", "take", queues=["a", "b"])
    assert await run(dispatcher, "take", queues=["a", "b"], count=2) == []


@pytest_twisted.ensureDeferred
async def test_take_from_several_queues_refuses_bad_input(dispatcher):
    """Both queue and queues, neither, an empty or too long list and bad names are refused."""
    await fails(dispatcher, "bad_request", "take", queue="a", queues=["b"])
    await fails(dispatcher, "bad_request", "take")
    await fails(dispatcher, "bad_request", "take", queues=[])
    await fails(dispatcher, "bad_request", "take", queues="a")
    await fails(dispatcher, "bad_request", "take", queues=[f"q{i}" for i in range(101)])
    await fails(dispatcher, "bad_queue_name", "take", queues=["ok", "no/slash"])


@pytest_twisted.ensureDeferred
async def test_take_from_several_queues_waits_and_is_woken_by_an_add_to_any(dispatcher):
    """A waiting take over several queues is woken by an add to the second one at once, not by a poll."""
    waiting = defer.ensureDeferred(run(dispatcher, "take", queues=["first", "second"], wait=5))
    await task.deferLater(reactor, 0.3, lambda: None)  # the take is watching both
    assert not waiting.called
    added = time.monotonic()
    await run(dispatcher, "add", queue="second", value="hello")
    got = await waiting
    elapsed = time.monotonic() - added
    assert (got["queue"], got["value"]) == ("second", "hello")
    assert elapsed < 0.05, elapsed


@pytest_twisted.ensureDeferred
async def test_take_from_several_queues_times_out_empty(dispatcher):
    """A wait with nothing added ends after the wait: empty (or [] with count)."""
    start = time.monotonic()
    assert await run(dispatcher, "take", queues=["x", "y"], wait=0.3, count=1) == []
    assert 0.25 < time.monotonic() - start < 2


@pytest_twisted.ensureDeferred
async def test_cancelled_multi_queue_wait_takes_nothing(dispatcher):
    """A waiting take over several queues that is cancelled (its client left) takes nothing later."""
    waiting = defer.ensureDeferred(run(dispatcher, "take", queues=["x", "y"], wait=5))
    waiting.addErrback(lambda f: None)
    await task.deferLater(reactor, 0.2, lambda: None)
    waiting.cancel()
    await run(dispatcher, "add", queue="y", value="kept")
    await task.deferLater(reactor, 0.1, lambda: None)
    assert (await run(dispatcher, "len", queue="y"))["ready"] == 1


@pytest_twisted.ensureDeferred
async def test_stats_detail_costs_one_script_for_many_queues(dispatcher):
    """stats with detail answers every queue's lengths and counters with O(1) stats scripts."""
    for i in range(30):
        await run(dispatcher, "add", queue=f"q{i}", value="v")
    before = scripts(dispatcher, "stats")
    stats = await run(dispatcher, "stats", detail=True)
    assert scripts(dispatcher, "stats") - before == 1
    assert stats["queues"]["q7"]["length"]["ready"] == 1
    assert stats["queues"]["q7"]["counters"]["added"] == 1


# -- the front ends on top of them --------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def resp_port(dispatcher):
    """A RESP listener on the test dispatcher, on a free loopback port."""
    factory = RespFactory(dispatcher, max_bulk=4096)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield port.getHost().port
    await port.stopListening()


def client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=10)


@pytest_twisted.ensureDeferred
async def test_lpush_costs_one_script_and_answers_the_length(resp_port, dispatcher):
    """LPUSH answers the queue's ready length from its one add script (no len script)."""
    c = client(resp_port)
    assert await threads.deferToThread(c.lpush, "q", "a") == 1
    before = scripts(dispatcher, "add"), scripts(dispatcher, "len")
    assert await threads.deferToThread(c.rpush, "q", "b", "c") == 3
    assert (scripts(dispatcher, "add"), scripts(dispatcher, "len")) == (before[0] + 1, before[1])


@pytest_twisted.ensureDeferred
async def test_concurrent_srem_of_one_value_removes_it_once(resp_port, dispatcher):
    """Eight clients SREM the same value at once: it is removed once, so the answers sum to 1."""
    await run(dispatcher, "add", queue="s", value="v", unique=True)
    answers = await defer.gatherResults(
        [threads.deferToThread(client(resp_port).srem, "s", "v") for _ in range(8)]
    )
    assert sum(answers) == 1
    assert (await run(dispatcher, "len", queue="s"))["ready"] == 0


@pytest_twisted.ensureDeferred
async def test_blpop_over_several_queues_is_woken_at_once_by_an_add_to_the_second(resp_port, dispatcher):
    """BLPOP a b waiting on both answers an add to b well under 100 ms after it (no polling)."""
    popped = threads.deferToThread(client(resp_port).blpop, ["a", "b"], 20)
    await task.deferLater(reactor, 0.3, lambda: None)
    added = time.monotonic()
    await run(dispatcher, "add", queue="b", value="now")
    got = await popped
    elapsed = time.monotonic() - added
    assert got == (b"b", b"now")
    assert elapsed < 0.06, elapsed


@pytest_twisted.ensureDeferred
async def test_a_metrics_scrape_costs_one_stats_script_for_many_queues(dispatcher):
    """A /metrics scrape of 40 queues runs one stats script (and no per-queue ones), still showing each queue."""
    for i in range(40):
        await run(dispatcher, "add", queue=f"m{i}", value="v")
    port = reactor.listenTCP(0, build_site(dispatcher, reactor=reactor), interface="127.0.0.1")
    try:
        before = scripts(dispatcher, "stats")
        response = await treq.get(f"http://127.0.0.1:{port.getHost().port}/metrics", persistent=False)
        body = (await response.content()).decode()
    finally:
        await port.stopListening()
    assert response.code == 200
    assert scripts(dispatcher, "stats") - before == 1
    assert 'restmq_queue_messages{queue="m39",state="ready"} 1.0' in body
    assert 'restmq_queue_events_total{event="added",queue="m12"} 1.0' in body


@pytest_twisted.ensureDeferred
async def test_resp_info_costs_one_stats_script_for_many_queues(resp_port, dispatcher):
    """INFO queues lists every queue's lengths and counters from one stats script."""
    for i in range(12):
        await run(dispatcher, "add", queue=f"i{i}", value="v")
    before = scripts(dispatcher, "stats")
    info = await threads.deferToThread(client(resp_port).info, "queues")
    assert scripts(dispatcher, "stats") - before == 1
    shown = {q["name"]: q for q in info.values() if isinstance(q, dict)}
    assert len(shown) == 12
    assert (shown["i3"]["ready"], shown["i3"]["added_total"], shown["i3"]["state"]) == (1, 1, "running")


@pytest_twisted.ensureDeferred
async def test_memcached_stats_costs_one_stats_script_for_many_queues(dispatcher):
    """memcached's stats lists every queue's Kestrel lines from one stats script."""
    from twisted.internet.testing import StringTransport

    from restmq.frontends.memcache import MemcacheFactory

    for i in range(25):
        await run(dispatcher, "add", queue=f"k{i}", value="v")
    proto = MemcacheFactory(dispatcher).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    before = scripts(dispatcher, "stats")
    proto.dataReceived(b"stats\r\n")
    deadline = time.monotonic() + 5
    while not transport.value().endswith(b"END\r\n"):
        assert time.monotonic() < deadline
        await task.deferLater(reactor, 0.01, lambda: None)
    assert scripts(dispatcher, "stats") - before == 1
    assert b"STAT queue_k24_items 1\r\n" in transport.value()
    assert b"STAT queue_k3_total_items 1\r\n" in transport.value()
