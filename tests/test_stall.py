"""A call that timed out never takes effect later: Redis stopped (SIGSTOP) or its answers delayed."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint

from restmq import errors
from restmq.dispatch import Dispatcher
from tests.conftest import RedisServer, start_redis
from tests.test_process import servers  # noqa: F401  (the fixture that cleans up processes)

TIMEOUT = 0.5


def sleep(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server this test may stop and continue."""
    directory = tempfile.mkdtemp(prefix="restmq-stall-")
    server = start_redis(directory)
    yield server
    server.process.send_signal(signal.SIGCONT)
    server.process.terminate()
    server.process.wait(10)


async def make_dispatcher(host: str, port: int, subscribe_port: int | None = None) -> Dispatcher:
    from restmq.backend.connect import connect
    from restmq.backend.redisconf import parse_redis_url
    from restmq.engine import QueueEngine
    from restmq.engine.hub import SubscriberEndpoint

    pool = await connect(parse_redis_url(f"redis://{host}:{port}/0"), poolsize=2, timeout=TIMEOUT)
    engine = QueueEngine(clock=reactor, timeout=TIMEOUT)
    await engine.attach(
        pool, SubscriberEndpoint(TCP4ClientEndpoint(reactor, host, subscribe_port or port))
    )
    return Dispatcher(engine)


async def close(dispatcher: Dispatcher) -> None:
    await dispatcher.engine.stop()
    await dispatcher.engine.redis.disconnect()


@pytest_twisted.async_yield_fixture
async def stalled(own_redis: RedisServer) -> AsyncIterator[tuple[Dispatcher, RedisServer]]:
    """A dispatcher over the private Redis, timing out after 0.5 s."""
    d = await make_dispatcher(own_redis.host, own_redis.port)
    yield d, own_redis
    own_redis.process.send_signal(signal.SIGCONT)
    await close(d)


async def outcome(d: defer.Deferred[Any]) -> errors.RestMQError:
    with pytest.raises(errors.RestMQError) as info:
        await d
    return info.value


@pytest_twisted.ensureDeferred
async def test_takes_and_adds_during_a_stall_change_nothing(stalled: tuple[Dispatcher, RedisServer]) -> None:
    """Takes, reserves and adds answered "not applied" while Redis was stopped are not run when it
    continues: the messages are all still there, and the timed-out add is absent."""
    dispatcher, server = stalled
    for n in range(5):
        await dispatcher.execute("add", {"queue": "s", "value": f"m{n}"})
    server.process.send_signal(signal.SIGSTOP)
    calls = [dispatcher.execute("take", {"queue": "s"}) for _ in range(3)]
    calls.append(dispatcher.execute("reserve", {"queue": "s", "lease": 30}))
    calls.append(dispatcher.execute("add", {"queue": "s", "value": "during"}))
    calls.append(dispatcher.execute("ack", {"queue": "s", "receipt": "1.1.x"}))
    failures = [await outcome(d) for d in calls]
    assert {f.code for f in failures} == {"backend_unavailable"}
    assert all(f.fields.get("applied") is False for f in failures)
    assert all("nothing was applied" in f.message for f in failures)
    await sleep(3 * TIMEOUT)
    server.process.send_signal(signal.SIGCONT)
    await sleep(0.3)
    length = await dispatcher.execute("len", {"queue": "s"})
    assert (length["ready"], length["reserved"]) == (5, 0)
    peeked = await dispatcher.execute("peek", {"queue": "s", "count": 10})
    assert [m["value"] for m in peeked] == [f"m{n}" for n in range(5)]
    stats = await dispatcher.execute("stats", {"queue": "s"})
    assert stats["counters"]["taken"] == 0 and stats["counters"]["added"] == 5


@pytest_twisted.ensureDeferred
async def test_service_resumes_at_once_after_a_stall(stalled: tuple[Dispatcher, RedisServer]) -> None:
    """Once Redis continues, the next calls succeed without waiting for anything."""
    dispatcher, server = stalled
    server.process.send_signal(signal.SIGSTOP)
    await outcome(dispatcher.execute("add", {"queue": "s", "value": "x"}))
    server.process.send_signal(signal.SIGCONT)
    added = await dispatcher.execute("add", {"queue": "s", "value": "after"})
    assert added["key"] == "s:1"
    assert (await dispatcher.execute("take", {"queue": "s"}))["value"] == "after"


