"""The original RestMQ's ACL file (--acl): its format, address lists with CIDR, Basic users, reload."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
from types import SimpleNamespace

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, threads
from twisted.python import usage

from restmq.acl import Acl, Hosts, parse_acl
from restmq.auth import Caller, Tokens, combine
from restmq.dispatch import Dispatcher
from restmq.errors import BadRequest, Forbidden, Unauthorized
from restmq.frontends.http.routes import build_site
from restmq.frontends.line import LineFactory
from restmq.tap import parse
from tests.test_auth import _Drop
from tests.test_process import Server, http as request, serve_argv, servers  # noqa: F401  (fixture)

ACL = """
# producers: only the 10/8 network and this machine, with a password
[rest:producer]
hosts_allow = 10.0.0.0/8, 127.0.0.1
hosts_deny = all
username = prod
password = s3cret

[rest:consumer]
hosts_deny = 192.168.      ; the original's prefix form

[comet:consumer]
hosts_deny = 127.0.0.0/8

[websocket:consumer]
username = ws
password = pw
"""


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def acl_path(tmp_path):
    path = tmp_path / "acl.ini"
    path.write_text(ACL)
    return path


# -- the file -----------------------------------------------------------------------------------


def test_hosts_match_addresses_networks_prefixes_and_all():
    """Entries are full addresses, CIDR networks, the original's prefixes or all; IPv4-mapped IPv6 counts as IPv4."""
    hosts = Hosts.parse("10.0.0.0/8, 192.168. ::1 172.16.0.5", "test")
    assert hosts.match("10.200.3.4") and hosts.match("::ffff:10.1.1.1")
    assert hosts.match("192.168.7.7") and hosts.match("::1") and hosts.match("172.16.0.5")
    assert not hosts.match("172.16.0.50") and not hosts.match("11.0.0.1") and not hosts.match("local")
    assert Hosts.parse("all", "test").match("8.8.8.8")
    assert not Hosts.parse("", "test").match("127.0.0.1")


def test_rules_judge_address_then_basic_credentials(acl_path):
    """An allowed address still needs the section's user and password; a denied one is refused first."""
    acl = Acl(str(acl_path))
    good = ("prod", "s3cret")
    acl.authorize(Caller(None, "rest", "10.1.2.3", good), "write", "q")
    acl.authorize(Caller(None, "rest", "127.0.0.1", good), "admin", None)
    for caller, error in [
        (Caller(None, "rest", "8.8.8.8", good), Forbidden),
        (Caller(None, "rest", "10.1.2.3", None), Unauthorized),
        (Caller(None, "rest", "10.1.2.3", ("prod", "wrong")), Unauthorized),
        (Caller(None, "websocket", "10.1.2.3", ("ws", "pw")), Unauthorized),  # an add frame is a producer
    ]:
        with pytest.raises(error):
            acl.authorize(caller, "write", "q")
    acl.authorize(Caller(None, "rest", "8.8.8.8"), "read", "q")  # consumers: only 192.168. is denied
    with pytest.raises(Forbidden, match="192.168.1.1 may not call as rest:consumer"):
        acl.authorize(Caller(None, "rest", "192.168.1.1"), "read", "q")
    acl.authorize(Caller(None, "sse", "192.168.1.1"), "read", "q")  # no [sse:consumer]: open
    acl.authorize("a-line-protocol-token", "write", "q")  # not HTTP: not the ACL's business


@pytest.mark.parametrize("text,message", [
    ("[rest:everything]\n", "unknown section"),
    ("[rest:producer]\nhost_allow = 1.2.3.4\n", "unknown keys host_allow"),
    ("[rest:producer]\nhosts_allow = 10.0.0.0/33\n", "not a network"),
    ("[rest:producer]\nhosts_deny = somewhere.example\n", "not an address"),
    ("hosts_allow = all\n", "no section headers"),
])
def test_bad_acl_files_are_refused_with_a_reason(text, message):
    """Unknown sections or keys, bad networks and stray lines are refused, saying what is wrong."""
    with pytest.raises(BadRequest, match=message):
        parse_acl(text)


