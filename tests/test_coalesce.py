"""Coalesced pipelines: a run of one kind of command on one queue, pipelined on one connection, is one
Redis script (what an operator sees as one ``restmq_redis_seconds_count{kind="script",script=…}`` observation),
while each command keeps its own answer, its own error and its place in the order; over the line
protocol, RESP and memcached."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest_twisted
from twisted.internet import task
from twisted.internet.testing import StringTransport

from restmq.frontends.line import LineFactory
from restmq.frontends.memcache import MemcacheFactory
from restmq.frontends.resp import RespFactory

from .conftest import run
from .test_resp import multibulk, replies


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await task.deferLater(reactor(), 0.005, lambda: None)


def scripts(dispatcher: Any, name: str) -> int:
    """How many times the engine ran script ``name`` (the metrics' restmq_redis_seconds_count)."""
    series = dispatcher.redis_latency.series.get(("script", name))
    return series[2] if series else 0


def connected(factory: Any) -> tuple[Any, StringTransport]:
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


async def line_answers(dispatcher: Any, data: bytes, n: int) -> list[Any]:
    """Send ``data`` in one read to a line-protocol connection; its first ``n`` answers."""
    proto, transport = connected(LineFactory(dispatcher))
    proto.dataReceived(data)
    await until(lambda: transport.value().count(b"\n") >= n)
    return [json.loads(line) for line in transport.value().splitlines()]


# -- line protocol -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_line_run_of_adds_is_one_script_and_a_bad_one_gets_its_own_error(dispatcher):
    """100 pipelined adds cost one add script; the bad one in the middle answers its error, the others their keys in order."""
    lines = [f"add q m{i}\n".encode() for i in range(100)]
    lines[50] = b'{"cmd":"add","queue":"q","value":"x","priority":99}\n'
    before = scripts(dispatcher, "add")
    got = await line_answers(dispatcher, b"".join(lines), 100)
    assert scripts(dispatcher, "add") - before == 1
    assert got[50]["code"] == "bad_request" and "priority" in got[50]["error"]
    keys = [a["key"] for i, a in enumerate(got) if i != 50]
    assert keys == [f"q:{n}" for n in range(1, 100)]
    assert [a["value"] for a in got[:3]] == ["m0", "m1", "m2"]
    assert (await run(dispatcher, "len", queue="q"))["ready"] == 99


@pytest_twisted.ensureDeferred
async def test_line_add_then_take_in_one_pipeline_sees_the_add(dispatcher):
    """Adds then takes in one write: the takes get the adds in order (one script each run), then empty."""
    got = await line_answers(dispatcher, b"add q a\nadd q b\ntake q\ntake q\ntake q\nadd q c\ntake q\n", 7)
    assert [got[2]["value"], got[3]["value"]] == ["a", "b"]
    assert got[4]["code"] == "empty"
    assert got[5]["key"] == "q:3" and got[6]["value"] == "c"
    assert scripts(dispatcher, "add") == 2 and scripts(dispatcher, "take") == 2


@pytest_twisted.ensureDeferred
async def test_line_coalesced_adds_keep_their_own_options_and_lengths(dispatcher):
    """In one run each add keeps its priority, delay, dedup and unique, and len is the length just after it."""
    adds = [
        {"value": "low", "priority": 9, "len": True},
        {"value": "first", "dedup": "d1", "len": True},
        {"value": "again", "dedup": "d1", "len": True},
        {"value": "later", "delay": 60, "len": True},
        {"value": "set", "unique": True},
        {"value": "set", "unique": True},
        {"value": "high", "priority": 0, "len": True},
    ]
    data = b"".join(json.dumps({"cmd": "add", "queue": "q", **a}).encode() + b"\n" for a in adds)
    got = await line_answers(dispatcher, data, len(adds))
    assert scripts(dispatcher, "add") == 1
    assert [a.get("len") for a in got] == [1, 2, 2, 2, None, None, 4]
    assert got[2] == {"queue": "q", "value": "again", "key": got[1]["key"], "duplicate": True, "len": 2}
    assert got[5]["key"] == got[4]["key"] and got[5]["duplicate"] is True
    taken = await run(dispatcher, "take", queue="q", count=10)
    assert [m["value"] for m in taken] == ["high", "first", "set", "low"]
    assert (await run(dispatcher, "len", queue="q"))["delayed"] == 1


@pytest_twisted.ensureDeferred
async def test_line_coalesced_acks_answer_per_command(dispatcher):
    """A run of acks is one script; a stale receipt fails only its own ack, and acking twice in the run fails the second."""
    await run(dispatcher, "add_many", queue="q", messages=["a", "b", "c"])
    reserved = await run(dispatcher, "reserve", queue="q", count=3)
    r1, r2, r3 = (m["receipt"] for m in reserved)
    acks = [{"receipt": r1}, {"receipt": "9.1.stale"}, {"receipt": [r2, r3]}, {"receipt": r1}]
    data = b"".join(json.dumps({"cmd": "ack", "queue": "q", **a}).encode() + b"\n" for a in acks)
    before = scripts(dispatcher, "ack")
    got = await line_answers(dispatcher, data, 4)
    assert scripts(dispatcher, "ack") - before == 1
    assert got[0] == {"queue": "q", "acked": 1} and got[2] == {"queue": "q", "acked": 2}
    assert got[1]["code"] == got[3]["code"] == "stale_receipt"
    assert (await run(dispatcher, "len", queue="q"))["reserved"] == 0


@pytest_twisted.ensureDeferred
async def test_line_pipelined_acks_with_next_each_reserve_their_next_message(dispatcher):
    """Pipelined acks with next are not merged into plain acks: each acks and reserves in one script of its own."""
    await run(dispatcher, "add_many", queue="q", messages=["a", "b", "c", "d"])
    reserved = await run(dispatcher, "reserve", queue="q", count=2)
    data = b"".join(json.dumps({"cmd": "ack", "queue": "q", "receipt": m["receipt"], "next": True}).encode() + b"\n"
                    for m in reserved)
    before_ack, before_take = scripts(dispatcher, "ack"), scripts(dispatcher, "take")
    got = await line_answers(dispatcher, data, 2)
    assert scripts(dispatcher, "ack") == before_ack and scripts(dispatcher, "take") - before_take == 2
    assert [g["acked"] for g in got] == [1, 1] and [g["next"]["value"] for g in got] == ["c", "d"]
    length = await run(dispatcher, "len", queue="q")
    assert (length["ready"], length["reserved"]) == (0, 2)


@pytest_twisted.ensureDeferred
async def test_line_coalesced_reserves_each_get_their_own_message(dispatcher):
    """Pipelined reserves (one script) each get the next message with its own receipt, in order; counts too."""
    await run(dispatcher, "add_many", queue="q", messages=["a", "b", "c", "d"])
    got = await line_answers(dispatcher, b"reserve q 30\nreserve q 30 2\nreserve q 30\nreserve q 30\n", 4)
    assert scripts(dispatcher, "take") == 1
    assert got[0]["value"] == "a" and [m["value"] for m in got[1]] == ["b", "c"] and got[2]["value"] == "d"
    assert got[3]["code"] == "empty"
    assert len({got[0]["receipt"], got[1][0]["receipt"], got[2]["receipt"]}) == 3


@pytest_twisted.ensureDeferred
async def test_line_run_over_max_length_answers_as_one_by_one(dispatcher):
    """A run that would pass max_length adds what fits, and only the adds past it answer queue_full."""
    await run(dispatcher, "config", queue="q", max_length=3)
    got = await line_answers(dispatcher, b"".join(f"add q m{i}\n".encode() for i in range(5)), 5)
    assert [a.get("key") for a in got[:3]] == ["q:1", "q:2", "q:3"]
    assert got[3]["code"] == got[4]["code"] == "queue_full"


# -- RESP ----------------------------------------------------------------------------------------


async def resp_replies(dispatcher: Any, data: bytes, n: int) -> list[Any]:
    proto, transport = connected(RespFactory(dispatcher))
    proto.dataReceived(data)

    def enough() -> bool:
        try:
            return len(replies(transport.value())) >= n
        except (ValueError, IndexError, AssertionError):
            return False

    await until(enough)
    return replies(transport.value())


@pytest_twisted.ensureDeferred
async def test_resp_lpush_run_is_one_script_answering_each_length(dispatcher):
    """Pipelined LPUSH/RPUSH: one add script, each answering the ready length after its own values; a bad value fails alone."""
    data = b"".join([
        multibulk("LPUSH", "q", "a"),
        multibulk("RPUSH", "q", "b", "c"),
        multibulk("LPUSH", "q", b"\xff"),
        multibulk("LPUSH", "q", "d"),
    ])
    got = await resp_replies(dispatcher, data, 4)
    assert got[0] == 1 and got[1] == 3 and got[3] == 4
    assert got[2][0] == "error" and got[2][1].startswith("ERR bad_request")
    assert scripts(dispatcher, "add") == 1 and scripts(dispatcher, "len") == 0


@pytest_twisted.ensureDeferred
async def test_resp_pops_after_pushes_in_one_pipeline(dispatcher):
    """RPUSH then RPOP/LPOP in one pipeline: the pops see the pushes in FIFO order (one script per run), then nil."""
    data = b"".join([
        multibulk("RPUSH", "q", "a", "b", "c"),
        multibulk("RPOP", "q"),
        multibulk("LPOP", "q", "2"),
        multibulk("RPOP", "q"),
        multibulk("RPOP", "q", "2"),
    ])
    got = await resp_replies(dispatcher, data, 5)
    assert got == [3, b"a", [b"b", b"c"], None, None]
    assert scripts(dispatcher, "take") == 1


# -- memcached -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_memcached_sets_and_gets_coalesce(dispatcher):
    """Pipelined sets are one add script, pipelined gets one take script; add of a held value is NOT_STORED alone."""
    data = (
        b"set q 0 0 1\r\na\r\nadd q 0 0 1\r\nb\r\nadd q 0 0 1\r\nb\r\nset q 0 0 1\r\nc\r\n"
        b"get q\r\nget q\r\nget q\r\nget q\r\n"
    )
    proto, transport = connected(MemcacheFactory(dispatcher))
    proto.dataReceived(data)
    await until(lambda: transport.value().count(b"END\r\n") >= 4)
    assert transport.value() == (
        b"STORED\r\nSTORED\r\nNOT_STORED\r\nSTORED\r\n"
        b"VALUE q 0 1\r\na\r\nEND\r\nVALUE q 0 1\r\nb\r\nEND\r\nVALUE q 0 1\r\nc\r\nEND\r\nEND\r\n"
    )
    assert scripts(dispatcher, "add") == 1 and scripts(dispatcher, "take") == 1


@pytest_twisted.ensureDeferred
async def test_runs_of_two_connections_in_one_reactor_turn_share_one_script(dispatcher):
    """Pipelined LPUSHes read from two connections in the same reactor turn cost one add script, and each push still answers the length just after its own values."""
    first, out1 = connected(RespFactory(dispatcher))
    second, out2 = connected(RespFactory(dispatcher))
    first.dataReceived(multibulk("LPUSH", "q", "a") + multibulk("LPUSH", "q", "b"))
    second.dataReceived(multibulk("RPUSH", "q", "c", "d") + multibulk("RPUSH", "q", "e"))
    await until(lambda: out1.value().count(b"\r\n") >= 2 and out2.value().count(b"\r\n") >= 2)
    assert replies(out1.value()) == [1, 2] and replies(out2.value()) == [4, 5]
    assert scripts(dispatcher, "add") == 1
    assert [m["value"] for m in await run(dispatcher, "take", queue="q", count=10)] == ["a", "b", "c", "d", "e"]


@pytest_twisted.ensureDeferred
async def test_merged_runs_stop_at_a_thousand_messages_per_script(dispatcher):
    """Two connections pipelining 600 adds each in the same reactor turn cost two scripts (no merged script passes 1000 messages), and every add is answered."""
    first, out1 = connected(LineFactory(dispatcher))
    second, out2 = connected(LineFactory(dispatcher))
    first.dataReceived(b"add q a\n" * 600)
    second.dataReceived(b"add q b\n" * 600)
    await until(lambda: out1.value().count(b"\n") >= 600 and out2.value().count(b"\n") >= 600)
    assert scripts(dispatcher, "add") == 2
    assert (await run(dispatcher, "len", queue="q"))["ready"] == 1200
