"""The memcached front end on the real dispatcher, driven by pymemcache and raw sockets over TCP.

Blocking clients run in threads (deferToThread) so the reactor keeps serving them.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError, MemcacheUnknownCommandError
from twisted.internet import task
from twisted.internet.threads import deferToThread

from restmq.dispatch import Dispatcher
from restmq.errors import Unauthorized
from restmq.frontends.memcache import MemcacheFactory

from .conftest import run
from .test_line import reactor, until


class Memcache:
    """A MemcacheFactory listening on a free loopback port, and the clients a test opened on it."""

    def __init__(self, dispatcher: Dispatcher, **options: Any) -> None:
        self.factory = MemcacheFactory(dispatcher, **{"max_value": 1024, **options})
        self.port = reactor().listenTCP(0, self.factory, interface="127.0.0.1")
        self.address = ("127.0.0.1", self.port.getHost().port)
        self.clients: list[Any] = []

    def client(self) -> Client:
        """A pymemcache client that waits for every answer (``noreply`` off unless asked)."""
        c = Client(self.address, default_noreply=False, connect_timeout=5, timeout=10)
        self.clients.append(c)
        return c

    def raw(self) -> socket.socket:
        s = socket.create_connection(self.address, timeout=10)
        self.clients.append(s)
        return s

    async def close(self) -> None:
        await deferToThread(lambda: [c.close() for c in self.clients])
        await until(lambda: self.factory.connections == 0)
        await self.port.stopListening()


@pytest_twisted.async_yield_fixture
async def mc(dispatcher):
    """A memcached front end over the test dispatcher, closed (with its clients) after the test."""
    server = Memcache(dispatcher)
    yield server
    await server.close()


@pytest_twisted.async_yield_fixture
async def short_lease(dispatcher):
    """The same front end with a 0.3 s lease for /open, to show that touching keeps messages hidden."""
    server = Memcache(dispatcher, lease=0.3)
    yield server
    await server.close()


def call(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking client call off the reactor thread."""
    return deferToThread(f, *args, **kwargs)


def exchange(s: socket.socket, data: bytes, until_ends: bytes) -> bytes:
    """Send raw bytes and read until the answer ends with ``until_ends``."""
    s.sendall(data)
    got = b""
    while not got.endswith(until_ends):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


async def length(dispatcher: Dispatcher, queue: str) -> dict[str, int]:
    found = await run(dispatcher, "len", queue=queue)
    return {k: found[k] for k in ("ready", "reserved", "delayed", "dead")}


EMPTY = {"ready": 0, "reserved": 0, "delayed": 0, "dead": 0}


async def opened(server: Memcache, queue: str, value: bytes) -> tuple[Client, Client]:
    """Two clients, the first holding ``value`` open on ``queue``."""
    c, other = server.client(), server.client()
    await call(c.set, queue, value)
    assert await call(c.get, f"{queue}/open") == value
    return c, other


# -- set / get ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_set_then_get_is_fifo_and_empty_is_none(mc, dispatcher):
    """Values set come back from get in the order they were set, and an empty queue gives None."""
    c = mc.client()
    for value in (b"one", b"two", "trois ✓".encode()):
        assert await call(c.set, "jobs", value) is True
    assert [await call(c.get, "jobs") for _ in range(3)] == [b"one", b"two", "trois ✓".encode()]
    assert await call(c.get, "jobs") is None
    assert await length(dispatcher, "jobs") == EMPTY


@pytest_twisted.ensureDeferred
async def test_set_is_plain_text_for_http_consumers_and_json_values_come_back_as_json(mc, dispatcher):
    """A set value is the message's plain string; a JSON object added over HTTP is got as its JSON text."""
    c = mc.client()
    await call(c.set, "mixed", b"hello", flags=7)
    taken = await run(dispatcher, "take", queue="mixed")
    assert taken["value"] == "hello"
    await run(dispatcher, "add", queue="mixed", value={"n": 1, "s": "é"})
    assert await call(c.get, "mixed") == '{"n":1,"s":"é"}'.encode()


