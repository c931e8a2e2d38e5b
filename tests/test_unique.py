"""Unique adds (``add``/``add_many`` with ``unique``) and ``find``: a set flavour of a queue.

Through the dispatcher, plus HTTP (treq), the line protocol's text form over TCP and XML-RPC, all
on the fixture redis-server. The per-queue index key is looked at directly where it proves that
nothing leaks.
"""

from __future__ import annotations

import json
import socket
import xmlrpc.client
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import task
from twisted.internet.threads import deferToThread

from tests.conftest import fails, run

INDEX = "rmq:{q}:uniq"


async def sleep(seconds: float) -> None:
    from twisted.internet import reactor

    await task.deferLater(reactor, seconds, lambda: None)


async def add_unique(dispatcher: Any, value: Any = "v", **args: Any) -> dict[str, Any]:
    return await run(dispatcher, "add", queue="q", value=value, unique=True, **args)


async def find(dispatcher: Any, value: Any = "v", queue: str = "q") -> str | None:
    answer = await run(dispatcher, "find", queue=queue, value=value)
    assert set(answer) == {"queue", "key"} and answer["queue"] == queue
    return answer["key"]


def index_size(redis: Any) -> int:
    """Entries in queue q's unique index (0 when the key does not exist)."""
    return int(redis.cli("HLEN", INDEX).strip()[1:])


# -- duplicates while held ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unique_add_answers_the_plain_shape_then_the_held_key_with_duplicate(dispatcher):
    """The first unique add answers exactly {queue, value, key}; a second adds nothing and answers
    that key with duplicate: true."""
    first = await add_unique(dispatcher, {"id": 7})
    assert first == {"queue": "q", "value": {"id": 7}, "key": "q:1"}
    again = await add_unique(dispatcher, {"id": 7})
    assert again == {"queue": "q", "value": {"id": 7}, "key": "q:1", "duplicate": True}
    assert await find(dispatcher, {"id": 7}) == "q:1"
    assert (await run(dispatcher, "len", queue="q"))["ready"] == 1
    assert (await run(dispatcher, "stats", queue="q"))["counters"]["added"] == 1


@pytest_twisted.ensureDeferred
async def test_duplicate_while_delayed(dispatcher):
    """A delayed unique message is held: adding its value again answers its key."""
    await add_unique(dispatcher, delay=60)
    assert (await add_unique(dispatcher))["duplicate"] is True
    assert await find(dispatcher) == "q:1"
    assert (await run(dispatcher, "len", queue="q"))["delayed"] == 1


@pytest_twisted.ensureDeferred
async def test_duplicate_while_reserved(dispatcher):
    """A reserved unique message is held: adding its value again answers its key."""
    await add_unique(dispatcher)
    await run(dispatcher, "reserve", queue="q", lease=30)
    assert await add_unique(dispatcher) == {"queue": "q", "value": "v", "key": "q:1", "duplicate": True}
    assert await find(dispatcher) == "q:1"


@pytest_twisted.ensureDeferred
async def test_only_the_same_json_is_a_duplicate(dispatcher):
    """"1" and 1 are different values, and so are objects whose keys come in another order."""
    keys = [(await add_unique(dispatcher, v))["key"] for v in ("1", 1, {"a": 1, "b": 2}, {"b": 2, "a": 1})]
    assert keys == ["q:1", "q:2", "q:3", "q:4"]
    assert await find(dispatcher, 1) == "q:2"
    assert await find(dispatcher, {"b": 2, "a": 1}) == "q:4"


@pytest_twisted.ensureDeferred
async def test_queues_have_separate_sets(dispatcher):
    """The same value is unique per queue: another queue adds it and finds its own key."""
    await add_unique(dispatcher)
    other = await run(dispatcher, "add", queue="r", value="v", unique=True)
    assert other == {"queue": "r", "value": "v", "key": "r:1"}
    assert await find(dispatcher, queue="r") == "r:1"
    assert await find(dispatcher, queue="never-used") is None


# -- leaving the queue --------------------------------------------------------------------------


async def _take(dispatcher: Any, redis: Any) -> None:
    await run(dispatcher, "take", queue="q")


async def _ack(dispatcher: Any, redis: Any) -> None:
    got = await run(dispatcher, "reserve", queue="q", lease=30)
    assert (await run(dispatcher, "ack", queue="q", receipt=got["receipt"]))["acked"] == 1


async def _del(dispatcher: Any, redis: Any) -> None:
    assert (await run(dispatcher, "del", queue="q", key="q:1"))["deleted"] == 1


async def _purge(dispatcher: Any, redis: Any) -> None:
    assert (await run(dispatcher, "purge", queue="q"))["purged"] == 1


