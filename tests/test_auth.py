"""Tokens with rights (docs/security.md): the file format, and the same answers through every front end."""

from __future__ import annotations

import base64
import json
import socket
import xmlrpc.client
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, threads
from twisted.internet.protocol import Protocol
from twisted.python import usage

from restmq.auth import Tokens, parse_tokens, token_from_authorization
from restmq.dispatch import Dispatcher
from restmq.errors import BadRequest, Forbidden, Unauthorized
from restmq.frontends.http.routes import build_site
from restmq.frontends.line import LineFactory
from restmq.tap import parse
from tests.test_limits import lines_from

TOKENS = """
# token        rights            queues
admin-t        admin             *
worker-t       read,write        jobs jobs.*   # producers and consumers of jobs
reader-t       read              reports.?
writer-t       write             jobs          # may add, may not consume
"""


@pytest.fixture
def tokens(tmp_path) -> Tokens:
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    return Tokens(str(path))


def test_tokens_file_grants_rights_on_queue_globs(tokens):
    """Rights apply to the token's queue globs; admin includes read and write."""
    tokens.authorize("worker-t", "write", "jobs.mail")
    tokens.authorize("worker-t", "read", "jobs")
    tokens.authorize("admin-t", "write", "anything")
    tokens.authorize("reader-t", "read", None)
    for principal, right, queue, error in [
        (None, "read", "jobs", Unauthorized),
        ("nobody", "read", "jobs", Unauthorized),
        ("worker-t", "admin", "jobs", Forbidden),
        ("worker-t", "write", "other", Forbidden),
        ("reader-t", "write", "reports.1", Forbidden),
        ("reader-t", "read", "reports.10", Forbidden),
    ]:
        with pytest.raises(error):
            tokens.authorize(principal, right, queue)


@pytest.mark.parametrize("text", ["tok read", "tok fly *", "tok , *", "a read *\na write *"])
def test_bad_tokens_files_name_the_line(text):
    """A malformed line is refused with its line number."""
    with pytest.raises(BadRequest, match="line"):
        parse_tokens(text)


def test_tokens_reload_keeps_the_old_ones_on_a_broken_file(tokens, tmp_path):
    """reload() picks up changes; a broken file raises and leaves the loaded tokens in place."""
    (tmp_path / "tokens").write_text("new-t read *\n")
    assert tokens.reload() == 1 and "new-t" in tokens.grants
    (tmp_path / "tokens").write_text("broken\n")
    with pytest.raises(BadRequest):
        tokens.reload()
    assert "new-t" in tokens.grants


@pytest.mark.parametrize("header,token", [
    ("Bearer abc", "abc"),
    (b"bearer  xyz ", "xyz"),
    ("Basic " + base64.b64encode(b"user:tok").decode(), "tok"),
    ("Basic " + base64.b64encode(b":tok").decode(), "tok"),
    ("Basic !!!", None),
    ("Basic \u00e9t\u00e9", None),  # not ASCII: found by the fuzzer (it was a 500)
    (b"Basic \xff\xfe", None),
    ("Digest x", None),
    (None, None),
])
def test_token_from_authorization_header(header, token):
    """Bearer and Basic (the token as password) headers give the token; anything else none."""
    assert token_from_authorization(header) == token


def test_auth_file_allows_public_http_but_not_public_syslog(tmp_path):
    """With an auth file a public HTTP listener is allowed; the syslog receiver still needs --insecure."""
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    assert parse(["--http", "tcp:0", "--auth-file", str(path)]).auth_file == str(path)
    with pytest.raises(usage.UsageError, match="--insecure"):
        parse(["--syslog", "tcp:0", "--auth-file", str(path)])
    with pytest.raises(usage.UsageError, match="cannot read"):
        parse(["--auth-file", str(tmp_path / "missing")])


@pytest_twisted.async_yield_fixture
async def secured(engine, tokens):
    """An HTTP Site and a line listener over a dispatcher that checks tokens."""
    dispatcher = Dispatcher(engine, authorize=tokens.authorize)
    site = reactor.listenTCP(0, build_site(dispatcher, reactor=reactor), interface="127.0.0.1")
    line = reactor.listenTCP(0, LineFactory(dispatcher), interface="127.0.0.1")
    yield f"http://127.0.0.1:{site.getHost().port}", line.getHost().port
    await site.stopListening()
    await line.stopListening()


