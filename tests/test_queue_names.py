"""Queue names: any 1-128 Unicode characters without whitespace, control characters, ``/``, ``{`` or
``}`` (the original RestMQ accepted any name), through every front end, with the rule stated in
every refusal, and without two queues ever sharing a Redis key."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
import redis as redis_py
import treq
from twisted.internet import threads

from restmq import commands
from restmq.dispatch import Dispatcher
from restmq.engine import keys
from restmq.errors import BadQueueName, NotFound
from restmq.frontends.http.admin import render_dashboard_rows
from restmq.frontends.http.openapi import build_document
from tests.conftest import fails, run
from tests.test_line import line_port, open_client  # noqa: F401  (fixture)
from tests.test_dashboard import Dom, chromium, needs_chromium
from tests.test_dashboard import Site as DashboardSite
from tests.test_memcache import exchange as mc_exchange, mc  # noqa: F401  (fixture)
from tests.test_metrics import Scrape
from tests.test_resp import resp  # noqa: F401  (fixture)
from tests.test_sse import events, stream
from tests.test_ws import connect, http, until  # noqa: F401  (fixture)
from tests.test_xmlrpc import call as xmlrpc_call, fault, url  # noqa: F401  (fixture)

#: Names the original accepted and the old alphabet refused; each must now work everywhere.
NAMES = ["user@example.org", "_private", "fila-ação", "a:b:c", "日本語キュー", "-dash", ".hidden", 'q"uote\\s']
#: Names still refused: the one deliberate difference (``/``), and what would break framing or keys.
REFUSED = ["jobs/high", "", "x" * 129, "a b", "tab\there", "new\nline", "nul\x00", "del\x7f", "nbsp\xa0x",
           "ideographic\u3000space", "a{b", "b}", "{tag}"]


def test_the_rule_accepts_any_printable_name_and_counts_characters():
    """Unicode, @, :, leading punctuation and 128 characters (not bytes) are accepted; the rest are refused."""
    for name in NAMES + ["ç" * 128, "🙂" * 128]:
        assert commands.check_queue(name) == name
    for name in REFUSED + ["ç" * 129, "\ud800"]:
        with pytest.raises(BadQueueName) as refused:
            commands.check_queue(name)
        assert commands.QUEUE_RULE in refused.value.message


def test_names_with_colons_unicode_or_dead_never_share_a_key_with_another_queue():
    """Every key and channel of a queue is its own, except the dead-letter keys q and q.dead share by design."""
    names = ["a", "a:b", "a:b:c", "b", "a.dead", "a.dead.dead", ".dead", "a:dead", "d:a", "fila-ação", "fila-acao",
             "a:ready", "ready", "rmq:queues", "rmq", "q:1"]
    owners: dict[str, str] = {}
    for name in names:
        qk = keys.for_queue(name)
        own = {qk.ready, qk.reserved, qk.delayed, qk.messages, qk.seen, qk.receipts, qk.errors, qk.expiry,
               qk.dedup, qk.dedup_until, qk.unique, qk.conf, qk.stats, qk.subs, qk.subs_seen, qk.replay, qk.channel}
        assert keys.REGISTRY not in own and keys.TIMERS not in own
        for key in own:
            assert owners.setdefault(key, name) == name, f"{key} of {name} is also {owners[key]}'s"
    assert keys.for_queue("a").dead == keys.for_queue("a.dead").ready  # by design: a.dead is a's dead letters
    assert keys.for_queue("a:b").seq != keys.for_queue("a").seq


@pytest_twisted.ensureDeferred
async def test_delays_leases_and_dead_letters_work_on_unicode_names(dispatcher):
    """A delayed message, a lapsed lease and a dead letter on 'fila-ação:x' come back through the timers as on any queue."""
    from twisted.internet import reactor, task

    name = "fila-ação:x"
    await run(dispatcher, "config", queue=name, max_attempts=1)
    await run(dispatcher, "add", queue=name, value="later", delay=0.05)
    await task.deferLater(reactor, 0.1, lambda: None)
    reserved = await run(dispatcher, "reserve", queue=name, lease=0.05)
    assert (reserved["key"], reserved["value"]) == (f"{name}:1", "later")
    await task.deferLater(reactor, 0.1, lambda: None)
    assert await run(dispatcher, "take", queue=name, count=1) == []  # one attempt: now a dead letter
    [dead] = await run(dispatcher, "peek", queue=name, state="dead", count=1)
    assert dead["key"] == f"{name}.dead:1"  # its dead-letter queue is fila-ação:x.dead
    assert (await run(dispatcher, "redrive", queue=name))["moved"] == 1
    assert (await run(dispatcher, "take", queue=name))["value"] == "later"


@pytest_twisted.ensureDeferred
async def test_keys_split_on_the_last_colon(dispatcher):
    """A key 'a:b:c:<n>' belongs to queue 'a:b:c'; the same number under another queue's name is not_found."""
    added = await run(dispatcher, "add", queue="a:b:c", value="v")
    assert added["key"] == "a:b:c:1"
    assert (await run(dispatcher, "get", queue="a:b:c", key="a:b:c:1"))["value"] == "v"
    with pytest.raises(NotFound):
        await run(dispatcher, "get", queue="a:b:c", key="a:b:1")
    assert (await run(dispatcher, "del", queue="a:b:c", key="a:b:c:1"))["deleted"] is True


