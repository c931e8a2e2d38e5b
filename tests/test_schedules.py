"""Recurring schedules: each tick adds one message, cluster-wide, from cron or every N seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
import treq
from twisted.internet import task

from restmq.engine import keys as K
from restmq.engine.firing import Firer
from restmq.errors import RestMQError
from restmq.recurrence import Schedule, Timing

from .conftest import make_engine, run
from .test_process import Server, http, serve_argv, servers  # noqa: F401 - servers is a fixture

MINUTE = 60_000


async def do(dispatcher, command: str, **args):
    """Run one command (``run`` of conftest takes ``name`` itself, which schedules need)."""
    return await dispatcher.execute(command, args)


async def refused(dispatcher, code: str, command: str, **args):
    """Run one command that must fail with error ``code``."""
    with pytest.raises(RestMQError) as info:
        await dispatcher.execute(command, args)
    assert info.value.code == code, info.value


def ms_of(text: str, tz: str = "UTC") -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


# -- pure: ticks --------------------------------------------------------------------------------


def test_cron_ticks_at_minutes_in_its_time_zone():
    """A cron schedule ticks at whole minutes, read in its IANA zone, across a DST change."""
    every5 = Timing.check("*/5 * * * *", None, None)
    start = ms_of("2026-03-01T10:02:30")
    assert every5.next_after(start) == ms_of("2026-03-01T10:05:00")
    assert every5.next_after(ms_of("2026-03-01T10:05:00")) == ms_of("2026-03-01T10:10:00")
    riga = Timing.check("0 9 * * *", None, "Europe/Riga")
    assert riga.next_after(ms_of("2026-03-27T12:00:00")) == ms_of("2026-03-28T09:00:00", "Europe/Riga")
    # Riga moves to summer time on 2026-03-29: 09:00 local is then 06:00 UTC, not 07:00.
    assert riga.next_after(ms_of("2026-03-28T12:00:00")) == ms_of("2026-03-29T06:00:00")
    assert Timing.check(" 0  0 1 1 * ", None, "UTC").cron == "0 0 1 1 *"


def test_every_ticks_at_multiples_of_its_period():
    """every: N ticks at the multiples of N seconds since the epoch, so every process agrees."""
    ten = Timing.check(None, 10, None)
    assert ten.next_after(1_005) == 10_000
    assert ten.next_after(10_000) == 20_000
    assert ten.next_after(9_999) == 10_000
    record = Schedule("s", "q", {"n": 1}, ten, 20_000, 10_000, 3, 7).record()
    assert Schedule.parse("s", record).to_dict()["last_key"] == "q:7"


# -- commands -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_set_get_list_and_delete(dispatcher):
    """A schedule is set, shown with its next tick, listed, and deleted."""
    made = await do(dispatcher, "schedule_set", name="tick", queue="jobs", value={"do": "x"}, every=60)
    assert made["queue"] == "jobs" and made["every"] == 60 and made["tz"] == "UTC"
    assert made["next_ms"] % 60_000 == 0 and made["next_ms"] > time.time() * 1000 - 2000
    assert made["last"] is None and made["fires"] == 0
    assert (await do(dispatcher, "schedule_get", name="tick"))["value"] == {"do": "x"}
    await do(dispatcher, "schedule_set", name="daily", queue="reports", value="go", cron="0 9 * * 1-5", tz="Europe/Riga")
    listed = await do(dispatcher, "schedule_ls")
    assert [s["name"] for s in listed["schedules"]] == ["daily", "tick"] and listed["count"] == 2
    assert "jobs" in (await run(dispatcher, "list"))["queues"]  # a scheduled queue is listed
    assert (await do(dispatcher, "schedule_rm", name="tick")) == {"name": "tick", "deleted": 1, "queue": "jobs"}
    await refused(dispatcher, "not_found", "schedule_get", name="tick")
    await refused(dispatcher, "not_found", "schedule_rm", name="tick")
    assert [s["name"] for s in (await do(dispatcher, "schedule_ls"))["schedules"]] == ["daily"]


@pytest_twisted.ensureDeferred
async def test_bad_inputs_are_refused_with_a_reason(dispatcher):
    """Bad cron, both or neither of cron and every, every < 1, unknown zones and bad names are 400s."""
    base = {"name": "s", "queue": "q", "value": 1}
    cases = [
        ({"cron": "61 * * * *"}, "Bad minute"),
        ({"cron": "* * * *"}, "five fields"),
        ({"cron": "0 * * * * *"}, "five fields"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"cron": "*/5 * * * *", "every": 5}, "either cron or every"),
        ({}, "either cron or every"),
        ({"every": 0}, "at least 1"),
        ({"every": 1.5}, "integer"),
        ({"every": 10, "tz": "Mars/Olympus"}, "unknown time zone"),
        ({"every": 10, "tz": "../../etc/passwd"}, "unknown time zone"),
        ({"every": 10, "name": "bad name"}, "schedule name"),
        ({"every": 10, "name": "a/b"}, "schedule name"),
        ({"every": 10, "queue": "a b"}, "queue name"),
    ]
    for extra, words in cases:
        with pytest.raises(RestMQError) as info:
            await dispatcher.execute("schedule_set", {**base, **extra})
        assert info.value.code in ("bad_request", "bad_queue_name") and words in info.value.message, (extra, info.value)
    await refused(dispatcher, "bad_request", "schedule_set", name="s", queue="q", every=5)  # no value
    await refused(dispatcher, "bad_request", "schedule_get", name="")
    assert (await do(dispatcher, "schedule_ls"))["count"] == 0


# -- firing, with the clock injected ------------------------------------------------------------


async def _quiet(engine):
    """Stop the engine's own firing loop (it runs on the real clock) so a test's clock decides."""
    await engine.firer.stop()


async def clocked(engine) -> tuple[task.Clock, Firer]:
    """A firing loop over ``engine`` driven by a test clock set to now (the engine's own stopped)."""
    await _quiet(engine)
    clock = task.Clock()
    clock.advance(time.time())
    return clock, Firer(engine.schedules, clock)


@pytest_twisted.ensureDeferred
async def test_cron_fires_once_per_minute_and_once_to_catch_up(dispatcher, engine):
    """A cron schedule fires at each minute the injected clock passes, and once for a long gap."""
    clock, firer = await clocked(engine)
    made = await do(dispatcher, "schedule_set", name="m", queue="cron", value="tick", cron="* * * * *")
    first = made["next_ms"]
    assert first % MINUTE == 0
    assert (await firer.once())["fired"] == 0  # not due yet
    clock.advance(first / 1000 - clock.seconds() + 0.5)
    assert (await firer.once())["fired"] == 1
    assert (await firer.once())["fired"] == 0  # the same tick never fires twice
    shown = await do(dispatcher, "schedule_get", name="m")
    assert (shown["last_ms"], shown["next_ms"], shown["fires"]) == (first, first + MINUTE, 1)
    clock.advance(60)
    assert (await firer.once())["fired"] == 1
    clock.advance(10 * 60)  # every process down for ten minutes: one catch-up fire
    assert (await firer.once())["fired"] == 1
    assert (await firer.once())["fired"] == 0
    shown = await do(dispatcher, "schedule_get", name="m")
    assert shown["next_ms"] == first + 12 * MINUTE and shown["fires"] == 3
    taken = await run(dispatcher, "take", queue="cron", count=10)
    assert [m["value"] for m in taken] == ["tick"] * 3
    assert shown["last_key"] == taken[-1]["key"]


@pytest_twisted.ensureDeferred
async def test_two_processes_firing_one_tick_add_one_message(dispatcher, engine, redis):
    """Two engines on one Redis racing for the same ticks add one message per tick."""
    other = await make_engine(redis)
    try:
        await _quiet(engine)
        await _quiet(other)
        clock = task.Clock()
        clock.advance(time.time())
        firers = [Firer(engine.schedules, clock), Firer(other.schedules, clock)]
        made = await do(dispatcher, "schedule_set", name="race", queue="race", value={"v": 1}, every=1)
        clock.advance(made["next_ms"] / 1000 - clock.seconds())
        fired = 0
        for _ in range(5):
            results = [await f.once() for f in firers]
            fired += sum(r["fired"] for r in results)
            clock.advance(1)
        assert fired == 5
        assert (await run(dispatcher, "len", queue="race"))["len"] == 5
    finally:
        await other.stop()
        await other.redis.disconnect()


@pytest_twisted.ensureDeferred
async def test_a_schedule_survives_an_engine_restart(redis):
    """A schedule set through one engine is fired by a new engine on the same Redis."""
    from restmq.dispatch import Dispatcher

    first = await make_engine(redis)
    made = await Dispatcher(first).execute("schedule_set", {"name": "s", "queue": "kept", "value": 1, "every": 1})
    await first.stop()
    await first.redis.disconnect()
    second = await make_engine(redis)
    try:
        await _quiet(second)
        clock = task.Clock()
        clock.advance(made["next_ms"] / 1000 + 0.1)
        assert (await Firer(second.schedules, clock).once())["fired"] == 1
        assert (await Dispatcher(second).execute("len", {"queue": "kept"}))["len"] == 1
    finally:
        await second.stop()
        await second.redis.disconnect()


@pytest_twisted.ensureDeferred
async def test_delete_stops_it_and_moving_it_leaves_the_old_queue(dispatcher, engine, redis):
    """A deleted schedule fires no more; one moved to another queue fires only there."""
    clock, firer = await clocked(engine)
    made = await do(dispatcher, "schedule_set", name="s", queue="old", value=1, every=1)
    await do(dispatcher, "schedule_set", name="s", queue="new", value=2, every=1)
    assert redis.cli("HLEN", K.for_queue("old").schedules).strip() == b":0"
    clock.advance(made["next_ms"] / 1000 - clock.seconds() + 1.5)
    assert (await firer.once())["fired"] == 1
    assert (await run(dispatcher, "len", queue="old"))["len"] == 0
    assert (await run(dispatcher, "take", queue="new"))["value"] == 2
    await do(dispatcher, "schedule_rm", name="s")
    clock.advance(5)
    assert sum((await firer.once()).values()) == 0
    assert (await run(dispatcher, "len", queue="new"))["len"] == 0
    assert redis.cli("ZCARD", K.SCHEDULES_DUE).strip() == b":0"


@pytest_twisted.ensureDeferred
async def test_the_due_index_repairs_itself(dispatcher, engine, redis):
    """A lost or wrong due entry is rebuilt from the queue's record; a stale one is dropped."""
    clock, firer = await clocked(engine)
    made = await do(dispatcher, "schedule_set", name="s", queue="q", value=1, every=60)
    await firer.once()  # the first pass (a full one) is done
    redis.cli("ZADD", K.SCHEDULES_DUE, "0", "s")  # early: read the record, fix the entry
    redis.cli("ZADD", K.SCHEDULES_DUE, "0", "ghost")  # no such schedule: dropped
    outcomes = await firer.once()
    assert (outcomes["early"], outcomes["gone"], outcomes["fired"]) == (1, 1, 0)
    assert int(redis.cli("ZSCORE", K.SCHEDULES_DUE, "s").split(b"\r\n")[1]) == made["next_ms"]
    redis.cli("ZREM", K.SCHEDULES_DUE, "s")  # lost: the full pass puts it back
    clock.advance(made["next_ms"] / 1000 - clock.seconds() + 31)
    assert (await firer.once())["fired"] == 1


# -- rights and HTTP ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_rights_are_judged_on_the_target_queue(engine, tmp_path):
    """Only admin on the queue sets or deletes a schedule; listings show readable queues only."""
    from restmq.auth import Caller, Tokens
    from restmq.dispatch import Dispatcher

    (tmp_path / "tokens").write_text("boss admin *\nateam admin a*\nreader read *\n")
    d = Dispatcher(engine, authorize=Tokens(str(tmp_path / "tokens")))

    def call(token: str, command: str, **args):
        return d.execute(command, args, Caller(token, "rest", "127.0.0.1"))

    await call("boss", "schedule_set", name="b", queue="b1", value=1, every=60)
    await call("ateam", "schedule_set", name="a", queue="a1", value=1, every=60)
    for token, command, args in [
        ("reader", "schedule_set", {"name": "r", "queue": "a1", "value": 1, "every": 60}),
        ("ateam", "schedule_set", {"name": "x", "queue": "b1", "value": 1, "every": 60}),
        ("ateam", "schedule_set", {"name": "b", "queue": "a1", "value": 1, "every": 60}),  # steal b from b1
        ("ateam", "schedule_rm", {"name": "b"}),
        ("ateam", "schedule_get", {"name": "b"}),
        ("reader", "schedule_rm", {"name": "a"}),
    ]:
        with pytest.raises(RestMQError) as info:
            await call(token, command, **args)
        assert info.value.code == "forbidden", (token, command)
    assert [s["name"] for s in (await call("ateam", "schedule_ls"))["schedules"]] == ["a"]
    assert [s["name"] for s in (await call("reader", "schedule_ls"))["schedules"]] == ["a", "b"]
    assert (await call("boss", "schedule_get", name="b"))["queue"] == "b1"
    assert (await call("ateam", "schedule_rm", name="a"))["deleted"] == 1


@pytest_twisted.ensureDeferred
async def test_http_routes(site_url):
    """PUT, GET and DELETE /schedules/<name> and GET /schedules answer JSON; errors are 4xx."""
    url = f"{site_url}/schedules/nightly"
    r = await treq.put(url, json={"queue": "reports", "value": {"job": "x"}, "cron": "30 2 * * *", "tz": "Europe/Riga"})
    body = json.loads(await r.content())
    assert r.code == 200 and body["name"] == "nightly" and body["next"].endswith("Z")
    r = await treq.get(f"{site_url}/schedules")
    assert r.code == 200 and [s["name"] for s in json.loads(await r.content())["schedules"]] == ["nightly"]
    r = await treq.get(url)
    assert r.code == 200 and json.loads(await r.content())["cron"] == "30 2 * * *"
    r = await treq.put(url, json={"queue": "reports", "value": 1, "cron": "bad"})
    assert r.code == 400 and json.loads(await r.content())["code"] == "bad_request"
    r = await treq.put(f"{site_url}/schedules/bad%20name", json={"queue": "q", "value": 1, "every": 5})
    assert r.code == 400
    r = await treq.post(url, json={})
    assert r.code == 405
    r = await treq.delete(url)
    assert r.code == 200 and json.loads(await r.content())["deleted"] == 1
    r = await treq.get(url)
    assert r.code == 404
    await r.content()


# -- real processes -----------------------------------------------------------------------------


def _redis_ms(redis) -> int:
    seconds, micros = redis.cli("TIME").split(b"\r\n")[2:5:2]
    return int(seconds) * 1000 + int(micros) // 1000


def restmq(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``restmq`` client command against ``server``."""
    return subprocess.run([sys.executable, "-m", "restmq.cli", *args, "--url", server.url()],
                          capture_output=True, text=True, timeout=60)


def test_every_second_over_two_processes_adds_one_message_per_tick(tmp_path, servers, redis):  # noqa: F811
    """Two RestMQ processes on one Redis, every: 1 for about 3 s: 2 to 4 messages, one per tick;
    the CLI sets, lists and deletes schedules."""
    for name in ("one", "two"):
        server = Server(serve_argv(tmp_path / name, "--redis", redis.url), cwd=tmp_path)
        servers.append(server)
        server.wait_for("engine ready")
    one, two = servers
    created = _redis_ms(redis)
    made = restmq(one, "schedule", "set", "beat", "--queue", "beat", "--value", '{"n": 1}', "--json-value", "--every", "1")
    assert made.returncode == 0 and "every 1s" in made.stdout, made
    time.sleep(3.0)
    status, body = http("DELETE", two.url("/schedules/beat"))
    assert status == 200, body
    deleted = _redis_ms(redis)
    time.sleep(0.5)  # a fire already under way when the delete came would show up by now
    status, body = http("GET", one.url("/q/beat/peek?count=100"))
    messages = json.loads(body) if status == 200 else []
    ticks = deleted // 1000 - created // 1000  # whole seconds passed between the set and the delete
    assert 2 <= len(messages) <= 4, messages
    assert len(messages) <= ticks, (len(messages), ticks)  # never two messages for one tick
    assert all(m["value"] == {"n": 1} for m in messages)

    made = restmq(two, "schedule", "set", "daily", "--queue", "reports", "--value", "go", "--cron", "0 9 * * 1-5",
                  "--tz", "Europe/Riga")
    assert made.returncode == 0, made
    listed = restmq(one, "schedule", "ls")
    assert listed.returncode == 0 and "daily" in listed.stdout and "Europe/Riga" in listed.stdout, listed
    assert "beat" not in listed.stdout
    bad = restmq(one, "schedule", "set", "x", "--queue", "q", "--value", "v", "--cron", "99 * * * *")
    assert bad.returncode == 3 and "bad_request" in bad.stderr, bad
    assert restmq(one, "schedule", "rm", "daily").returncode == 0
    assert json.loads(restmq(one, "schedule", "ls", "--json").stdout)["count"] == 0


@pytest_twisted.ensureDeferred
async def test_a_late_set_or_delete_is_undone(dispatcher, engine, redis):
    """A set or delete that Redis ran after its caller gave up is undone: the caller's view holds."""
    from twisted.internet import reactor

    store = engine.schedules
    first = await do(dispatcher, "schedule_set", name="s", queue="q", value=1, every=60)
    key = K.for_queue("q").schedules
    before = redis.cli("HGET", key, "s")
    second = await do(dispatcher, "schedule_set", name="s", queue="q", value=2, every=60)
    written = Schedule.parse("s", redis.cli("HGET", key, "s").split(b"\r\n")[1]).record()
    store._undo("q", "s", "set")([-1, before.split(b"\r\n")[1], written])  # the late set's reply
    await task.deferLater(reactor, 0.1, lambda: None)
    assert (await do(dispatcher, "schedule_get", name="s"))["value"] == first["value"] != second["value"]
    # A delete whose script ran but whose answer came too late: the caller saw a failure, the
    # indexes were left alone, and the record comes back.
    reply = await engine.scripts.call(engine.redis, "sched", K.for_queue("q").pick(engine.scripts.keys["sched"]),
                                      [K.for_queue("q").channel, "del", "s"])
    store._undo("q", "s", "del")(reply)
    await task.deferLater(reactor, 0.1, lambda: None)
    assert (await do(dispatcher, "schedule_get", name="s"))["value"] == first["value"]
    assert engine.late_calls["sched"] == 2


@pytest_twisted.ensureDeferred
async def test_line_protocol_and_xmlrpc_have_the_commands(dispatcher, site_url):
    """The line protocol (text and JSON lines) and XML-RPC set, list and delete schedules too."""
    import xmlrpc.client

    from .test_line import connect, read

    proto, transport = connect(dispatcher)
    proto.dataReceived(
        b"schedule_set tick jobs 30 hello world\n"
        b'{"cmd": "schedule_set", "name": "cron", "queue": "jobs", "value": 1, "cron": "0 * * * *"}\n'
        b"schedule_ls\nschedule_rm tick\nschedule_get tick\n"
    )
    answers = await read(transport, 5)
    assert answers[0]["every"] == 30 and answers[0]["value"] == "hello world"
    assert answers[1]["cron"] == "0 * * * *"
    assert answers[2]["count"] == 2 and answers[3]["deleted"] == 1 and answers[4]["code"] == "not_found"

    async def rpc(method: str, *params):
        r = await treq.post(f"{site_url}/RPC2", data=xmlrpc.client.dumps(params, method).encode(),
                            headers={"content-type": "text/xml"})
        return xmlrpc.client.loads(await r.content())[0][0]

    assert [s["name"] for s in (await rpc("restmq.schedule_ls"))["schedules"]] == ["cron"]
    assert (await rpc("restmq.schedule_rm", "cron"))["deleted"] == 1