def test_acl_reloads_when_the_file_changes_and_keeps_old_rules_on_a_bad_file(acl_path):
    """refresh() picks up a changed file; a broken one raises once and the old rules stay."""
    acl = Acl(str(acl_path))
    assert acl.refresh() is False
    acl_path.write_text("[comet:consumer]\nhosts_deny = all\n")
    os.utime(acl_path, (1, 1))  # a different mtime even within the same clock tick
    assert acl.refresh() is True and set(acl.rules) == {"comet:consumer"}
    acl_path.write_text("[nonsense\n")
    os.utime(acl_path, (2, 2))
    with pytest.raises(BadRequest):
        acl.refresh()
    assert acl.refresh() is False and set(acl.rules) == {"comet:consumer"}


def test_acl_option_checks_the_file_and_covers_http_only(acl_path, tmp_path):
    """--acl is read at start (a bad file is a usage error); it lets HTTP bind publicly, not the line protocol."""
    bad = tmp_path / "bad.ini"
    bad.write_text("[oops]\n")
    with pytest.raises(usage.UsageError, match="unknown section"):
        parse(["--acl", str(bad)])
    with pytest.raises(usage.UsageError, match="cannot read acl file"):
        parse(["--acl", str(tmp_path / "missing.ini")])
    config = parse(["--acl", str(acl_path), "--http", "tcp:8888", "--line", "none"])
    assert config.acl == str(acl_path)
    with pytest.raises(usage.UsageError, match="--line"):
        parse(["--acl", str(acl_path), "--http", "tcp:8888", "--line", "tcp:8889"])


# -- through the front ends ---------------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def guarded(engine, acl_path):
    """An HTTP Site and a line listener over a dispatcher that checks the ACL file (the tests call from 127.0.0.1)."""
    dispatcher = Dispatcher(engine, authorize=Acl(str(acl_path)).authorize)
    site = reactor.listenTCP(0, build_site(dispatcher, reactor=reactor), interface="127.0.0.1")
    line = reactor.listenTCP(0, LineFactory(dispatcher), interface="127.0.0.1")
    yield f"http://127.0.0.1:{site.getHost().port}", line.getHost().port
    await site.stopListening()
    await line.stopListening()


@pytest_twisted.ensureDeferred
async def test_http_producers_need_the_acl_password_and_consumers_are_open(guarded):
    """POST /q needs [rest:producer]'s Basic user (401 with a Basic challenge, else 201); GET /q is open from here."""
    url, _ = guarded
    refused = await treq.post(url + "/q/jobs", b"value=x", persistent=False,
                              headers={"content-type": "application/x-www-form-urlencoded"})
    assert refused.code == 401
    assert 'Basic realm="restmq"' in refused.headers.getRawHeaders("www-authenticate")[0]
    assert json.loads(await refused.content())["code"] == "unauthorized"
    added = await treq.post(url + "/q/jobs", json.dumps({"value": "x"}).encode(), persistent=False,
                            headers={"content-type": "application/json", "authorization": basic("prod", "s3cret")})
    assert added.code == 201
    taken = await treq.get(url + "/q/jobs", persistent=False)
    assert taken.code == 200 and json.loads(await taken.content())["value"] == "x"


@pytest_twisted.ensureDeferred
async def test_xmlrpc_is_judged_as_rest(guarded):
    """XML-RPC calls are rest:producer / rest:consumer: user:password in the URL passes the producer rule."""
    from tests.test_auth import xmlrpc_add_with_and_without

    key, fault = await xmlrpc_add_with_and_without(guarded[0], "prod:s3cret")
    assert key == "jobs:1" and fault.startswith("unauthorized")