class _Delaying(protocol.Protocol):
    """Relays bytes to Redis; Redis's answers are held while the proxy is told to hold them."""

    def __init__(self, proxy: "DelayingProxy") -> None:
        self.proxy, self.upstream = proxy, None
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        self.proxy.clients.append(self)
        factory = protocol.ClientFactory()
        factory.protocol = lambda: _Upstream(self)  # type: ignore[assignment]
        reactor.connectTCP(self.proxy.host, self.proxy.port, factory)

    def dataReceived(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)

    def answer(self, data: bytes) -> None:
        if self.proxy.holding:
            self.proxy.held.append((self, data))
        else:
            self.transport.write(data)

    def connectionLost(self, reason: Any) -> None:
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


class _Upstream(protocol.Protocol):
    def __init__(self, client: _Delaying) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client.upstream = self
        for data in self.client.pending:
            self.transport.write(data)
        self.client.pending = []

    def dataReceived(self, data: bytes) -> None:
        self.client.answer(data)


class DelayingProxy(protocol.Factory):
    """A TCP proxy in front of Redis whose answers can be held back: Redis runs every command at
    once, but its replies reach RestMQ only after ``release()``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.holding = False
        self.held: list[tuple[_Delaying, bytes]] = []
        self.clients: list[_Delaying] = []

    def buildProtocol(self, addr: Any) -> _Delaying:
        return _Delaying(self)

    def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for client, data in held:
            client.transport.write(data)


@pytest_twisted.async_yield_fixture
async def delayed(own_redis: RedisServer) -> AsyncIterator[tuple[Dispatcher, DelayingProxy, Dispatcher]]:
    """A dispatcher whose Redis answers go through a proxy that can hold them, and one that talks
    to the same Redis directly."""
    proxy = DelayingProxy(own_redis.host, own_redis.port)
    port = reactor.listenTCP(0, proxy, interface="127.0.0.1")
    d = await make_dispatcher("127.0.0.1", port.getHost().port, own_redis.port)
    direct = await make_dispatcher(own_redis.host, own_redis.port)
    yield d, proxy, direct
    proxy.release()
    await close(d)
    await close(direct)
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_late_answers_are_undone(delayed: tuple[Dispatcher, DelayingProxy, Dispatcher]) -> None:
    """When Redis ran a take, a reserve and an add but its answers came after the callers gave up,
    each is undone: the taken and reserved messages are ready again and the add is gone."""
    dispatcher, proxy, _ = delayed
    for n in range(3):
        await dispatcher.execute("add", {"queue": "d", "value": f"m{n}", "dedup": f"k{n}"})
    proxy.holding = True
    take = dispatcher.execute("take", {"queue": "d"})
    reserve = dispatcher.execute("reserve", {"queue": "d", "count": 2, "lease": 30})
    add = dispatcher.execute("add", {"queue": "d", "value": "late", "dedup": "late-1"})
    for d in (take, reserve, add):
        failure = await outcome(d)
        assert failure.code == "backend_unavailable" and failure.fields["applied"] is False
    proxy.release()
    await sleep(0.3)
    engine = dispatcher.engine
    assert sum(engine.late_calls.values()) == 3
    peeked = await dispatcher.execute("peek", {"queue": "d", "count": 10})
    assert sorted(m["value"] for m in peeked) == ["m0", "m1", "m2"]
    assert [m["attempts"] for m in peeked] == [0, 0, 0]
    again = await dispatcher.execute("add", {"queue": "d", "value": "late", "dedup": "late-1"})
    assert "duplicate" not in again  # the undone add left no dedup entry behind
    stats = await dispatcher.execute("stats", {"queue": "d"})
    assert stats["counters"]["taken"] == 0 and stats["counters"]["reserved"] == 0
    assert stats["counters"]["added"] == 4


@pytest_twisted.ensureDeferred
async def test_late_coalesced_runs_are_undone_as_a_whole(delayed: tuple[Dispatcher, DelayingProxy, Dispatcher]) -> None:
    """A pipelined run of adds, and one of takes, whose one script's answer came too late: every
    command of the run says nothing was applied, and nothing was (the adds are gone, the taken
    messages are back)."""
    dispatcher, proxy, _ = delayed
    await dispatcher.execute("add_many", {"queue": "c", "messages": ["m0", "m1"]})
    proxy.holding = True
    adds = dispatcher.execute_run([("add", {"queue": "c", "value": f"late{n}", "dedup": f"l{n}"}) for n in range(3)])
    takes = dispatcher.execute_run([("take", {"queue": "c"}), ("take", {"queue": "c"})])
    for run in (adds, takes):
        for failure in await run:
            assert failure.value.code == "backend_unavailable" and failure.value.fields["applied"] is False
    proxy.release()
    await sleep(0.3)
    assert dispatcher.engine.late_calls["add"] == 1 and dispatcher.engine.late_calls["take"] == 1
    peeked = await dispatcher.execute("peek", {"queue": "c", "count": 10})
    assert [m["value"] for m in peeked] == ["m0", "m1"]
    again = await dispatcher.execute("add", {"queue": "c", "value": "late0", "dedup": "l0"})
    assert "duplicate" not in again


@pytest_twisted.ensureDeferred
async def test_late_ack_with_next_gives_its_reservation_back(delayed: tuple[Dispatcher, DelayingProxy, Dispatcher]) -> None:
    """An ack with next whose answer came too late: the next message is ready again with its
    attempt given back (the ack itself stays done, and repeated it answers stale_receipt)."""
    dispatcher, proxy, _ = delayed
    await dispatcher.execute("add_many", {"queue": "n", "messages": ["m0", "m1"]})
    held = await dispatcher.execute("reserve", {"queue": "n", "lease": 30})
    proxy.holding = True
    failure = await outcome(dispatcher.execute("ack", {"queue": "n", "receipt": held["receipt"], "next": True}))
    assert failure.code == "backend_unavailable" and failure.fields["applied"] is False
    proxy.release()
    await sleep(0.3)
    peeked = await dispatcher.execute("peek", {"queue": "n", "count": 10})
    assert [(m["value"], m["attempts"]) for m in peeked] == [("m1", 0)]
    assert (await dispatcher.execute("len", {"queue": "n"}))["reserved"] == 0
    stale = await outcome(dispatcher.execute("ack", {"queue": "n", "receipt": held["receipt"]}))
    assert stale.code == "stale_receipt"


@pytest_twisted.ensureDeferred
async def test_late_delete_by_value_is_undone(delayed: tuple[Dispatcher, DelayingProxy, Dispatcher]) -> None:
    """A del by value (and one by key) that Redis ran after its caller gave up is undone: the
    message is held again, findable by its value."""
    dispatcher, proxy, _ = delayed
    await dispatcher.execute("add", {"queue": "v", "value": "keep-me", "unique": True})
    await dispatcher.execute("add", {"queue": "v", "value": "me-too"})
    proxy.holding = True
    by_value = dispatcher.execute("del", {"queue": "v", "value": "keep-me"})
    by_key = dispatcher.execute("del", {"queue": "v", "key": "v:2"})
    for d in (by_value, by_key):
        failure = await outcome(d)
        assert failure.code == "backend_unavailable" and failure.fields["applied"] is False
    proxy.release()
    await sleep(0.3)
    assert dispatcher.engine.late_calls["del"] == 2
    assert (await dispatcher.execute("find", {"queue": "v", "value": "keep-me"}))["key"] == "v:1"
    peeked = await dispatcher.execute("peek", {"queue": "v", "count": 10})
    assert sorted(m["value"] for m in peeked) == ["keep-me", "me-too"]


@pytest_twisted.ensureDeferred
async def test_long_poll_of_a_client_gone_takes_nothing(
    delayed: tuple[Dispatcher, DelayingProxy, Dispatcher],
) -> None:
    """A long poll cancelled (its client went away) while its take was in flight gives the message
    back when the take's answer arrives."""
    dispatcher, proxy, direct = delayed
    poll = dispatcher.execute("take", {"queue": "w", "wait": 5})
    await sleep(0.2)
    proxy.holding = True
    await direct.execute("add", {"queue": "w", "value": "for-nobody"})
    await sleep(0.2)
    assert proxy.held  # the woken long poll's take ran; its answer is held
    poll.cancel()
    with pytest.raises(defer.CancelledError):
        await poll
    proxy.release()
    await sleep(0.5)
    length = await dispatcher.execute("len", {"queue": "w"})
    assert length["ready"] == 1
    assert (await dispatcher.execute("take", {"queue": "w"}))["value"] == "for-nobody"