async def post(url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None):
    response = await treq.post(url + path, json.dumps(body).encode(), persistent=False,
                               headers={"content-type": "application/json", **(headers or {})})
    return response.code, response.headers, json.loads(await response.content())


@pytest_twisted.ensureDeferred
async def test_http_answers_401_403_and_accepts_bearer_basic_and_access_token(secured):
    """HTTP: 401 without a token, 403 outside its rights, success with Bearer, Basic or ?access_token."""
    url, _ = secured
    code, headers, body = await post(url, "/q/jobs", {"value": "x"})
    assert (code, body["code"]) == (401, "unauthorized")
    assert headers.getRawHeaders("www-authenticate") == ['Bearer realm="restmq", Basic realm="restmq"']
    code, _, body = await post(url, "/q/other", {"value": "x"}, {"authorization": "Bearer worker-t"})
    assert (code, body["code"]) == (403, "forbidden")
    code, _, body = await post(url, "/q/jobs", {"value": "x"}, {"authorization": "Bearer worker-t"})
    assert code == 201 and body["key"] == "jobs:1"
    basic = "Basic " + base64.b64encode(b"anyone:worker-t").decode()
    code, _, _ = await post(url, "/q/jobs", {"value": "y"}, {"authorization": basic})
    assert code == 201
    code, _, body = await post(url, "/queue", {"cmd": "purge", "queue": "jobs"}, {"authorization": "Bearer worker-t"})
    assert body["code"] == "forbidden"  # purge needs admin; /queue answers RPC style
    taken = await treq.get(url + "/q/jobs?access_token=worker-t", persistent=False)
    assert taken.code == 200 and json.loads(await taken.content())["value"] == "x"
    stream = await treq.get(url + "/sse/jobs", persistent=False)
    assert stream.code == 401


async def xmlrpc_add_with_and_without(url: str, userinfo: str) -> tuple[str, str]:
    """Add over XML-RPC with ``user:password@`` in the URL, then without: (key, fault string)."""
    host = url.removeprefix("http://")

    def calls() -> tuple[str, str]:
        key = xmlrpc.client.ServerProxy(f"http://{userinfo}@{host}/RPC2").restmq.add("jobs", "x")["key"]
        try:
            xmlrpc.client.ServerProxy(f"{url}/RPC2").restmq.add("jobs", "y")
        except xmlrpc.client.Fault as fault:
            return key, fault.faultString
        return key, ""

    return await threads.deferToThread(calls)


@pytest_twisted.ensureDeferred
async def test_xmlrpc_takes_the_token_as_basic_password(secured):
    """XML-RPC: a user:TOKEN@ URL works; without a token the fault says unauthorized."""
    key, fault = await xmlrpc_add_with_and_without(secured[0], "user:worker-t")
    assert key == "jobs:1" and fault.startswith("unauthorized")


@pytest_twisted.ensureDeferred
async def test_line_protocol_needs_auth_first(secured):
    """Line protocol: commands are unauthorized until `auth TOKEN`; a bad token is refused."""
    _, port = secured

    def talk() -> list[dict[str, Any]]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"add jobs early\nauth wrong\nauth worker-t\nadd jobs hello\nadd other x\n")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return [json.loads(line) for line in data.splitlines()]

    answers = await threads.deferToThread(talk)
    assert [a.get("code") for a in answers] == ["unauthorized", "unauthorized", None, None, "forbidden"]
    assert answers[2] == {"auth": True} and answers[3]["key"] == "jobs:1"


@pytest_twisted.ensureDeferred
async def test_streams_need_a_token_too(secured, engine):
    """COMET and WebSocket streams answer 401 without a token and stream with ?access_token."""
    from types import SimpleNamespace

    from tests.test_ws import connect, until

    url, _ = secured
    assert (await treq.get(url + "/c/jobs", persistent=False)).code == 401
    refused = await treq.get(url + "/ws/jobs", headers={"upgrade": "websocket"}, persistent=False)
    assert refused.code == 401
    ws = await connect(SimpleNamespace(port=int(url.rsplit(":", 1)[1])), "/ws/jobs?access_token=worker-t")
    await until(lambda: engine.hub.subscribers("jobs") == 1)
    ws.transport.loseConnection()