@pytest_twisted.ensureDeferred
async def test_rest_paths_take_percent_encoded_names(http):  # noqa: F811
    """POST/GET/DELETE /q/<percent-encoded name> work for every accepted name; /q/jobs%2Fhigh is a 400 stating the rule."""
    for name in NAMES:
        path = "/q/" + quote(name, safe="")
        reply = await http.post(path, data={"value": "hello"})
        assert (reply.status, reply.body) == (200, f"{name}:1\r\n".encode()), name
        taken = (await http.get(path)).json()
        assert (taken["key"], taken["queue"], taken["value"]) == (f"{name}:1", name, "hello")
        await http.post(path, data={"value": "again"})
        assert (await http("DELETE", path + "/2")).json()["deleted"] is True
        stats = (await http.get("/stats/" + quote(name, safe=""))).json()
        assert stats["queue"] == name
    listed = (await http.get("/q")).json()["queues"]
    assert set(NAMES) <= set(listed)
    for path in ("/q/jobs%2Fhigh", "/q/a%20b", "/q/a%7Bb%7D", "/q/" + "x" * 129, "/q/not-utf8-%FF"):
        refused = await http.post(path, data={"value": "x"})
        assert refused.status == 400 and refused.json()["code"] == "bad_queue_name"
        assert commands.QUEUE_RULE in refused.json()["error"]


@pytest_twisted.ensureDeferred
async def test_json_protocol_and_the_key_of_a_name_with_colons(http):  # noqa: F811
    """POST /queue adds to, reads from and deletes by key in 'user@example.org' and 'a:b:c'; 'jobs/high' answers bad_queue_name."""
    for name in ("user@example.org", "a:b:c", "fila-ação"):
        added = (await http.post("/queue", json_body={"cmd": "add", "queue": name, "value": "x"})).json()
        assert added["key"] == f"{name}:1"
        got = (await http.post("/queue", json_body={"cmd": "get", "queue": name})).json()
        assert got["key"] == f"{name}:1" and got["count"] == 1
        deleted = (await http.post("/queue", json_body={"cmd": "del", "queue": name, "key": f"{name}:1"})).json()
        assert deleted == {"queue": name, "deleted": True, "key": f"{name}:1"}
    bad = (await http.post("/queue", json_body={"cmd": "add", "queue": "jobs/high", "value": "x"})).json()
    assert bad["code"] == "bad_queue_name" and commands.QUEUE_RULE in bad["error"]


