"""At-least-once delivery on a real redis-server: reserve, ack, nack, touch, leases, dead letters,
delays, dedup, limits and the sweeper."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.conftest import fails, run




async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_reserve_hides_until_acked(dispatcher):
    """A reserved message carries a receipt, is hidden from others, and is gone once acked."""
    await run(dispatcher, "add", queue="q", value="job")
    got = await run(dispatcher, "reserve", queue="q", lease=30)
    assert got["key"] == "q:1" and got["attempts"] == 1 and got["receipt"]
    assert got["lease_until"] > time.time() + 25
    await fails(dispatcher, "empty", "reserve", queue="q")
    await fails(dispatcher, "empty", "take", queue="q")
    assert (await run(dispatcher, "len", queue="q"))["reserved"] == 1
    assert await run(dispatcher, "ack", queue="q", receipt=got["receipt"]) == {"queue": "q", "acked": 1}
    assert (await run(dispatcher, "len", queue="q"))["len"] == 0
    await fails(dispatcher, "stale_receipt", "ack", queue="q", receipt=got["receipt"])
    counters = (await run(dispatcher, "stats", queue="q"))["counters"]
    assert counters["reserved"] == 1 and counters["acked"] == 1


@pytest_twisted.ensureDeferred
async def test_expired_lease_comes_back_and_its_receipt_is_stale(dispatcher):
    """Without an ack the message returns after its lease (counted as returned); the old receipt can no longer ack."""
    await run(dispatcher, "add", queue="q", value="job")
    first = await run(dispatcher, "reserve", queue="q", lease=0.05)
    await sleep(0.1)
    await fails(dispatcher, "stale_receipt", "ack", queue="q", receipt=first["receipt"])
    again = await run(dispatcher, "reserve", queue="q", lease=5)
    assert again["key"] == "q:1" and again["attempts"] == 2 and again["receipt"] != first["receipt"]
    await fails(dispatcher, "stale_receipt", "touch", queue="q", receipt=first["receipt"])
    assert (await run(dispatcher, "ack", queue="q", receipt=[again["receipt"]]))["acked"] == 1
    counters = (await run(dispatcher, "stats", queue="q"))["counters"]
    assert (counters["returned"], counters["reserved"], counters["acked"]) == (1, 2, 1)


@pytest_twisted.ensureDeferred
async def test_idle_queue_recovers_by_the_sweeper(dispatcher):
    """An expired lease on a queue nobody touches is moved back by the periodic sweep."""
    await run(dispatcher, "add", queue="idle", value="job")
    await run(dispatcher, "reserve", queue="idle", lease=0.05)
    await sleep(0.4)
    stats = await run(dispatcher, "stats", queue="idle")  # stats does not settle by itself
    assert stats["length"]["ready"] == 1 and stats["length"]["reserved"] == 0


@pytest_twisted.ensureDeferred
async def test_nack_gives_back_now_or_after_a_delay(dispatcher):
    """nack returns a message at once, or after its delay."""
    await run(dispatcher, "add", queue="q", value="job")
    got = await run(dispatcher, "reserve", queue="q")
    assert await run(dispatcher, "nack", queue="q", receipt=got["receipt"]) == {
        "queue": "q", "nacked": 1, "state": "ready",
    }
    got = await run(dispatcher, "reserve", queue="q")
    assert got["attempts"] == 2
    assert (await run(dispatcher, "nack", queue="q", receipt=got["receipt"], delay=0.2))["state"] == "delayed"
    await fails(dispatcher, "empty", "reserve", queue="q")
    assert (await run(dispatcher, "len", queue="q"))["delayed"] == 1
    await sleep(0.25)
    assert (await run(dispatcher, "reserve", queue="q"))["attempts"] == 3
    await fails(dispatcher, "stale_receipt", "nack", queue="q", receipt=got["receipt"])


@pytest_twisted.ensureDeferred
async def test_max_attempts_sends_to_dead_letters_and_redrive_brings_back(dispatcher):
    """After max_attempts deliveries the message is dead-lettered with its last error; redrive resets it."""
    await run(dispatcher, "config", queue="q", max_attempts=2)
    await run(dispatcher, "add", queue="q", value="poison")
    first = await run(dispatcher, "reserve", queue="q")
    await run(dispatcher, "nack", queue="q", receipt=first["receipt"], error="boom 1")
    second = await run(dispatcher, "reserve", queue="q", lease=0.05)
    await sleep(0.1)
    await fails(dispatcher, "empty", "reserve", queue="q")
    assert await run(dispatcher, "len", queue="q") == {
        "queue": "q", "len": 0, "ready": 0, "reserved": 0, "delayed": 0, "dead": 1,
    }
    dead = await run(dispatcher, "peek", queue="q", state="dead")
    assert dead["key"] == "q.dead:1" and dead["attempts"] == 2 and dead["value"] == "poison"
    assert dead["error"] == "boom 1"
    assert (await run(dispatcher, "stats", queue="q"))["counters"]["dead"] == 1
    assert second["attempts"] == 2


@pytest_twisted.ensureDeferred
async def test_redrive_moves_dead_messages_back_with_attempts_reset(dispatcher):
    """redrive moves all (or count) dead messages back to the queue, keeping their keys."""
    await run(dispatcher, "config", queue="r", max_attempts=1)
    await run(dispatcher, "add_many", queue="r", messages=["a", "b", "c"])
    for got in await run(dispatcher, "reserve", queue="r", count=3):
        assert (await run(dispatcher, "nack", queue="r", receipt=got["receipt"], error="bad"))["state"] == "dead"
    assert (await run(dispatcher, "len", queue="r"))["dead"] == 3
    assert (await run(dispatcher, "redrive", queue="r", count=2))["moved"] == 2
    back = await run(dispatcher, "reserve", queue="r", count=5)
    assert [(m["key"], m["attempts"]) for m in back] == [("r:1", 1), ("r:2", 1)]
    assert (await run(dispatcher, "redrive", queue="r"))["moved"] == 1
    await fails(dispatcher, "bad_request", "redrive", queue="r.dead")


@pytest_twisted.ensureDeferred
async def test_touch_extends_the_lease(dispatcher):
    """touch moves the lease deadline forward so the message does not come back."""
    await run(dispatcher, "add", queue="q", value="long job")
    got = await run(dispatcher, "reserve", queue="q", lease=0.1)
    touched = await run(dispatcher, "touch", queue="q", receipt=got["receipt"], lease=5)
    assert touched["lease_until"] > time.time() + 4
    await sleep(0.2)
    await fails(dispatcher, "empty", "reserve", queue="q")
    assert (await run(dispatcher, "ack", queue="q", receipt=got["receipt"]))["acked"] == 1


@pytest_twisted.ensureDeferred
async def test_ack_list_is_all_or_nothing(dispatcher):
    """Acking a list with one stale receipt acks nothing and names the stale one."""
    await run(dispatcher, "add_many", queue="q", messages=["a", "b"])
    a, b = await run(dispatcher, "reserve", queue="q", count=2)
    error = await fails(dispatcher, "stale_receipt", "ack", queue="q", receipt=[a["receipt"], "99.1.x"])
    assert error.fields["receipts"] == ["99.1.x"]
    assert (await run(dispatcher, "len", queue="q"))["reserved"] == 2
    assert (await run(dispatcher, "ack", queue="q", receipt=[a["receipt"], b["receipt"], a["receipt"]]))["acked"] == 2


@pytest_twisted.ensureDeferred
async def test_delay_hides_a_new_message_until_due_and_wakes_a_long_poll(dispatcher):
    """A delayed add is invisible until due; a waiting reserve gets it soon after."""
    await run(dispatcher, "add", queue="q", value="later", delay=0.3)
    assert (await run(dispatcher, "len", queue="q"))["delayed"] == 1
    assert (await run(dispatcher, "peek", queue="q", state="delayed"))["value"] == "later"
    await fails(dispatcher, "empty", "take", queue="q")
    start = time.monotonic()
    got = await run(dispatcher, "reserve", queue="q", wait=3)
    assert got["value"] == "later"
    assert 0.2 < time.monotonic() - start < 0.8


@pytest_twisted.ensureDeferred
async def test_dedup_adds_once_within_the_window(dispatcher):
    """A second add with the same dedup string answers the first key and adds nothing."""
    await run(dispatcher, "config", queue="q", dedup_window=0.2)
    first = await run(dispatcher, "add", queue="q", value="x", dedup="order-7")
    again = await run(dispatcher, "add", queue="q", value="x", dedup="order-7")
    many = await run(dispatcher, "add_many", queue="q", messages=[{"value": "y", "dedup": "order-7"}])
    assert first["key"] == again["key"] == many["keys"][0] == "q:1"
    assert (await run(dispatcher, "len", queue="q"))["ready"] == 1
    await sleep(0.25)
    assert (await run(dispatcher, "add", queue="q", value="x", dedup="order-7"))["key"] == "q:2"


@pytest_twisted.ensureDeferred
async def test_max_length_refuses_with_queue_full(dispatcher):
    """Past max_length adds are refused with queue_full and a batch is refused whole."""
    await run(dispatcher, "config", queue="q", max_length=2)
    await run(dispatcher, "add", queue="q", value="1")
    await fails(dispatcher, "queue_full", "add_many", queue="q", messages=["2", "3"])
    await run(dispatcher, "add", queue="q", value="2")
    await fails(dispatcher, "queue_full", "add", queue="q", value="3")
    assert (await run(dispatcher, "len", queue="q"))["len"] == 2


@pytest_twisted.ensureDeferred
async def test_config_reads_defaults_and_sets_values(dispatcher):
    """config answers the defaults, then what was set, and refuses bad values."""
    assert await run(dispatcher, "config", queue="q") == {
        "queue": "q", "max_attempts": 5, "lease": 30.0, "dedup_window": 300.0, "max_length": 0,
    }
    set_ = await run(dispatcher, "config", queue="q", lease="2.5", max_attempts=3)
    assert (set_["lease"], set_["max_attempts"]) == (2.5, 3)
    await run(dispatcher, "add", queue="q", value="x")
    got = await run(dispatcher, "reserve", queue="q")
    assert 1.5 < got["lease_until"] - time.time() < 3.0
    await fails(dispatcher, "bad_request", "config", queue="q", max_attempts=0)
    await fails(dispatcher, "bad_request", "config", queue="q", lease=-1)
    await fails(dispatcher, "bad_request", "config", queue="q", colour="red")


@pytest_twisted.ensureDeferred
async def test_concurrent_reserves_never_share_a_message(dispatcher):
    """Many reserves at once each get different messages."""
    await run(dispatcher, "add_many", queue="q", messages=[str(i) for i in range(200)])
    batches = await defer.gatherResults(
        [dispatcher.execute("reserve", {"queue": "q", "count": 7}) for _ in range(40)]
    )
    keys = [m["key"] for batch in batches for m in batch]
    assert len(keys) == len(set(keys)) == 200


@pytest_twisted.ensureDeferred
async def test_reserve_count_and_wait_empty(dispatcher):
    """reserve with count answers a list, and an empty list after its wait."""
    await run(dispatcher, "add_many", queue="q", messages=["a", "b"])
    assert len(await run(dispatcher, "reserve", queue="q", count=5)) == 2
    start = time.monotonic()
    assert await run(dispatcher, "reserve", queue="q", count=5, wait=0.2) == []
    assert time.monotonic() - start >= 0.19


@pytest.mark.parametrize("name,args", [
    ("reserve", {"lease": -1}),
    ("reserve", {"lease": 10**9}),
    ("reserve", {"lease": "soon"}),
    ("reserve", {"count": 1001}),
    ("add", {"value": "x", "delay": -1}),
    ("add", {"value": "x", "delay": 10**9}),
    ("add", {"value": "x", "ttl": 10**12}),
    ("add", {"value": "x", "dedup": ""}),
    ("add", {"value": "x", "dedup": "d" * 300}),
    ("add", {"value": "x", "priority": -1}),
    ("ack", {}),
    ("ack", {"receipt": 42}),
    ("ack", {"receipt": []}),
    ("ack", {"receipt": ["r"] * 1001}),
    ("nack", {"receipt": ["a", "b"]}),
    ("nack", {"receipt": "r", "delay": -2}),
    ("touch", {"receipt": "r", "lease": 0}),
    ("peek", {"state": "gone"}),
    ("redrive", {"count": 0}),
])
@pytest_twisted.ensureDeferred
async def test_bad_delivery_input_is_refused_and_changes_nothing(dispatcher, name, args):
    """Bad leases, delays, ttls, dedups, receipts and counts are bad_request; nothing changes."""
    await run(dispatcher, "add", queue="q", value="keep")
    await fails(dispatcher, "bad_request", name, queue="q", **args)
    assert (await run(dispatcher, "len", queue="q"))["ready"] == 1


@pytest_twisted.ensureDeferred
async def test_unknown_receipts_are_stale(dispatcher):
    """Receipts that were never issued are refused as stale."""
    for receipt in ("1.1.abc", "nonsense", "99999999.3.x"):
        await fails(dispatcher, "stale_receipt", "ack", queue="q", receipt=receipt)
        await fails(dispatcher, "stale_receipt", "nack", queue="q", receipt=receipt)
        await fails(dispatcher, "stale_receipt", "touch", queue="q", receipt=receipt)


@pytest_twisted.ensureDeferred
async def test_ttl_passing_during_a_lease_drops_the_message_when_it_comes_back(dispatcher):
    """A message whose ttl ran out while reserved is dropped (expired) instead of coming back."""
    await run(dispatcher, "add", queue="q", value="x", ttl=0.2)
    await run(dispatcher, "add", queue="q", value="y")
    first = await run(dispatcher, "reserve", queue="q", lease=0.3)
    assert first["value"] == "x"
    await sleep(0.4)
    assert (await run(dispatcher, "len", queue="q"))["ready"] == 1
    assert [m["value"] for m in await run(dispatcher, "peek", queue="q", count=5)] == ["y"]
    assert (await run(dispatcher, "stats", queue="q"))["counters"]["expired"] == 1
    await run(dispatcher, "add", queue="n", value="z", ttl=0.1)
    got = await run(dispatcher, "reserve", queue="n", lease=5)
    await sleep(0.15)
    assert (await run(dispatcher, "nack", queue="n", receipt=got["receipt"]))["state"] == "expired"
    assert (await run(dispatcher, "len", queue="n"))["len"] == 0


@pytest_twisted.ensureDeferred
async def test_redrive_sees_a_last_lease_that_just_ran_out(dispatcher):
    """redrive settles first, so a message whose final lease just ended is redriven at once."""
    await run(dispatcher, "config", queue="q", max_attempts=1)
    await run(dispatcher, "add", queue="q", value="x", ttl=60)
    await run(dispatcher, "reserve", queue="q", lease=0.05)
    await sleep(0.08)
    assert (await run(dispatcher, "redrive", queue="q"))["moved"] == 1
    back = await run(dispatcher, "take", queue="q")
    assert back["value"] == "x" and back["attempts"] == 0


@pytest_twisted.ensureDeferred
async def test_ack_with_next_waits_for_the_next_message_and_a_stale_ack_reserves_nothing(dispatcher):
    """ack with next long-polls for the next message; a stale receipt fails before anything is reserved."""
    await run(dispatcher, "add", queue="w", value="one")
    first = await run(dispatcher, "reserve", queue="w", lease=30)
    reactor.callLater(0.2, lambda: defer.ensureDeferred(run(dispatcher, "add", queue="w", value="two")))
    answer = await run(dispatcher, "ack", queue="w", receipt=first["receipt"], next=True, wait=5, lease=30)
    assert answer["acked"] == 1 and answer["next"]["value"] == "two" and answer["next"]["receipt"]
    await run(dispatcher, "add", queue="w", value="three")
    await fails(dispatcher, "stale_receipt", "ack", queue="w", receipt=first["receipt"], next=True)
    assert (await run(dispatcher, "len", queue="w"))["reserved"] == 1  # only "two"
    await fails(dispatcher, "bad_request", "ack", queue="w", receipt=answer["next"]["receipt"], next=True, wait=-1)