@pytest_twisted.ensureDeferred
async def test_noreply_sets_are_pipelined_before_the_next_get(mc):
    """With pymemcache's default noreply, a set is still applied before the get that follows it."""
    c = Client(mc.address, connect_timeout=5, timeout=10)  # default_noreply=True
    mc.clients.append(c)
    results = await call(lambda: [c.set("p", str(i)) for i in range(20)] + [c.get("p")])
    assert results[-1] == b"0"


@pytest_twisted.ensureDeferred
async def test_multi_key_get_answers_each_queue_that_has_something(mc):
    """get_many over three queues returns the two that hold a message, each taken once."""
    c = mc.client()
    await call(c.set, "a", b"x")
    await call(c.set, "c", b"z")
    assert await call(c.get_many, ["a", "b", "c"]) == {"a": b"x", "c": b"z"}
    assert await call(c.get_many, ["a", "b", "c"]) == {}


@pytest_twisted.ensureDeferred
async def test_a_waiting_get_is_woken_by_an_http_add(mc, site_url):
    """get q/t=3000 answers as soon as a message is POSTed over HTTP, not after the timeout."""
    import treq

    c = mc.client()
    started = time.monotonic()
    waiting = call(c.get, "wake/t=3000")
    await task.deferLater(reactor(), 0.2, lambda: None)
    response = await treq.post(f"{site_url}/q/wake", data={"value": "ding"})
    assert response.code == 200
    await response.content()
    assert await waiting == b"ding"
    assert time.monotonic() - started < 2


@pytest_twisted.ensureDeferred
async def test_a_waiting_get_on_an_empty_queue_gives_none_after_its_timeout(mc):
    """get q/t=300 on an empty queue answers None after about 0.3 s."""
    c = mc.client()
    started = time.monotonic()
    assert await call(c.get, "quiet/t=300") is None
    assert 0.25 < time.monotonic() - started < 2


@pytest_twisted.ensureDeferred
async def test_expiry_follows_memcached_exptime(mc, dispatcher):
    """exptime 1 drops the message after a second; a negative or past absolute exptime stores nothing."""
    c = mc.client()
    assert await call(c.set, "ttl", b"soon", expire=1) is True
    assert await call(c.set, "ttl", b"never seen", expire=-1) is True
    assert await call(c.set, "ttl", b"long ago", expire=1_000_000_000) is True
    assert (await length(dispatcher, "ttl"))["ready"] == 1
    await task.deferLater(reactor(), 1.2, lambda: None)
    assert await call(c.get, "ttl") is None


# -- reliable reads -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_open_hides_the_message_until_close_acks_it(mc, dispatcher):
    """get q/open delivers a message others cannot get until get q/close deletes it."""
    c, other = await opened(mc, "work", b"task")
    assert await call(other.get, "work") is None
    assert await length(dispatcher, "work") == {**EMPTY, "reserved": 1}
    assert await call(c.get, "work/close") is None
    assert await length(dispatcher, "work") == EMPTY
    assert await call(c.get, "work/close") is None  # nothing open: nothing to do


@pytest_twisted.ensureDeferred
async def test_a_second_open_on_one_queue_is_refused_and_the_first_stays_open(mc, dispatcher):
    """One open message per queue per connection: a second /open gets CLIENT_ERROR, the first is kept."""
    s = mc.raw()
    await run(dispatcher, "add", queue="one", value="first")
    await run(dispatcher, "add", queue="one", value="second")
    assert await call(exchange, s, b"get one/open\r\n", b"END\r\n") == b"VALUE one/open 0 5\r\nfirst\r\nEND\r\n"
    refused = await call(exchange, s, b"get one/open\r\n", b"\r\n")
    assert refused.startswith(b"CLIENT_ERROR bad_request queue one already has an open message")
    assert await length(dispatcher, "one") == {**EMPTY, "ready": 1, "reserved": 1}
    assert await call(exchange, s, b"get one/close one/open\r\n", b"END\r\n") == (
        b"VALUE one/open 0 6\r\nsecond\r\nEND\r\n"
    )