async def _dead_by_nack(dispatcher: Any, redis: Any) -> None:
    await run(dispatcher, "config", queue="q", max_attempts=1)
    got = await run(dispatcher, "reserve", queue="q", lease=30)
    assert (await run(dispatcher, "nack", queue="q", receipt=got["receipt"]))["state"] == "dead"


async def _dead_by_lease(dispatcher: Any, redis: Any) -> None:
    await run(dispatcher, "config", queue="q", max_attempts=1)
    await run(dispatcher, "reserve", queue="q", lease=0.05)
    await sleep(0.1)


REMOVALS: dict[str, Callable[[Any, Any], Awaitable[None]]] = {
    "take": _take,
    "ack": _ack,
    "del": _del,
    "purge": _purge,
    "dead-letter by nack": _dead_by_nack,
    "dead-letter by lease expiry": _dead_by_lease,
}


@pytest.mark.parametrize("how", list(REMOVALS))
@pytest_twisted.ensureDeferred
async def test_value_is_unique_again_once_its_message_leaves(dispatcher, redis, how):
    """After take, ack, del, purge or dead-lettering, find answers null and a unique add adds again."""
    await add_unique(dispatcher)
    await REMOVALS[how](dispatcher, redis)
    assert await find(dispatcher) is None
    assert index_size(redis) == 0
    assert await add_unique(dispatcher) == {"queue": "q", "value": "v", "key": "q:2"}
    assert await find(dispatcher) == "q:2"


@pytest_twisted.ensureDeferred
async def test_ttl_expiry_frees_the_value(dispatcher, redis):
    """A unique message past its ttl is not found, and its value adds again even before a sweep."""
    await add_unique(dispatcher, ttl=0.05)
    await add_unique(dispatcher, "w", ttl=0.05)
    await sleep(0.1)
    assert await add_unique(dispatcher) == {"queue": "q", "value": "v", "key": "q:3"}
    assert await find(dispatcher, "w") is None
    assert await find(dispatcher) == "q:3"
    await run(dispatcher, "len", queue="q")  # settles: the expired ones are dropped, q:3 stays
    assert index_size(redis) == 1


@pytest_twisted.ensureDeferred
async def test_nack_and_lease_expiry_keep_it_findable(dispatcher):
    """A message given back (nack) or whose lease ran out is ready again: still found, still a duplicate."""
    await add_unique(dispatcher)
    got = await run(dispatcher, "reserve", queue="q", lease=30)
    assert (await run(dispatcher, "nack", queue="q", receipt=got["receipt"]))["state"] == "ready"
    assert await find(dispatcher) == "q:1"
    await run(dispatcher, "reserve", queue="q", lease=0.05)
    await sleep(0.1)
    assert await find(dispatcher) == "q:1"
    assert (await add_unique(dispatcher))["duplicate"] is True
    assert (await run(dispatcher, "len", queue="q"))["ready"] == 1


@pytest_twisted.ensureDeferred
async def test_redrive_makes_it_findable_again(dispatcher):
    """A redriven unique message is held again, so found; if its value was added anew meanwhile,
    the newer message keeps the value and both are delivered."""
    await run(dispatcher, "config", queue="q", max_attempts=1)
    await add_unique(dispatcher)
    await add_unique(dispatcher, "w")
    for _ in range(2):
        got = await run(dispatcher, "reserve", queue="q", lease=30)
        await run(dispatcher, "nack", queue="q", receipt=got["receipt"])
    assert await find(dispatcher) is None
    assert (await add_unique(dispatcher, "w"))["key"] == "q:3"
    assert (await run(dispatcher, "redrive", queue="q"))["moved"] == 2
    assert await find(dispatcher) == "q:1"
    assert await find(dispatcher, "w") == "q:3"
    assert (await add_unique(dispatcher))["duplicate"] is True
    taken = await run(dispatcher, "take", queue="q", count=10)
    assert sorted(m["key"] for m in taken) == ["q:1", "q:2", "q:3"]
    assert await find(dispatcher, "w") is None


@pytest_twisted.ensureDeferred
async def test_dead_letter_queue_shows_the_plain_value(dispatcher):
    """A dead unique message reads back with its value as added (peek, take from q.dead)."""
    await run(dispatcher, "config", queue="q", max_attempts=1)
    await add_unique(dispatcher, {"n": 1})
    got = await run(dispatcher, "reserve", queue="q", lease=30)
    assert got["value"] == {"n": 1}
    await run(dispatcher, "nack", queue="q", receipt=got["receipt"])
    assert (await run(dispatcher, "peek", queue="q", state="dead"))["value"] == {"n": 1}
    assert (await run(dispatcher, "take", queue="q.dead"))["value"] == {"n": 1}
    assert await add_unique(dispatcher, {"n": 1}) == {"queue": "q", "value": {"n": 1}, "key": "q:2"}