@pytest_twisted.ensureDeferred
async def test_lost_connection_says_outcome_unknown(own_redis: RedisServer) -> None:
    """A connection that dies after the call was sent answers that the outcome is unknown."""
    dispatcher = await make_dispatcher(own_redis.host, own_redis.port)
    try:
        own_redis.process.send_signal(signal.SIGSTOP)
        call = dispatcher.execute("add", {"queue": "k", "value": "x"})
        await sleep(0.05)
        own_redis.process.kill()
        failure = await outcome(call)
        assert failure.code == "backend_unavailable"
        assert failure.fields["applied"] == "unknown"
        assert "outcome is unknown" in failure.message
    finally:
        await close(dispatcher)


@pytest.mark.parametrize("backend", ["embedded", "external"])
def test_http_takes_and_adds_during_a_stall_of_a_real_server(tmp_path, servers, own_redis, backend) -> None:
    """A real `restmq serve` (embedded Redis with --durability always, or an external one): five
    takes and an add answered 503 "nothing was applied" while Redis is stopped leave the queue as
    it was once Redis continues."""
    import json as _json

    from tests.test_process import Server, http, serve_argv

    data = tmp_path / "data"
    extra = ["--durability", "always"] if backend == "embedded" else ["--redis", own_redis.url]
    server = Server(serve_argv(data, "--redis-timeout", "0.5", *extra), cwd=tmp_path)
    servers.append(server)
    server.wait_for("engine ready")
    form = {"content-type": "application/x-www-form-urlencoded"}
    for n in range(5):
        assert http("POST", server.url("/q/jobs"), f"value=m{n}".encode(), form)[0] == 200
    pid = int((data / "redis.pid").read_text()) if backend == "embedded" else own_redis.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        answers = [http("GET", server.url("/q/jobs")) for _ in range(5)]
        answers.append(http("POST", server.url("/q/jobs"), b"value=during", form))
    finally:
        time.sleep(1.5)
        os.kill(pid, signal.SIGCONT)
    for status, body in answers:
        assert status == 503
        assert _json.loads(body)["applied"] is False
    time.sleep(0.3)
    status, body = http("GET", server.url("/q/jobs/peek?count=10"))
    assert [m["value"] for m in _json.loads(body)] == [f"m{n}" for n in range(5)]
    status, body = http("GET", server.url("/stats/jobs"))
    assert _json.loads(body)["counters"]["taken"] == 0