@pytest_twisted.ensureDeferred
async def test_close_open_acks_and_opens_the_next(mc, dispatcher):
    """get q/close/open acks the open message and opens the next in one request."""
    c = mc.client()
    for value in (b"1", b"2"):
        await call(c.set, "chain", value)
    assert await call(c.get, "chain/t=500/open") == b"1"
    assert await call(c.get, "chain/close/open") == b"2"
    assert await length(dispatcher, "chain") == {**EMPTY, "reserved": 1}
    assert await call(c.get, "chain/close/open") is None
    assert await length(dispatcher, "chain") == EMPTY


@pytest_twisted.ensureDeferred
async def test_abort_gives_the_open_message_back_at_once(mc, dispatcher):
    """get q/abort puts the open message back, so any client gets it next."""
    c, other = await opened(mc, "retry", b"again")
    assert await call(c.get, "retry/abort") is None
    assert await call(other.get, "retry") == b"again"


@pytest_twisted.ensureDeferred
async def test_peek_does_not_take(mc):
    """get q/peek shows the next message as many times as asked; a plain get then takes it."""
    c = mc.client()
    await call(c.set, "look", b"see")
    assert await call(c.get, "look/peek") == b"see"
    assert await call(c.get, "look/peek") == b"see"
    assert await call(c.get, "look") == b"see"
    assert await call(c.get, "look/peek") is None


@pytest_twisted.ensureDeferred
async def test_a_dropped_connection_gives_its_open_message_back_at_once(mc):
    """When a client with an open message disconnects, another client waiting on the queue gets it
    right away, long before the 60 s lease."""
    c, other = await opened(mc, "fragile", b"precious")
    started = time.monotonic()
    waiting = call(other.get, "fragile/t=5000")
    await task.deferLater(reactor(), 0.1, lambda: None)
    await call(c.close)
    assert await waiting == b"precious"
    assert time.monotonic() - started < 2


@pytest_twisted.ensureDeferred
async def test_an_open_message_stays_hidden_past_its_lease_while_the_client_lives(short_lease, dispatcher):
    """With a 0.3 s lease, an open message is touched and stays hidden for a whole second, then closes."""
    c, other = await opened(short_lease, "slow", b"job")
    await task.deferLater(reactor(), 1.0, lambda: None)
    assert await call(other.get, "slow") is None
    assert await call(c.get, "slow/close") is None
    assert await length(dispatcher, "slow") == EMPTY


@pytest_twisted.ensureDeferred
async def test_a_waiting_get_of_a_client_that_left_takes_nothing(mc, dispatcher):
    """A client that leaves during get q/t=... does not take the message that arrives afterwards."""
    s = mc.raw()
    await call(s.sendall, b"get gone/t=5000/open\r\n")
    await task.deferLater(reactor(), 0.1, lambda: None)
    await call(s.close)
    await until(lambda: mc.factory.connections == 0)
    await run(dispatcher, "add", queue="gone", value="kept")
    await task.deferLater(reactor(), 0.1, lambda: None)
    assert (await length(dispatcher, "gone"))["ready"] == 1


# -- admin --------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_purges_the_queue(mc, dispatcher):
    """delete q empties the queue (DELETED), and says NOT_FOUND when there was nothing."""
    c = mc.client()
    await call(c.set, "trash", b"a")
    await call(c.set, "trash", b"b")
    assert await call(c.delete, "trash") is True
    assert await length(dispatcher, "trash") == EMPTY
    assert await call(c.delete, "trash") is False