# -- add_many -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_add_many_reports_duplicates_in_the_batch_and_against_held_ones(dispatcher):
    """Items repeating a held unique value or an earlier unique item add nothing and are listed in
    duplicates; plain items are always added."""
    await add_unique(dispatcher, "b")
    answer = await run(dispatcher, "add_many", queue="q", messages=[
        {"value": "a", "unique": True},
        {"value": "a", "unique": "yes"},
        "a",
        {"value": "b", "unique": True, "priority": 0},
        {"value": "c", "unique": True, "delay": 60},
    ])
    assert answer == {
        "queue": "q", "keys": ["q:2", "q:2", "q:3", "q:1", "q:4"], "duplicates": [1, 3],
    }
    assert (await run(dispatcher, "len", queue="q"))["ready"] == 3
    assert [await find(dispatcher, v) for v in "abc"] == ["q:2", "q:1", "q:4"]
    assert (await run(dispatcher, "stats", queue="q"))["counters"]["added"] == 4


@pytest_twisted.ensureDeferred
async def test_add_many_without_duplicates_keeps_its_shape(dispatcher):
    """A batch that added everything answers exactly {queue, keys}."""
    answer = await run(dispatcher, "add_many", queue="q", messages=[{"value": 1, "unique": True}, 2])
    assert answer == {"queue": "q", "keys": ["q:1", "q:2"]}


@pytest_twisted.ensureDeferred
async def test_duplicates_do_not_count_against_max_length(dispatcher):
    """A full queue still answers a duplicate (nothing would be added) instead of queue_full."""
    await run(dispatcher, "config", queue="q", max_length=1)
    await add_unique(dispatcher)
    assert (await add_unique(dispatcher))["duplicate"] is True
    await fails(dispatcher, "queue_full", "add", queue="q", value="other", unique=True)
    await fails(dispatcher, "queue_full", "add_many", queue="q",
                messages=[{"value": "v", "unique": True}, {"value": "x", "unique": True}])
    assert await find(dispatcher, "x") is None


@pytest_twisted.ensureDeferred
async def test_dedup_hit_says_duplicate(dispatcher):
    """A dedup-window hit now answers duplicate: true, in add and add_many."""
    first = await run(dispatcher, "add", queue="q", value="x", dedup="order-7")
    assert first == {"queue": "q", "value": "x", "key": "q:1"}
    again = await run(dispatcher, "add", queue="q", value="x", dedup="order-7")
    assert again == {"queue": "q", "value": "x", "key": "q:1", "duplicate": True}
    many = await run(dispatcher, "add_many", queue="q", messages=[{"value": "y", "dedup": "order-7"}, "z"])
    assert many == {"queue": "q", "keys": ["q:1", "q:2"], "duplicates": [0]}


# -- plain traffic, bad input -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_plain_adds_are_not_affected_and_not_findable(dispatcher, redis):
    """Adds without unique (or unique=false) queue every copy, are never found and build no index."""
    for flag in (None, False, "0", "no"):
        args = {} if flag is None else {"unique": flag}
        answer = await run(dispatcher, "add", queue="q", value="v", **args)
        assert set(answer) == {"queue", "value", "key"}
    assert await find(dispatcher) is None
    assert redis.cli("EXISTS", INDEX).startswith(b":0")
    assert (await add_unique(dispatcher))["key"] == "q:5"
    assert set(await run(dispatcher, "add", queue="q", value="v")) == {"queue", "value", "key"}
    assert [m["key"] for m in await run(dispatcher, "peek", queue="q", count=10)][-2:] == ["q:5", "q:6"]
    assert await find(dispatcher) == "q:5"


@pytest_twisted.ensureDeferred
async def test_text_forms_of_unique(dispatcher):
    """unique takes 1/0, true/false and yes/no in any case, as forms and text lines send them."""
    for n, word in enumerate(("1", "TRUE", "Yes"), 1):
        assert (await run(dispatcher, "add", queue="q", value=word, unique=word))["key"] == f"q:{n}"
        assert await find(dispatcher, word) == f"q:{n}"


