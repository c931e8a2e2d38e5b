"""Listings show only the queues their caller may read, through every front end of a real server.

One service tree (``restmq.service.build``: HTTP with XML-RPC, line, RESP, memcached) runs with an
auth file holding a ``read a*`` token and an admin token, over queues a1, a2, b1 and b2.
"""

from __future__ import annotations

import json
import re
import socket
import xmlrpc.client
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
import redis as redis_py
import treq
from twisted.internet import threads

from restmq.config import Config
from restmq.dispatch import Dispatcher
from restmq.service import RestMQService, build

from .conftest import RedisServer
from .test_line import reactor, until

TOKENS = """
reader-t   read    a*
admin-t    admin   *
writer-t   write   *     # no read right: listings are forbidden
"""
QUEUES = ("a1", "a2", "b1", "b2")
#: What each token's listings show.
SHOWN = {"reader-t": ["a1", "a2"], "admin-t": ["a1", "a2", "b1", "b2"]}
TOKEN = pytest.mark.parametrize("token", list(SHOWN))
HIDDEN = re.compile(r"\bb[12]\b|'b[12]'|_b[12]_|\"b[12]\"")


@dataclass
class Server:
    """The running service and where each front end listens."""

    root: RestMQService
    ports: dict[str, int]

    @property
    def dispatcher(self) -> Dispatcher:
        return self.root.dispatcher

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"


async def start(redis_server: RedisServer, tmp_path: Any, **options: Any) -> Server:
    """Build and start the whole service on port 0 and add one message to each queue as admin."""
    config = Config(
        **{
            name: "tcp:0:interface=127.0.0.1" for name in ("http", "line", "resp", "memcache")
        },
        redis=redis_server.url,
        data=str(tmp_path / "data"),
        **options,
    )
    root = build(config, reactor())
    root.privilegedStartService()
    root.startService()
    names = ("http", "line", "resp", "memcache")
    await until(lambda: root.dispatcher.engine.redis is not None and all(root.listener(n).port for n in names), 10)
    ports = {n: root.listener(n).port.getHost().port for n in names}  # type: ignore[union-attr]
    for queue in QUEUES:
        await root.dispatcher.execute("add", {"queue": queue, "value": "x"}, "admin-t" if options else None)
    return Server(root, ports)


@pytest_twisted.async_yield_fixture
async def server(redis, tmp_path) -> AsyncIterator[Server]:
    """The service with the auth file, stopped after the test."""
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    running = await start(redis, tmp_path, auth_file=str(path))
    yield running
    await running.root.stopService()


@pytest_twisted.async_yield_fixture
async def open_server(redis, tmp_path) -> AsyncIterator[Server]:
    """The service without an auth file: everyone is trusted."""
    running = await start(redis, tmp_path)
    yield running
    await running.root.stopService()


async def get(server: Server, path: str, token: str | None) -> tuple[int, bytes]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = await treq.get(server.url + path, headers=headers, persistent=False)
    return response.code, await response.content()