@pytest_twisted.ensureDeferred
async def test_flush_purges_one_queue_and_flush_all_every_queue(mc, dispatcher):
    """Kestrel's flush q empties one queue; flush_all (as pymemcache sends it) empties them all."""
    c = mc.client()
    for queue in ("f1", "f2", "f3"):
        await call(c.set, queue, b"x")
    assert await call(c.raw_command, "flush f1", b"END\r\n") == b""  # END, stripped
    assert [(await length(dispatcher, q))["ready"] for q in ("f1", "f2", "f3")] == [0, 1, 1]
    assert await call(c.flush_all) is True
    assert [(await length(dispatcher, q))["ready"] for q in ("f1", "f2", "f3")] == [0, 0, 0]


@pytest_twisted.ensureDeferred
async def test_stats_and_version(mc):
    """stats reports memcached's counters and Kestrel-style queue_<name>_items; version names RestMQ."""
    c = mc.client()
    for value in (b"a", b"b", b"c"):
        await call(c.set, "counted", value)
    await call(c.get, "counted/open")
    await call(c.get, "nothing")
    stats = await call(c.stats)
    assert stats[b"queue_counted_items"] == 2
    assert stats[b"queue_counted_open_transactions"] == 1
    assert stats[b"queue_counted_total_items"] == 3
    assert stats[b"curr_connections"] == 1
    assert (stats[b"cmd_set"], stats[b"get_hits"], stats[b"get_misses"]) == (3, 1, 1)
    assert stats[b"version"].startswith(b"restmq-")
    assert (await call(c.version)).startswith(b"restmq-")