@pytest_twisted.ensureDeferred
async def test_streams_follow_their_own_sections(guarded, engine):
    """COMET from 127.0.0.1 is denied by [comet:consumer], SSE has no section, WebSocket needs Basic or the auth cookie."""
    from tests.test_ws import connect, until

    url, _ = guarded
    comet = await treq.get(url + "/c/jobs", persistent=False)
    assert comet.code == 403 and "comet:consumer" in json.loads(await comet.content())["error"]
    sse = await treq.get(url + "/sse/jobs", persistent=False, unbuffered=True)
    assert sse.code == 200
    sse.deliverBody(_Drop())
    no_password = await treq.get(url + "/ws/jobs", headers={"upgrade": "websocket"}, persistent=False)
    assert no_password.code == 401
    where = SimpleNamespace(port=int(url.rsplit(":", 1)[1]))
    with pytest.raises(ConnectionError):
        await connect(where, "/ws/jobs", {"cookie": "auth=ws:wrong"})
    by_cookie = await connect(where, "/ws/jobs", {"cookie": "auth=ws:pw"})
    by_basic = await connect(where, "/ws/jobs", {"authorization": basic("ws", "pw")})
    await until(lambda: engine.hub.subscribers("jobs") == 2)
    by_cookie.transport.loseConnection()
    by_basic.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_line_protocol_is_not_governed_by_the_acl(guarded):
    """The ACL covers HTTP only: the line protocol adds without any credentials (tokens guard it)."""
    _, port = guarded

    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"add jobs via-line\n")
            s.shutdown(socket.SHUT_WR)
            return s.recv(65536)

    assert json.loads(await threads.deferToThread(talk))["key"] == "jobs:1"


def test_tokens_and_acl_together_must_both_pass(acl_path, tmp_path):
    """With both files, an HTTP call needs a good token and must pass the ACL rule."""
    tokens_path = tmp_path / "tokens"
    tokens_path.write_text("tok read,write *\n")
    authorize = combine(Tokens(str(tokens_path)).authorize, Acl(str(acl_path)).authorize)
    authorize(Caller("tok", "rest", "10.0.0.1", ("prod", "s3cret")), "write", "q")
    with pytest.raises(Unauthorized):
        authorize(Caller(None, "rest", "10.0.0.1", ("prod", "s3cret")), "write", "q")
    with pytest.raises(Forbidden):
        authorize(Caller("tok", "rest", "8.8.8.8", ("prod", "s3cret")), "write", "q")


def test_serve_reloads_the_acl_when_the_file_changes(tmp_path, servers, redis, acl_path):  # noqa: F811
    """restmq serve --acl applies an edited file within about a second, without a signal, and on SIGHUP; the line protocol's auth says tokens are off."""
    server = Server(serve_argv(tmp_path / "data", "--redis", redis.url, "--acl", str(acl_path)), cwd=tmp_path)
    servers.append(server)
    server.wait_for("engine ready")
    host, port = server.addresses["line"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"auth anything\nquit\n")
        answers = s.makefile("rb").read().splitlines()
    assert json.loads(answers[0])["code"] == "bad_request"  # the ACL is not a tokens file
    assert request("GET", server.url("/c/jobs"))[0] == 403
    acl_path.write_text("[comet:consumer]\nhosts_allow = 127.0.0.1\nhosts_deny = all\n")
    os.utime(acl_path, (1, 1))
    server.wait_for("acl file reloaded", timeout=5)
    assert request("POST", server.url("/q/jobs"), b"value=x",
                   {"content-type": "application/x-www-form-urlencoded"})[0] == 200  # no producer rule now
    acl_path.write_text("[rest:producer]\nhosts_deny = all\n")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("acl file reloaded")
    assert request("POST", server.url("/q/jobs"), b"value=y",
                   {"content-type": "application/x-www-form-urlencoded"})[0] == 403
    assert server.stop() == 0