async def post_json(server: Server, body: dict[str, Any], token: str) -> Any:
    response = await treq.post(
        server.url + "/queue", json.dumps(body).encode(), persistent=False,
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    return json.loads(await response.content())


@TOKEN
@pytest_twisted.ensureDeferred
async def test_http_get_q_stats_and_control_list_only_readable_queues(server, token):
    """GET /q, /stats and /control list only the token's readable queues, and count only those."""
    for path in ("/q", "/stats", "/control"):
        code, body = await get(server, path, token)
        answer = json.loads(body)
        assert code == 200, (path, answer)
        assert sorted(answer["queues"]) == SHOWN[token], path
        assert answer["count"] == len(SHOWN[token]), path
        if token == "reader-t":
            assert not HIDDEN.search(body.decode()), path


@TOKEN
@pytest_twisted.ensureDeferred
async def test_json_protocol_list_state_and_stats_list_only_readable_queues(server, token):
    """POST /queue {"cmd": "list" | "state" | "stats"} answers only the readable queues."""
    for cmd in ("list", "state", "stats"):
        answer = await post_json(server, {"cmd": cmd}, token)
        assert sorted(answer["queues"]) == SHOWN[token], (cmd, answer)
        if cmd != "state":
            assert answer["count"] == len(SHOWN[token])


@TOKEN
@pytest_twisted.ensureDeferred
async def test_xmlrpc_list_stats_and_state_list_only_readable_queues(server, token):
    """XML-RPC restmq.list, restmq.stats and restmq.state answer only the readable queues."""
    proxy_url = f"http://user:{token}@127.0.0.1:{server.ports['http']}/RPC2"

    def calls() -> list[Any]:
        proxy = xmlrpc.client.ServerProxy(proxy_url)
        return [proxy.restmq.list(), proxy.restmq.stats(), proxy.restmq.state()]

    listed, stats, state = await threads.deferToThread(calls)
    for answer in (listed, stats, state):
        assert sorted(answer["queues"]) == SHOWN[token], answer
    assert listed["count"] == stats["count"] == len(SHOWN[token])


def line_session(port: int, lines: bytes) -> list[Any]:
    """Send lines to the line protocol over TCP and read the JSON answer lines until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(lines)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


@TOKEN
@pytest_twisted.ensureDeferred
async def test_line_protocol_list_stats_and_state_list_only_readable_queues(server, token):
    """The line protocol's list, stats and state answer only the readable queues."""
    lines = f"auth {token}\nlist\nstats\nstate\n".encode()
    answers = await threads.deferToThread(line_session, server.ports["line"], lines)
    assert answers[0] == {"auth": True}
    for answer in answers[1:]:
        assert sorted(answer["queues"]) == SHOWN[token], answer
    assert answers[1]["count"] == answers[2]["count"] == len(SHOWN[token])


@TOKEN
@pytest_twisted.ensureDeferred
async def test_resp_info_lists_only_readable_queues(server, token):
    """RESP INFO (queues, and the default sections) lists only the readable queues, without an error."""

    def talk() -> dict[str, Any]:
        client = redis_py.Redis(port=server.ports["resp"], password=token, socket_timeout=10)
        try:
            return client.info("queues")
        finally:
            client.close()

    def raw_info() -> str:
        """INFO's default sections as the text a raw socket reads (no client parsing)."""
        with socket.create_connection(("127.0.0.1", server.ports["resp"]), timeout=10) as s:
            s.sendall(f"*2\r\n$4\r\nAUTH\r\n${len(token)}\r\n{token}\r\n*1\r\n$4\r\nINFO\r\n".encode())
            data = b""
            while not re.fullmatch(rb"\+OK\r\n\$(\d+)\r\n.*\r\n", data, re.S) or len(data) < 5:
                data += s.recv(65536)
        return data.decode()

    section = await threads.deferToThread(talk)
    everything = await threads.deferToThread(raw_info)
    names = sorted(v["name"] for k, v in section.items() if k.startswith("queue"))
    assert names == SHOWN[token]
    assert sorted(re.findall(r"name=([^,]+),", everything)) == SHOWN[token]
    if token == "reader-t":
        assert not HIDDEN.search(everything)


def memcache_stats(port: int) -> bytes:
    """memcached ``stats`` over a raw socket: the STAT lines up to END, or the one error line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"stats\r\n")
        data = b""
        while not (data.endswith(b"END\r\n") or (data.endswith(b"\r\n") and not data.startswith(b"STAT"))):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


@pytest_twisted.ensureDeferred
async def test_memcached_stats_names_no_queue_with_an_auth_file(server):
    """memcached has no login, so with an auth file its stats is refused and names no queue."""
    answer = await threads.deferToThread(memcache_stats, server.ports["memcache"])
    assert answer.startswith(b"CLIENT_ERROR unauthorized")
    assert not re.search(rb"[ab][12]", answer)


@pytest_twisted.ensureDeferred
async def test_memcached_stats_lists_every_queue_without_an_auth_file(open_server):
    """Without an auth file memcached stats shows all four queues and counts them, as before."""
    answer = (await threads.deferToThread(memcache_stats, open_server.ports["memcache"])).decode()
    assert sorted(re.findall(r"STAT queue_(\S+)_open_transactions 0\r\n", answer)) == list(QUEUES)
    assert "STAT queues 4\r\n" in answer


@TOKEN
@pytest_twisted.ensureDeferred
async def test_metrics_show_only_readable_queues(server, token):
    """GET /metrics has queue series for the readable queues only, and counts no forbidden error."""
    code, body = await get(server, "/metrics", token)
    text = body.decode()
    assert code == 200
    assert sorted(set(re.findall(r'queue="([^"]+)"', text))) == SHOWN[token]
    assert 'restmq_errors_total{code="forbidden"}' not in text


@TOKEN
@pytest_twisted.ensureDeferred
async def test_dashboard_first_rows_show_only_readable_queues(server, token):
    """The dashboard's server-rendered first rows link only the readable queues."""
    code, body = await get(server, "/dashboard", token)
    assert code == 200
    assert sorted(re.findall(r'<a href="/j/([^"]+)">', body.decode())) == SHOWN[token]


@pytest_twisted.ensureDeferred
async def test_per_queue_pages_answer_only_readable_queues(server):
    """/j/<q> shows a readable queue; another is refused naming only the queue asked for."""
    code, body = await get(server, "/j/a1", "reader-t")
    assert code == 200 and "<h1>a1</h1>" in body.decode()
    code, body = await get(server, "/j/b1", "reader-t")
    assert code == 403
    assert re.findall(r"\b[ab][12]\b", body.decode()) == ["b1"]


@TOKEN
@pytest_twisted.ensureDeferred
async def test_websocket_list_frame_lists_only_readable_queues(server, token):
    """A {"cmd": "list"} frame on a WebSocket answers only the readable queues."""
    from tests.test_ws import connect

    ws = await connect(SimpleNamespace(port=server.ports["http"]), f"/ws/a1?access_token={token}")
    try:
        ws.command({"cmd": "list"})
        await until(lambda: any("reply" in f for f in ws.frames))
        reply = next(f["reply"] for f in ws.frames if "reply" in f)
        assert sorted(reply["queues"]) == SHOWN[token] and reply["count"] == len(SHOWN[token])
    finally:
        ws.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_listing_refusals_name_no_queue(server):
    """A token without the read right is refused every listing, and no refusal names a queue."""
    for path in ("/q", "/stats", "/control", "/metrics"):
        code, body = await get(server, path, "writer-t")
        assert code == 403, path
        assert not re.search(rb"[ab][12]", body), (path, body)
    answers = await threads.deferToThread(
        line_session, server.ports["line"], b"auth writer-t\nlist\nstats\nstate\n"
    )
    assert [a.get("code") for a in answers[1:]] == ["forbidden"] * 3
    assert not re.search(r"[ab][12]", json.dumps(answers))


@pytest_twisted.ensureDeferred
async def test_a_filtered_listing_fetches_no_hidden_queue(server):
    """Hidden queues are left out before their stats are read: no script reads them."""
    engine = server.dispatcher.engine
    asked: list[str] = []
    read = engine.queues_stats

    async def recorded(queues):
        asked.extend(queues)
        return await read(queues)

    engine.queues_stats = recorded
    try:
        code, _ = await get(server, "/stats", "reader-t")
    finally:
        del engine.queues_stats
    assert code == 200
    assert sorted(asked) == ["a1", "a2"]


@pytest_twisted.ensureDeferred
async def test_without_an_auth_file_listings_are_unchanged(open_server):
    """With no auth file every caller sees every queue."""
    for path in ("/q", "/stats", "/control"):
        code, body = await get(open_server, path, None)
        assert code == 200 and sorted(json.loads(body)["queues"]) == list(QUEUES)
    answers = await threads.deferToThread(line_session, open_server.ports["line"], b"list\n")
    assert answers[0]["count"] == 4


ACL = """
[rest:consumer]
hosts_allow = 127.0.0.1
hosts_deny = all
"""


@pytest_twisted.ensureDeferred
async def test_acl_alone_lists_every_queue_and_with_tokens_the_tokens_filter(redis, tmp_path):
    """The ACL judges callers, not queues: alone it lists all four; with an auth file the token's queues rule."""
    acl, tokens = tmp_path / "acl", tmp_path / "tokens"
    acl.write_text(ACL)
    tokens.write_text(TOKENS)
    for options, token, expected in [
        ({"acl": str(acl)}, None, list(QUEUES)),
        ({"acl": str(acl), "auth_file": str(tokens)}, "reader-t", SHOWN["reader-t"]),
    ]:
        running = await start(redis, tmp_path, **options)
        try:
            for path in ("/q", "/stats", "/control"):
                code, body = await get(running, path, token)
                assert code == 200 and sorted(json.loads(body)["queues"]) == expected, (options, path)
        finally:
            await running.root.stopService()
        redis.cli("FLUSHALL")


def test_permits_answers_what_authorize_decides(tmp_path):
    """The listing filter's yes/no agrees with authorize for tokens, ACL, both, and any plain callable."""
    from restmq.acl import Acl
    from restmq.auth import Caller, Tokens, combine, permits
    from restmq.errors import Forbidden, RestMQError

    (tmp_path / "tokens").write_text(TOKENS)
    (tmp_path / "acl").write_text(ACL)
    tokens, acl = Tokens(str(tmp_path / "tokens")), Acl(str(tmp_path / "acl"))

    def only_a(principal: Any, right: str, queue: str | None) -> None:
        if queue and not queue.startswith("a"):
            raise Forbidden("no")

    for authorize in (tokens, acl, combine(tokens, acl), tokens.authorize, only_a):
        for token in (None, "nobody", "reader-t", "admin-t", "writer-t"):
            for host in ("127.0.0.1", "10.0.0.1"):
                for queue in (*QUEUES, None):
                    caller = Caller(token, "rest", host)
                    try:
                        authorize(caller, "read", queue)
                        allowed = True
                    except RestMQError:
                        allowed = False
                    assert permits(authorize, caller, "read", queue) is allowed, (authorize, token, host, queue)