async def open_stream_code(url: str, kind: str, queue: str, token: str | None) -> int:
    """The status a COMET, SSE or WebSocket stream request gets (101 once a WebSocket is open)."""
    from types import SimpleNamespace

    from tests.test_ws import connect

    query = f"?access_token={token}" if token else ""
    if kind == "ws":
        refused = await treq.get(f"{url}/ws/{queue}{query}", headers={"upgrade": "websocket"}, persistent=False)
        if refused.code in (401, 403):
            return int(refused.code)  # judged before the handshake (treq itself cannot upgrade)
        ws = await connect(SimpleNamespace(port=int(url.rsplit(":", 1)[1])), f"/ws/{queue}{query}")
        ws.transport.loseConnection()
        return 101
    path = {"comet": "/c/", "sse": "/sse/"}[kind]
    response = await treq.get(f"{url}{path}{queue}{query}", persistent=False, unbuffered=True)
    code = response.code
    response.original.deliverBody(_Drop())
    return int(code)


class _Drop(Protocol):
    """Reads a streamed body and drops the connection at once."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()


@pytest.mark.parametrize("kind", ["comet", "sse", "ws"])
@pytest.mark.parametrize("token,queue,expected", [
    (None, "jobs", 401),  # no token
    ("nobody", "jobs", 401),  # unknown token
    ("worker-t", "other", 403),  # a queue outside the token's globs
    ("writer-t", "jobs", 403),  # a token without the read right
    ("worker-t", "jobs", 200),  # good
])
@pytest_twisted.ensureDeferred
async def test_stream_auth_matrix(secured, kind, token, queue, expected):
    """COMET, SSE and WebSocket streams answer 401 without a known token, 403 outside its rights or queues, and stream with a good one."""
    url, _ = secured
    code = await open_stream_code(url, kind, queue, token)
    assert code == (101 if kind == "ws" and expected == 200 else expected)


@pytest_twisted.ensureDeferred
async def test_websocket_frames_are_authorized_per_command(secured, engine):
    """On a WebSocket opened with a read-only token, an add frame is forbidden and an ack-shaped read is allowed."""
    from types import SimpleNamespace

    from tests.test_ws import connect, until

    url, _ = secured
    ws = await connect(SimpleNamespace(port=int(url.rsplit(":", 1)[1])), "/ws/reports.1?access_token=reader-t")
    await until(lambda: engine.hub.subscribers("reports.1") == 1)
    ws.command({"cmd": "add", "value": "x"})
    ws.command({"cmd": "len"})
    ws.command({"cmd": "len", "queue": "jobs"})
    await until(lambda: len(ws.frames) == 3)
    replies = [f["reply"] for f in ws.frames if "reply" in f]
    assert [f["code"] for f in ws.frames if "code" in f] == ["forbidden", "forbidden"]
    assert [(r["queue"], r["len"]) for r in replies] == [("reports.1", 0)]
    ws.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_line_pipelined_auth_applies_only_to_the_commands_after_it(secured):
    """Line protocol, one write: each command runs under the token of the last auth before it, never one sent after it."""
    _, port = secured
    pipeline = (b"len jobs\nauth reader-t\nlen jobs\nadd reports.1 x\nlen reports.1\nlen jobs\n"
                b"auth worker-t\nlen jobs\nadd jobs y\npurge jobs\nauth nobody\nadd jobs z\n"
                b"auth admin-t\npurge jobs\n")
    answers = await threads.deferToThread(lines_from, port, pipeline)
    assert [a.get("code") or next(iter(a)) for a in answers] == [
        "unauthorized",  # before any auth
        "auth", "forbidden", "forbidden", "queue", "forbidden",  # reader-t: reports.? only, read only
        "auth", "queue", "queue", "forbidden",  # worker-t: jobs, but purge is admin
        "unauthorized", "queue",  # an unknown token is refused and worker-t stays
        "auth", "queue",  # admin-t
    ]
    assert answers[4]["len"] == 0 and answers[8]["key"] == "jobs:1" and answers[11]["key"] == "jobs:2"
    assert answers[13]["purged"] == 2