def _comet_line(port: int, path: str) -> bytes:
    """Open a COMET stream with a raw socket and answer its first message line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or b"value" not in data.split(b"\r\n\r\n", 1)[1]:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


@pytest_twisted.ensureDeferred
async def test_streams_on_unicode_and_at_names(http, engine):  # noqa: F811
    """COMET, SSE and WebSocket streams bind to /c, /sse and /ws with percent-encoded names and deliver their messages."""
    name = "fila-ação"
    path = quote(name, safe="")
    comet = threads.deferToThread(_comet_line, http.port, "/c/" + path)
    await until(lambda: engine.hub.subscribers(name) == 1)
    await http.post("/q/" + path, data={"value": "olá"})
    raw = await comet
    assert b" 200 " in raw.split(b"\r\n", 1)[0]
    [line] = [line for line in raw.decode().split("\r\n") if line.startswith('{"key"')]
    assert (json.loads(line)["key"], json.loads(line)["value"]) == (f"{name}:1", "olá")

    at = "user@example.org"
    response, body = await stream(http, "/sse/" + at)
    await until(lambda: engine.hub.subscribers(at) == 1)
    await http.post("/q/" + at, data={"value": "hi"})
    await until(lambda: len(events(body)) == 1)
    assert json.loads(events(body)[0].data)["key"] == f"{at}:1"
    body.leave()

    ws = await connect(http, "/ws/" + quote("a:b:c", safe=""))
    await until(lambda: engine.hub.subscribers("a:b:c") == 1)
    await http.post("/q/a:b:c", data={"value": "w"})
    await until(lambda: bool(ws.frames))
    assert ws.frames[0]["key"] == "a:b:c:1"
    ws.sendClose()
    refused = await http.get("/sse/jobs%2Fhigh")
    assert refused.status == 400 and refused.json()["code"] == "bad_queue_name"


@pytest_twisted.ensureDeferred
async def test_xmlrpc_takes_any_name_and_faults_with_the_rule(url, dispatcher):  # noqa: F811
    """XML-RPC set/get work on 'fila-ação' and 'a:b'; restmq.add on 'jobs/high' is a bad_queue_name fault stating the rule."""
    assert await xmlrpc_call(url, "set", "fila-ação", "x") == "fila-ação:1"
    assert (await xmlrpc_call(url, "get", "fila-ação"))["key"] == "fila-ação:1"
    assert (await xmlrpc_call(url, "restmq.add", "a:b", "y"))["key"] == "a:b:1"
    refused = await fault(url, "restmq.add", "jobs/high", "x")
    assert refused.faultString.startswith("bad_queue_name: ") and commands.QUEUE_RULE in refused.faultString


@pytest_twisted.ensureDeferred
async def test_line_protocol_splits_text_commands_around_any_name(line_port):  # noqa: F811
    """'add fila-ação hello world' adds 'hello world' to fila-ação; 'add jobs/high x' answers bad_queue_name with the rule."""
    client = await open_client(line_port)
    client.send("add fila-ação hello world", "take fila-ação", "add jobs/high x")
    assert (await client.next())["key"] == "fila-ação:1"
    taken = await client.next()
    assert (taken["queue"], taken["value"]) == ("fila-ação", "hello world")
    refused = await client.next()
    assert refused["code"] == "bad_queue_name" and commands.QUEUE_RULE in refused["error"]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_resp_and_memcached_keys_are_queue_names(resp, mc):  # noqa: F811
    """redis-py RPUSH/LPOP and memcached set/get work on 'user@example.org' and 'fila-ação'; 'a{b}' is refused."""

    def redis_side() -> tuple[Any, str]:
        client = redis_py.Redis(port=resp.port, socket_timeout=10)
        client.rpush("fila-ação", "um")
        popped = client.lpop("fila-ação")
        try:
            client.rpush("a{b}", "x")
        except redis_py.ResponseError as e:
            return popped, str(e)
        return popped, ""

    popped, error = await threads.deferToThread(redis_side)
    assert popped == b"um" and error.startswith("bad_queue_name") and commands.QUEUE_RULE in error

    def memcached_side() -> bytes:
        s = socket.create_connection(mc.address, timeout=10)
        mc.clients.append(s)
        stored = mc_exchange(s, "set user@example.org 0 0 2\r\nhi\r\n".encode(), b"\r\n")
        got = mc_exchange(s, "get user@example.org\r\n".encode(), b"END\r\n")
        bad = mc_exchange(s, b"get a{b}\r\n", b"\r\n")
        return stored + got + bad

    answer = await threads.deferToThread(memcached_side)
    assert answer.startswith(b"STORED\r\nVALUE user@example.org 0 2\r\nhi\r\nEND\r\nCLIENT_ERROR invalid queue name")


@pytest_twisted.ensureDeferred
async def test_metrics_escape_quotes_and_backslashes_in_names(http):  # noqa: F811
    """A queue named q"uote\\s is one label value in /metrics, read back intact by the Prometheus parser."""
    name = 'q"uote\\s'
    await http.post("/q/" + quote(name, safe=""), data={"value": "x"})
    response = await treq.get(http.base + "/metrics", persistent=False)
    scrape = Scrape((await response.content()).decode())
    assert scrape.value("restmq_queue_messages", queue=name, state="ready") == 1