# -- bad input ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bad_input_gets_clear_errors_queues_nothing_and_the_connection_survives(mc, dispatcher):
    """Over-long keys, bad byte counts, short chunks, oversized and non-UTF-8 values and unknown
    commands each get memcached's error line, nothing is queued, and the connection keeps working."""
    s = mc.raw()
    cases = [
        (b"set " + b"k" * 300 + b" 0 0 5\r\nhello\r\n", b"CLIENT_ERROR key is longer than 250 bytes\r\n"),
        (b"get " + b"k" * 300 + b"\r\n", b"CLIENT_ERROR key is longer than 250 bytes\r\n"),
        (b"set bad 0 0 abc\r\nset bad 0 0 1\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (b"set bad 0 0 -1\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (b"set bad 0 0 3\r\nhello\r\n", b"CLIENT_ERROR bad data chunk\r\n"),
        (b"set bad 0 0 2000\r\n" + b"x" * 2000 + b"\r\n", b"SERVER_ERROR object too large for cache\r\n"),
        (b"set bad 0 0 2\r\n\xff\xfe\r\n", b"CLIENT_ERROR value is not UTF-8 text\r\n"),
        (b"set bad/open 0 0 1\r\nx\r\n", b"CLIENT_ERROR set takes a bare queue name, without options (bad/open)\r\n"),
        (b"set b{d} 0 0 1\r\nx\r\n", b"CLIENT_ERROR invalid queue name"),
        (b"get bad/frob\r\n", b"CLIENT_ERROR unknown option 'frob'"),
        (b"get bad/t=soon\r\n", b"CLIENT_ERROR bad timeout 't=soon'"),
        (b"get bad/peek/open\r\n", b"CLIENT_ERROR peek cannot be combined with open or close\r\n"),
        (b"append bad 0 0 1\r\nx\r\n", b"CLIENT_ERROR append is not supported"),
        (b"incr bad 1\r\n", b"ERROR\r\n"),
        (b"frobnicate\r\n", b"ERROR\r\n"),
        (b"\r\n", b"ERROR\r\n"),
    ]
    for request, expected in cases:
        answer = await call(exchange, s, request, b"\r\n")
        assert answer.startswith(expected), (request[:40], answer)
    assert await call(exchange, s, b"get bad\r\n", b"END\r\n") == b"END\r\n"
    assert (await run(dispatcher, "list"))["count"] == 0


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_are_answered_in_request_order(mc):
    """Many requests in one write get their answers in order, a slow waiting get holding back later ones."""
    s = mc.raw()
    request = (
        b"set p 0 0 1\r\na\r\nset p 0 0 1 noreply\r\nb\r\nget w/t=300\r\nget p\r\nversion\r\n"
        b"frob\r\nget p p\r\ndelete p\r\nquit\r\n"
    )
    answer = await call(exchange, s, request, b"NOT_FOUND\r\n")
    assert answer == (
        b"STORED\r\nEND\r\nVALUE p 0 1\r\na\r\nEND\r\nVERSION restmq-"
        + answer.split(b"VERSION restmq-")[1].split(b"\r\n")[0]
        + b"\r\nERROR\r\nVALUE p 0 1\r\nb\r\nEND\r\nNOT_FOUND\r\n"
    )
    assert await call(s.recv, 10) == b""  # quit closed the connection


@pytest_twisted.ensureDeferred
async def test_with_an_auth_file_every_command_is_refused(engine):
    """On a server with tokens, the memcached port (which cannot authenticate) refuses every command."""

    def authorize(principal: Any, right: str, queue: str | None) -> None:
        if principal is None:
            raise Unauthorized("this server needs a token")

    server = Memcache(Dispatcher(engine, authorize=authorize))
    try:
        c = server.client()
        with pytest.raises(MemcacheClientError, match="unauthorized"):
            await call(c.set, "secret", b"x")
        with pytest.raises(MemcacheClientError, match="unauthorized"):
            await call(c.get, "secret")
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_unknown_commands_raise_in_pymemcache(mc):
    """A command the front end does not know answers ERROR, which pymemcache reports as unknown."""
    c = mc.client()
    with pytest.raises(MemcacheUnknownCommandError):
        await call(c.incr, "n", 1)
    assert await call(c.set, "after", b"ok") is True


# -- add: only when not already queued ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_add_stores_only_values_not_already_queued(mc, dispatcher):
    """add answers STORED for a new value and NOT_STORED (adding nothing) for one already queued."""
    c = mc.client()
    assert await call(c.add, "uniq", b"same") is True
    assert await call(c.add, "uniq", b"same") is False
    assert await call(c.add, "uniq", b"other") is True
    assert (await length(dispatcher, "uniq"))["ready"] == 2


@pytest_twisted.ensureDeferred
async def test_reading_pauses_while_requests_pile_up_behind_a_waiting_get(dispatcher):
    """A client that floods requests behind a slow get is paused, then resumed and answered in full."""
    from twisted.internet.testing import StringTransport

    proto = MemcacheFactory(dispatcher, max_value=1024).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b"get slow/t=300\r\n")
    flood = b"version\r\n" * 10_000
    proto.dataReceived(flood)
    assert transport.producerState == "paused"
    await until(lambda: transport.value().count(b"VERSION") == 10_000)
    assert transport.producerState == "producing"
    assert transport.value().startswith(b"END\r\nVERSION restmq-")


def test_restmq_serve_speaks_memcached(tmp_path, redis):
    """`restmq serve --memcache` listens, and a value set with pymemcache is taken over HTTP."""
    import json

    from .test_process import Server, http, serve_argv

    argv = serve_argv(tmp_path / "data", "--redis", redis.url, "--memcache", "tcp:0:interface=127.0.0.1")
    server = Server(argv, cwd=tmp_path)
    try:
        server.wait_for("engine ready")
        host, port = server.addresses["memcache"].rsplit(":", 1)
        c = Client((host, int(port)), default_noreply=False, connect_timeout=5, timeout=10)
        assert c.set("e2e", "from memcache") is True
        status, body = http("GET", server.url("/q/e2e"))
        assert status == 200 and json.loads(body)["value"] == "from memcache"
        c.close()
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)