def test_calls_sharing_one_timer_each_expire_at_their_own_deadline() -> None:
    """Many Redis calls share one deadline timer, yet each that gets no reply answers
    backend_unavailable (nothing applied) exactly at its own timeout, and a reply that comes after
    goes to the undo handler, never to the caller."""
    from twisted.internet import task

    from restmq.engine.calls import Deadlines, bounded

    clock = task.Clock()
    deadlines = Deadlines(clock)
    late: list[Any] = []
    works = [defer.Deferred() for _ in range(4)]
    outcomes: list[list[Any]] = [[] for _ in works]
    for i, work in enumerate(works):
        if i:
            clock.advance(0.1)  # started at 0, 0.1, 0.2, 0.3
        bounded(work, 1.0, clock, late=late.append, deadlines=deadlines).addBoth(outcomes[i].append)
    assert len(clock.getDelayedCalls()) == 1
    works[0].callback("early")  # answered in time
    clock.advance(0.75)  # now 1.05: call 1 (started 0.1) is not due yet
    assert outcomes[0] == ["early"] and outcomes[1] == []
    clock.advance(0.1)  # 1.15: call 1 expired
    failure = outcomes[1][0]
    assert failure.check(errors.BackendUnavailable) and failure.value.to_dict()["applied"] is False
    assert outcomes[2] == [] and outcomes[3] == []
    works[1].callback("late")  # Redis answered after the caller gave up: undone, not delivered
    assert late == ["late"] and len(outcomes[1]) == 1
    clock.advance(0.2)  # 1.35: calls 2 and 3 expired too
    assert all(o and o[0].check(errors.BackendUnavailable) for o in outcomes[2:])
    assert clock.getDelayedCalls() == []