def test_dashboard_rows_link_percent_encoded_and_show_escaped_names():
    """The dashboard's first rows link /j/<percent-encoded name> and show the name as text, not markup."""
    name = '<b>fila-ação?#&"'
    html = render_dashboard_rows({"queues": {name: {"len": 1, "state": "running", "policy_name": "broadcast"}}})
    assert 'href="/j/%3Cb%3Efila-a%C3%A7%C3%A3o%3F%23%26%22"' in html
    assert "&lt;b&gt;fila-ação?#&amp;&quot;" in html and "<b>" not in html


def test_openapi_describes_the_name_rule():
    """The OpenAPI queue schema states the rule, bounds the length in characters and its pattern refuses '/', '{' and blanks."""
    import re

    found = build_document()["components"]["schemas"]["cmd_add"]["properties"]["queue"]
    assert (found["minLength"], found["maxLength"]) == (1, 128)
    assert commands.QUEUE_RULE in found["description"]
    pattern = re.compile(found["pattern"].replace("$", r"\Z"))
    assert all(pattern.match(n) for n in NAMES)
    assert not any(pattern.match(n) for n in ("jobs/high", "a b", "a{b", "x\ny"))


@pytest_twisted.ensureDeferred
async def test_dispatcher_refuses_bad_names_for_every_command(dispatcher):
    """add, take, stats and subscribe refuse a name with '/' by bad_queue_name."""
    for name in ("add", "take", "stats"):
        args = {"queue": "jobs/high", **({"value": "x"} if name == "add" else {})}
        await fails(dispatcher, "bad_queue_name", name, **args)
    with pytest.raises(BadQueueName):
        Dispatcher(dispatcher.engine).subscribe("jobs/high", None)  # type: ignore[arg-type]


@needs_chromium
@pytest_twisted.ensureDeferred
async def test_the_live_dashboard_shows_and_acts_on_any_name(dispatcher):
    """In Chromium, the dashboard lists 'fila-ação', 'user@example.org', 'a:b:c' and '<b>x&y"' as text with their counts and percent-encoded action paths."""
    site = DashboardSite(dispatcher)
    try:
        names = ["fila-ação", "user@example.org", "a:b:c", '<b>x&y"']
        for name in names:
            await site.json("POST", "/q/" + quote(name, safe=""), json={"value": "v"})
        dom = Dom(await chromium(site.base + "/dashboard", "--dump-dom"))
        assert set(dom.rows) == set(names)
        for name in names:
            assert (dom.rows[name]["ready"], dom.rows[name]["state"]) == ("1", "running")
            actions = {b["data-action"]: b for b in dom.buttons[name]}
            assert actions["pause"]["data-path"] == "/control/" + quote(name, safe="")
        assert dom.ids["error"].strip() == ""
    finally:
        await site.port.stopListening()