@pytest.mark.parametrize(
    "name, args, code",
    [
        ("add", {"queue": "q", "value": "v", "unique": "maybe"}, "bad_request"),
        ("add", {"queue": "q", "value": "v", "unique": 2}, "bad_request"),
        ("add", {"queue": "q", "value": "v", "unique": [True]}, "bad_request"),
        ("add_many", {"queue": "q", "messages": ["ok", {"value": "v", "unique": "maybe"}]}, "bad_request"),
        ("add", {"queue": "bad name!", "value": "v", "unique": True}, "bad_queue_name"),
        ("find", {"queue": "q"}, "bad_request"),
        ("find", {"queue": "q", "value": None}, "bad_request"),
        ("find", {"queue": "q", "value": "v", "unique": True}, "bad_request"),
        ("find", {"queue": "bad name!", "value": "v"}, "bad_queue_name"),
        ("find", {"value": "v"}, "bad_request"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_input_is_refused_and_adds_nothing(dispatcher, redis, name, args, code):
    """Bad unique flags, a find without a value and bad queue names get clear errors; nothing is queued."""
    error = await fails(dispatcher, code, name, **args)
    assert error.message
    assert (await run(dispatcher, "len", queue="q"))["len"] == 0
    assert redis.cli("EXISTS", INDEX).startswith(b":0")


# -- front ends ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_over_http_form_json_and_find(site_url):
    """Over HTTP a form add with unique=yes answers the key; a JSON add answers duplicate: true;
    POST /queue find answers the key."""
    url = site_url + "/q/jobs"
    form = {"value": "hello", "unique": "yes"}
    first = await treq.post(url, data=form, persistent=False)
    assert (first.code, await first.text()) == (200, "jobs:1\r\n")
    again = await treq.post(url, data=form, persistent=False)
    assert await again.text() == "jobs:1\r\n"
    body = json.dumps({"value": "hello", "unique": True}).encode()
    dup = await treq.post(url, data=body, headers={"content-type": "application/json"}, persistent=False)
    assert (dup.code, await dup.json()) == (201, {"queue": "jobs", "value": "hello", "key": "jobs:1",
                                                    "duplicate": True})
    many = json.dumps({"messages": [{"value": "hello", "unique": True}, "x"]}).encode()
    got = await treq.post(url, data=many, headers={"content-type": "application/json"}, persistent=False)
    assert await got.json() == {"queue": "jobs", "keys": ["jobs:1", "jobs:2"], "duplicates": [0]}
    cmd = json.dumps({"cmd": "find", "queue": "jobs", "value": "hello"}).encode()
    found = await treq.post(site_url + "/queue", data=cmd, headers={"content-type": "application/json"},
                            persistent=False)
    assert await found.json() == {"queue": "jobs", "key": "jobs:1"}
    bad = await treq.post(url, data={"value": "hello", "unique": "maybe"}, persistent=False)
    assert bad.code == 400 and (await bad.json())["code"] == "bad_request"


@pytest_twisted.ensureDeferred
async def test_line_protocol_find_text_form(dispatcher):
    """Over TCP, `find QUEUE VALUE` finds a unique add's key (text after the queue is the value), and
    answers null once the message is taken."""
    from twisted.internet import reactor

    from restmq.frontends.line import LineFactory

    port = reactor.listenTCP(0, LineFactory(dispatcher), interface="127.0.0.1")
    number = port.getHost().port

    def talk() -> list[Any]:
        add = json.dumps({"cmd": "add", "queue": "q", "value": "hello world", "unique": True})
        lines = f"{add}\n{add}\nfind q hello world\nfind q hello\ntake q\nfind q hello world\n"
        with socket.create_connection(("127.0.0.1", number), timeout=5) as s:
            s.sendall(lines.encode())
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return [json.loads(line) for line in data.splitlines()]

    try:
        got = await deferToThread(talk)
    finally:
        await port.stopListening()
    assert got[0] == {"queue": "q", "value": "hello world", "key": "q:1"}
    assert got[1]["duplicate"] is True
    assert got[2:4] == [{"queue": "q", "key": "q:1"}, {"queue": "q", "key": None}]
    assert got[4]["key"] == "q:1"
    assert got[5] == {"queue": "q", "key": None}


@pytest_twisted.ensureDeferred
async def test_xmlrpc_unique_is_the_last_positional_argument(site_url):
    """restmq.add(queue, value, priority, ttl, delay, dedup, unique) and restmq.find(queue, value)
    work over XML-RPC."""

    def calls() -> list[Any]:
        with xmlrpc.client.ServerProxy(site_url + "/RPC2", allow_none=True) as rpc:
            return [
                rpc.restmq.add("q", "v", None, None, None, None, True),
                rpc.restmq.add("q", "v", None, None, None, None, True),
                rpc.restmq.find("q", "v"),
                rpc.restmq.find("q", "nothing"),
                rpc.restmq.add("q", "v"),
            ]

    first, again, found, missing, plain = await deferToThread(calls)
    assert first == {"queue": "q", "value": "v", "key": "q:1"}
    assert again == {"queue": "q", "value": "v", "key": "q:1", "duplicate": True}
    assert found == {"queue": "q", "key": "q:1"}
    assert missing == {"queue": "q", "key": None}
    assert plain["key"] == "q:2"
