"""The Redis-protocol front end with real Redis clients: redis-py, redis-cli and raw sockets, over a
RespFactory listening on a free port on the test dispatcher."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
import treq
from twisted.internet import reactor, task, threads
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from restmq.auth import Tokens
from restmq.dispatch import Dispatcher
from restmq.frontends.resp import SPECS, RespFactory
from restmq.wire import resp as wire

from .conftest import run

MAX_BULK = 4096


@dataclass
class Listening:
    port: int
    factory: RespFactory

    def client(self, **options: Any) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10, **options)


@pytest_twisted.async_yield_fixture
async def resp(dispatcher):
    """A RespFactory on the test dispatcher, listening on a free loopback port."""
    factory = RespFactory(dispatcher, max_bulk=MAX_BULK)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield Listening(port.getHost().port, factory)
    await port.stopListening()


def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking client off the reactor thread."""
    return threads.deferToThread(fn, *args, **kwargs)


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await sleep(0.01)


def multibulk(*args: bytes | str) -> bytes:
    raw = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(raw) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in raw)


def exchange(port: int, data: bytes, *, half_close: bool = True) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it; ``half_close``
    closes our side first (the server answers everything, then closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def replies(data: bytes) -> list[Any]:
    """Decode RESP2 replies (errors as ``("error", text)``); every byte must be used."""
    out, pos = [], 0

    def one() -> Any:
        nonlocal pos
        end = data.index(b"\r\n", pos)
        kind, head, pos = data[pos : pos + 1], data[pos + 1 : end], end + 2
        if kind == b"+":
            return head.decode()
        if kind == b"-":
            return ("error", head.decode())
        if kind == b":":
            return int(head)
        if kind == b"$":
            if int(head) < 0:
                return None
            value, pos = data[pos : pos + int(head)], pos + int(head) + 2
            return value
        assert kind == b"*", data[pos - 20 :]
        return None if int(head) < 0 else [one() for _ in range(int(head))]

    while pos < len(data):
        out.append(one())
    return out


async def ready(dispatcher: Dispatcher, queue: str) -> int:
    return (await run(dispatcher, "len", queue=queue))["ready"]


async def values(dispatcher: Dispatcher, queue: str) -> list[Any]:
    """What the queue holds, taken in order."""
    return [m["value"] for m in await run(dispatcher, "take", queue=queue, count=1000)]


# -- redis-py -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_redis_py_pushes_and_pops_in_fifo_order(resp, dispatcher):
    """redis-py's list commands work unchanged; whichever end a client pops, the oldest comes first."""
    await run(dispatcher, "add", queue="jobs", value={"from": "http"})

    def talk(client: redis.Redis) -> list[Any]:
        return [
            client.rpush("jobs", "a", "b"),
            client.lpush("jobs", "héllo"),
            client.llen("jobs"),
            client.rpop("jobs"),
            client.lpop("jobs"),
            client.rpop("jobs", 5),
            client.lpop("jobs"),
            client.lpop("jobs", 3),
        ]

    assert await in_thread(talk, resp.client()) == [
        3, 4, 4, b'{"from":"http"}', b"a", [b"b", "héllo".encode()], None, None,
    ]
    await run(dispatcher, "add", queue="jobs", value="over resp2")
    got = await in_thread(lambda: resp.client(protocol=2).rpop("jobs"))
    assert got == b"over resp2"


@pytest_twisted.ensureDeferred
async def test_redis_py_pipeline_is_answered_in_request_order(resp, dispatcher):
    """A 1500-command pipeline (more than the connection lets wait) gets every answer, in order."""

    def pipeline(client: redis.Redis) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for i in range(1500):
            pipe.rpush("p", str(i))
        pipe.llen("p")
        pipe.lpop("p", 1000)
        pipe.ping()
        return pipe.execute()

    got = await in_thread(pipeline, resp.client())
    assert got[:1500] == list(range(1, 1501))
    assert got[1500] == 1500
    assert got[1501] == [str(i).encode() for i in range(1000)]
    assert got[1502] is True
    assert await ready(dispatcher, "p") == 500


@pytest_twisted.ensureDeferred
async def test_a_transaction_fails_whole_and_queues_nothing(resp, dispatcher):
    """MULTI is refused: redis-py's transactional pipeline raises and none of its commands ran."""

    def transaction(client: redis.Redis) -> tuple[str, list[Any]]:
        pipe = client.pipeline()
        pipe.rpush("t", "x")
        pipe.llen("t")
        try:
            pipe.execute()
        except redis.ResponseError as e:
            return str(e), [client.llen("t"), client.ping()]
        return "", []

    error, after = await in_thread(transaction, resp.client())
    assert "MULTI is not supported" in error
    assert after == [0, True]
    assert await ready(dispatcher, "t") == 0


@pytest_twisted.ensureDeferred
async def test_blpop_is_woken_by_an_http_add(resp, dispatcher, site_url):
    """A client blocked in BLPOP gets a message added over HTTP at once, not at its timeout."""
    client = resp.client()
    popped = in_thread(client.blpop, ["jobs"], 20)
    await sleep(0.3)
    start = time.monotonic()
    answer = await treq.post(site_url + "/q/jobs", data={"value": "wake up"}, persistent=False)
    assert answer.code == 200
    assert await popped == (b"jobs", b"wake up")
    assert time.monotonic() - start < 2


@pytest_twisted.ensureDeferred
async def test_brpop_serves_the_first_queue_with_a_message_and_times_out(resp, dispatcher):
    """BRPOP on several queues takes from the first listed that has one; a later add to any of them
    wakes it; with nothing it answers nil after its timeout."""
    await run(dispatcher, "add_many", queue="b", messages=["b1"])
    await run(dispatcher, "add_many", queue="c", messages=["c1"])
    client = resp.client()
    assert await in_thread(client.brpop, ["a", "b", "c"], 1) == (b"b", b"b1")
    popped = in_thread(client.brpop, ["a", "b"], 20)
    await sleep(0.3)
    await run(dispatcher, "add", queue="b", value="late")
    assert await popped == (b"b", b"late")
    start = time.monotonic()
    assert await in_thread(client.brpop, ["a", "b"], 0.3) is None
    assert 0.25 < time.monotonic() - start < 3
    assert await values(dispatcher, "c") == ["c1"]


@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_a_blocking_pop_takes_nothing(resp, dispatcher):
    """BLPOP q 0 then a disconnect: the wait is cancelled, so a later message stays queued."""
    sock = socket.create_connection(("127.0.0.1", resp.port), timeout=5)
    sock.sendall(multibulk("BLPOP", "gone", "0"))
    await until(lambda: any(c.session.blocking for c in resp.factory.clients.values()))
    sock.close()
    await until(lambda: not resp.factory.clients)
    await run(dispatcher, "add", queue="gone", value="kept")
    await sleep(0.2)
    assert await values(dispatcher, "gone") == ["kept"]


@pytest_twisted.ensureDeferred
async def test_set_commands_keep_each_value_once(resp, dispatcher):
    """SADD adds only values not already queued; SISMEMBER, SCARD, SREM and SPOP see the same set."""

    def talk(client: redis.Redis) -> list[Any]:
        return [
            client.sadd("tags", "a", "b", "a"),
            client.sadd("tags", "a", "c"),
            client.scard("tags"),
            client.sismember("tags", "a"),
            client.sismember("tags", "zz"),
            client.srem("tags", "a", "zz"),
            client.sismember("tags", "a"),
            client.spop("tags"),
            client.spop("tags", 5),
            client.spop("tags"),
            client.spop("tags", 2),
            client.sadd("tags", "a"),
        ]

    assert await in_thread(talk, resp.client()) == [2, 1, 3, True, False, 1, False, b"b", [b"c"], None, [], 1]


@pytest_twisted.ensureDeferred
async def test_del_purges_and_counts_queues_that_had_messages(resp, dispatcher):
    """DEL empties each queue named and answers how many had something."""
    await run(dispatcher, "add_many", queue="d1", messages=["x", "y"])
    await run(dispatcher, "add", queue="d2", value="z")
    assert await in_thread(resp.client().delete, "d1", "d2", "d3") == 2
    assert [await ready(dispatcher, q) for q in ("d1", "d2")] == [0, 0]


@pytest_twisted.ensureDeferred
async def test_connection_commands_answer_what_clients_ask(resp, dispatcher):
    """INFO, CLIENT, HELLO, SELECT and COMMAND answer what redis-py expects; other databases and
    protocol versions are refused clearly."""
    await run(dispatcher, "add_many", queue="jobs:eu", messages=["a", "b"])

    def talk() -> dict[str, Any]:
        client = resp.client(client_name="worker-1")
        out = {
            "info": client.info(),
            "queues": client.info("queues"),
            "name": client.client_getname(),
            "id": client.client_id(),
            "me": client.client_info(),
            "echo": client.echo("hi"),
            "count": client.command_count(),
            "commands": client.command(),
            "select0": client.execute_command("SELECT", 0),
        }
        for name, call in [
            ("hello4", lambda: client.execute_command("HELLO", 4)),
            ("select1", lambda: client.execute_command("SELECT", 1)),
        ]:
            with pytest.raises(redis.ResponseError) as info:
                call()
            out[name] = str(info.value)
        return out

    got = await in_thread(talk)
    assert got["info"]["redis_version"] == "7.0.0" and "restmq_version" in got["info"]
    assert got["info"]["connected_clients"] == 1
    assert got["queues"]["queue0"]["name"] == "jobs:eu" and got["queues"]["queue0"]["ready"] == 2
    assert got["queues"]["queue0"]["added_total"] == 2
    assert got["name"] == "worker-1" and got["me"]["name"] == "worker-1" and got["me"]["id"] == got["id"]
    assert got["me"]["lib-name"] == "redis-py" and got["me"]["resp"] == "3"
    assert got["echo"] == b"hi" and got["count"] == len(SPECS) and got["select0"] is True
    assert got["commands"]["lpush"]["arity"] == -3 and "blocking" in got["commands"]["blpop"]["flags"]
    assert got["hello4"].startswith("NOPROTO") and "out of range" in got["select1"]


# -- redis-cli ----------------------------------------------------------------------------------


def redis_cli(port: int, *args: str, stdin: str | None = None) -> str:
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not on PATH")
    done = subprocess.run(
        [cli, "-p", str(port), *args], input=stdin, capture_output=True, text=True, timeout=20
    )
    return done.stdout + done.stderr


@pytest_twisted.ensureDeferred
async def test_redis_cli_works_unchanged(resp, dispatcher):
    """redis-cli pushes, pops, counts and reports errors as with a Redis server."""
    assert (await in_thread(redis_cli, resp.port, "rpush", "cli", "one", "two words")).strip() == "2"
    assert (await in_thread(redis_cli, resp.port, "llen", "cli")).strip() == "2"
    piped = await in_thread(redis_cli, resp.port, stdin="LPOP cli\nRPOP cli\nRPOP cli\nPING\n")
    assert piped.splitlines() == ["one", "two words", "", "PONG"]
    wrong = await in_thread(redis_cli, resp.port, "lpush", "bad name!", "x")
    assert wrong.startswith("ERR bad_queue_name ")
    unknown = await in_thread(redis_cli, resp.port, "hset", "h", "f", "v")
    assert unknown.startswith("ERR unknown command 'hset'")
    assert await values(dispatcher, "cli") == []


# -- bad input ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bad_requests_get_errors_and_the_connection_stays(resp, dispatcher):
    """Unknown commands, wrong arity, bad names, binary values and bad numbers each get an error;
    nothing is queued and the PING after them is still answered."""
    data = (
        multibulk("FROBNICATE", "x")
        + multibulk("LPUSH")
        + multibulk("LPUSH", "bad name", "v")
        + multibulk(b"RPUSH", b"q", b"ok", b"\xff\xfe")
        + multibulk("LPOP", "q", "-1")
        + multibulk("BLPOP", "q", "soon")
        + multibulk("PING", "a", "b")
        + b"\x00\x01\xff junk\r\n"
        + b"PING\r\n"
    )
    got = replies(await in_thread(exchange, resp.port, data))
    assert [r[1].split(" ")[:2] if isinstance(r, tuple) else r for r in got] == [
        ["ERR", "unknown"],
        ["ERR", "wrong"],
        ["ERR", "bad_queue_name"],
        ["ERR", "bad_request"],
        ["ERR", "bad_request"],
        ["ERR", "bad_request"],
        ["ERR", "wrong"],
        ["ERR", "unknown"],
        "PONG",
    ]
    assert "UTF-8" in got[3][1] and "timeout" in got[5][1]
    assert (await run(dispatcher, "list"))["count"] == 0


@pytest.mark.parametrize(
    ("junk", "why"),
    [
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*2\r\n$-3\r\n", "invalid bulk length -3"),
        (b"*3\r\n$5\r\nRPUSH\r\n$1\r\nq\r\n$999999999\r\n", "invalid bulk length 999999999"),
        (b"*\xff\xfe\r\n", "invalid multibulk length"),
        (b"*2\r\n$4\r\nECHO\r\n$2\r\nabcd\r\n", "expected CRLF"),
        (b"x" * (wire.MAX_INLINE + 1), "too big inline request"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_malformed_resp_is_a_protocol_error_and_closes(resp, dispatcher, junk, why):
    """Broken framing is answered -ERR Protocol error after the earlier answers, then the server
    closes (as Redis does); nothing after the junk is run."""
    data = multibulk("RPUSH", "q", "before") + junk + multibulk("RPUSH", "q", "after")
    got = replies(await in_thread(exchange, resp.port, data, half_close=False))
    assert got[0] == 1
    assert got[1][1].startswith("ERR Protocol error: ") and why in got[1][1]
    assert len(got) == 2
    assert await values(dispatcher, "q") == ["before"]


@pytest_twisted.ensureDeferred
async def test_quit_answers_then_closes_and_ignores_what_follows(resp, dispatcher):
    """QUIT is answered +OK after earlier answers; commands sent after it are not run."""
    data = b"RPUSH q a\r\nQUIT\r\nRPUSH q b\r\n"
    assert replies(await in_thread(exchange, resp.port, data, half_close=False)) == [1, "OK"]
    assert await values(dispatcher, "q") == ["a"]


@pytest_twisted.ensureDeferred
async def test_reading_pauses_while_many_answers_are_pending(resp, dispatcher):
    """More pipelined requests than may wait pause reading; every one is answered once it resumes."""
    proto = resp.factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(multibulk("LLEN", "q") * 1200)
    assert transport.producerState == "paused" and proto.parser.pending > 0
    await until(lambda: transport.value().count(b"\r\n") == 1200)
    assert transport.value() == b":0\r\n" * 1200 and transport.producerState == "producing"
    proto.connectionLost(Failure(ConnectionDone()))


# -- auth ---------------------------------------------------------------------------------------

TOKENS = """
admin-t    admin         *
worker-t   read,write    jobs jobs.*
reader-t   read          jobs
"""


@pytest_twisted.async_yield_fixture
async def secured(engine, tmp_path):
    """A RESP listener over a dispatcher that checks tokens."""
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    dispatcher = Dispatcher(engine, authorize=Tokens(str(path)).authorize)
    port = reactor.listenTCP(0, RespFactory(dispatcher), interface="127.0.0.1")
    yield port.getHost().port
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_auth_takes_a_token_as_the_password(secured, dispatcher):
    """Without a token commands are NOAUTH, a bad one WRONGPASS, another's queue NOPERM; a token as
    password (alone or after a user name, RESP2 or RESP3) works."""

    def connect(**options: Any) -> redis.Redis:
        # redis-py retries authentication errors with back-off by default: fail at once here.
        return redis.Redis(port=secured, retry=Retry(NoBackoff(), 0), **options)

    def talk() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, client, call in [
            ("none", connect(), lambda c: c.rpush("jobs", "x")),
            ("wrong", connect(password="nope"), lambda c: c.ping()),
            ("wrong2", connect(password="nope", protocol=2), lambda c: c.ping()),
            ("other", connect(password="worker-t"), lambda c: c.rpush("other", "x")),
            ("purge", connect(password="worker-t"), lambda c: c.delete("jobs")),
        ]:
            try:
                call(client)
            except redis.RedisError as e:
                out[name] = (type(e).__name__, str(e))
        worker = redis.Redis(port=secured, password="worker-t")
        out["ok"] = [worker.rpush("jobs", "a"), worker.rpush("jobs.mail", "b")]
        legacy = redis.Redis(port=secured, username="anyone", password="worker-t", protocol=2)
        out["legacy"] = legacy.lpop("jobs")
        return out

    got = await in_thread(talk)
    assert got["none"][0] == "AuthenticationError" and "send AUTH TOKEN" in got["none"][1]
    assert got["wrong"][0] == got["wrong2"][0] == "AuthenticationError"
    assert got["other"][0] == got["purge"][0] == "NoPermissionError"
    assert got["other"][1].startswith("forbidden")
    assert got["ok"] == [1, 1] and got["legacy"] == b"a"
    assert (await run(dispatcher, "list"))["queues"].keys() == {"jobs.mail", "jobs"}
    assert await values(dispatcher, "other") == []


@pytest_twisted.ensureDeferred
async def test_pipelined_auth_applies_only_to_the_commands_after_it(secured, dispatcher):
    """RESP, one write: each command runs under the token of the last AUTH (or HELLO AUTH) before it, never one sent after it."""
    pipeline = b"".join(multibulk(*c) for c in [
        ("LLEN", "jobs"), ("AUTH", "reader-t"), ("RPUSH", "jobs", "x"), ("LLEN", "jobs"),
        ("AUTH", "worker-t"), ("RPUSH", "jobs", "y"), ("DEL", "jobs"), ("AUTH", "nobody"),
        ("RPUSH", "jobs", "z"), ("HELLO", "2", "AUTH", "default", "admin-t"), ("DEL", "jobs"),
    ])
    got = replies(await in_thread(exchange, secured, pipeline))
    assert got[0][0] == "error" and got[0][1].startswith("NOAUTH unauthorized")
    assert got[1] == "OK" and got[2][1].startswith("NOPERM forbidden this token may not write")
    assert got[3] == 0 and got[4] == "OK" and got[5] == 1
    assert got[6][1].startswith("NOPERM forbidden this token may not admin")
    assert got[7][1].startswith("WRONGPASS") and got[8] == 2
    assert got[9][:2] == [b"server", b"restmq"] and got[10] == 1 and len(got) == 11
    assert await values(dispatcher, "jobs") == []


# -- the real server ----------------------------------------------------------------------------


def test_restmq_serve_resp_serves_redis_cli_and_refuses_over_the_limit(redis, tmp_path):
    """`restmq serve --resp` answers redis-cli on the queues HTTP sees; a connection over the
    per-address limit is told -ERR limit_exceeded and closed."""
    from .test_process import Server, http, serve_argv

    argv = serve_argv(tmp_path / "data", "--redis", redis.url, "--resp", "tcp:0:interface=127.0.0.1",
                      "--max-connections-per-address", "2")
    server = Server(argv, cwd=tmp_path)
    try:
        server.wait_for("engine ready")
        port = int(server.addresses["resp"].rsplit(":", 1)[1])
        assert redis_cli(port, "rpush", "shared", "from redis-cli").strip() == "1"
        status, body = http("GET", server.url("/q/shared"))
        assert status == 200 and b'"from redis-cli"' in body
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        try:
            refused = exchange(port, b"", half_close=False)  # sending nothing: no reset on close
        finally:
            for s in held:
                s.close()
        assert refused.startswith(b"-ERR limit_exceeded ")
    finally:
        assert server.stop() == 0
