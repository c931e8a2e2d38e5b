"""The HTTP front end over a real twisted.web Site on port 0, talked to with treq (real HTTP)."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, protocol, task
from twisted.web.http_headers import Headers

from restmq.frontends.http.routes import build_site

JSON_TYPE = "application/json; charset=utf-8"


# -- plumbing -----------------------------------------------------------------------------------


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def sleep(seconds: float) -> None:
    await task.deferLater(_reactor(), seconds, lambda: None)


async def until(check: Callable[[], bool], timeout: float = 2.0, step: float = 0.005) -> float:
    """Wait until ``check()`` is true; answer how long it took (fail after ``timeout``)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "condition not met in time"
        await sleep(step)
    return time.monotonic() - start


@dataclass
class Reply:
    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    @property
    def type(self) -> str | None:
        return self.header("content-type")

    def json(self) -> Any:
        assert self.type == JSON_TYPE, (self.status, self.type, self.body[:200])
        assert self.body.endswith(b"\r\n")
        return json.loads(self.body)


class Client:
    """A tiny treq wrapper: whole answers as :class:`Reply`, no connection reuse between calls."""

    def __init__(self, base: str) -> None:
        self.base = base

    async def __call__(
        self,
        method: str,
        path: str,
        *,
        data: Any = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        kwargs: dict[str, Any] = {"persistent": False}
        if data is not None:
            kwargs["data"] = data
        if json_body is not None:
            kwargs["json"] = json_body
        if headers:
            kwargs["headers"] = headers
        response = await treq.request(method, self.base + path, **kwargs)
        body = await response.content()
        return Reply(response.code, response.headers, body)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Reply:
        return await self("POST", path, **kw)


@pytest_twisted.async_yield_fixture
async def http(dispatcher):
    """A Client for a RestMQ Site listening on a free loopback port."""
    port = _reactor().listenTCP(0, build_site(dispatcher, reactor=_reactor()), interface="127.0.0.1")
    yield Client(f"http://127.0.0.1:{port.getHost().port}")
    await port.stopListening()


async def add(http: Client, queue: str, value: str) -> str:
    reply = await http.post(f"/q/{queue}", data={"value": value})
    assert reply.status == 200, reply
    return reply.body.decode().strip()


# -- adding -------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_post_form_answers_the_key_as_plain_text(http):
    """POST /q/<q> with a form answers the new key as text/plain + CRLF with 200, as the original."""
    reply = await http.post("/q/q", data={"value": "hello"})
    assert (reply.status, reply.type, reply.body) == (200, "text/plain; charset=utf-8", b"q:1\r\n")
    assert (await http.post("/q/q/", data={"value": "again"})).body == b"q:2\r\n"


@pytest_twisted.ensureDeferred
async def test_msg_wins_over_value(http):
    """msg= is the original's other name for value and wins when both are sent."""
    await http.post("/q/q", data={"value": "v", "msg": "m"})
    assert (await http.get("/q/q")).json()["value"] == "m"


@pytest_twisted.ensureDeferred
async def test_accept_json_answers_201_json(http):
    """With Accept: application/json an add answers 201 and {queue, value, key}."""
    reply = await http.post("/q/q", data={"value": "x"}, headers={"Accept": "application/json"})
    assert reply.status == 201
    assert reply.json() == {"queue": "q", "value": "x", "key": "q:1"}


@pytest_twisted.ensureDeferred
async def test_json_body_adds_a_json_value_with_priority(http):
    """A JSON object body adds its value (any JSON) with its priority and answers 201 JSON."""
    reply = await http.post("/q/q", json_body={"value": {"n": [1, 2]}, "priority": 1})
    assert reply.status == 201 and reply.json()["key"] == "q:1"
    await http.post("/q/q", data={"value": "later"})
    await http.post("/q/q", json_body={"value": "first", "priority": 0})
    got = (await http.get("/q/q?count=5")).json()
    assert [m["value"] for m in got] == ["first", {"n": [1, 2]}, "later"]


@pytest_twisted.ensureDeferred
async def test_json_messages_body_is_add_many(http):
    """{"messages": [...]} adds them all in one request and answers their keys."""
    reply = await http.post("/q/q", json_body={"messages": ["a", {"value": "b", "priority": 0}]})
    assert reply.status == 201
    assert reply.json() == {"queue": "q", "keys": ["q:1", "q:2"]}
    assert [m["value"] for m in (await http.get("/q/q?count=2")).json()] == ["b", "a"]


@pytest_twisted.ensureDeferred
async def test_raw_text_body_is_the_value_and_stays_text(http):
    """Any other content type is the raw UTF-8 value; "42" comes back as the string "42"."""
    await http.post("/q/q", data=b"42", headers={"Content-Type": "text/plain"})
    await http.post("/q/q", data="héllo wörld".encode(), headers={"Content-Type": "application/octet-stream"})
    got = (await http.get("/q/q?count=2")).json()
    assert [m["value"] for m in got] == ["42", "héllo wörld"]


@pytest_twisted.ensureDeferred
async def test_query_arguments_apply_to_a_text_body(http):
    """Query arguments such as priority apply whatever the body is."""
    await http.post("/q/q", data={"value": "normal"})
    await http.post("/q/q?priority=0", data=b"urgent", headers={"Content-Type": "text/plain"})
    assert (await http.get("/q/q")).json()["value"] == "urgent"


@pytest.mark.parametrize(
    ("data", "ctype", "code"),
    [
        (b"value=", "application/x-www-form-urlencoded", "bad_request"),
        (b"other=1", "application/x-www-form-urlencoded", "bad_request"),
        (b"", "text/plain", "bad_request"),
        (b"a\xffb", "text/plain", "bad_request"),
        (b"value=%FF", "application/x-www-form-urlencoded", "bad_request"),
        (b"{nope", "application/json", "bad_request"),
        (b'["a"]', "application/json", "bad_request"),
        (b'{"value": "x", "colour": "red"}', "application/json", "bad_request"),
        (b"value=x&priority=12", "application/x-www-form-urlencoded", "bad_request"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_adds_are_400_json_and_add_nothing(http, data, ctype, code):
    """Empty or missing values, invalid UTF-8, bad JSON and bad arguments are 400 JSON errors."""
    reply = await http.post("/q/q", data=data, headers={"Content-Type": ctype})
    assert reply.status == 400
    assert reply.json()["code"] == code
    assert (await http.get("/q/q")).status == 204


@pytest_twisted.ensureDeferred
async def test_bad_queue_name_is_400_json(http):
    """A queue name outside the allowed pattern is refused with bad_queue_name."""
    for path in ("/q/bad%20name", "/q/a%7Bb%7D", "/q/" + "x" * 129):
        reply = await http.post(path, data={"value": "x"})
        assert reply.status == 400 and reply.json()["code"] == "bad_queue_name"
    assert (await http.get("/q/bad%20name")).json()["code"] == "bad_queue_name"


@pytest_twisted.ensureDeferred
async def test_too_large_is_413_json(http):
    """A value over max_message_size, or a body over the cap, is 413 JSON and adds nothing."""
    just_over = b"a" * ((1 << 20) + 1)  # one byte over the limit
    reply = await http.post("/q/q", data=just_over, headers={"Content-Type": "text/plain"})
    assert reply.status == 413 and reply.json()["code"] == "too_large"
    huge = b"a" * (4 << 20)
    reply = await http.post("/q/q", data=huge, headers={"Content-Type": "text/plain"})
    assert reply.status == 413 and reply.json()["code"] == "too_large"
    assert (await http.get("/q/q")).status == 204
    ok = await http.post("/q/q", data=b"a" * (1 << 20), headers={"Content-Type": "text/plain"})
    assert ok.status == 200


# -- taking and reading -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_take_answers_the_message_then_204(http):
    """GET /q/<q> takes the next message {key, value, count: 0, …}; an empty queue is 204, no body."""
    await add(http, "q", "one")
    reply = await http.get("/q/q")
    message = reply.json()
    assert reply.status == 200
    assert (message["key"], message["value"], message["count"], message["queue"]) == ("q:1", "one", 0, "q")
    empty = await http.get("/q/q")
    assert (empty.status, empty.body) == (204, b"")


@pytest_twisted.ensureDeferred
async def test_take_count_answers_a_list_and_204_when_empty(http):
    """?count=N answers a list of up to N messages; nothing at all is 204."""
    for v in "abc":
        await add(http, "q", v)
    assert [m["value"] for m in (await http.get("/q/q?count=2")).json()] == ["a", "b"]
    assert [m["value"] for m in (await http.get("/q/q/?count=5")).json()] == ["c"]
    assert (await http.get("/q/q?count=5")).status == 204
    assert (await http.get("/q/q?count=0")).json()["code"] == "bad_request"


@pytest_twisted.ensureDeferred
async def test_long_poll_answers_when_a_message_arrives(http):
    """GET ?wait=S answers as soon as a message is added, well before the wait runs out."""
    start = time.monotonic()
    waiting = defer.ensureDeferred(http.get("/q/q?wait=5"))
    await sleep(0.1)
    await add(http, "q", "late")
    reply = await waiting
    assert reply.json()["value"] == "late"
    assert time.monotonic() - start < 1.0


@pytest_twisted.ensureDeferred
async def test_long_poll_gives_up_with_204(http):
    """A long poll on an empty queue answers 204 after its wait."""
    start = time.monotonic()
    assert (await http.get("/q/q?wait=0.3")).status == 204
    assert 0.25 < time.monotonic() - start < 1.5


@pytest_twisted.ensureDeferred
async def test_long_poll_client_leaving_does_not_eat_a_message(http):
    """When a long-polling client disconnects its wait ends at once, so a later message stays queued."""
    waiting = treq.get(http.base + "/q/q?wait=10", persistent=False)
    await sleep(0.2)
    waiting.cancel()
    with pytest.raises(Exception):
        await waiting
    await sleep(0.1)
    await add(http, "q", "kept")
    await sleep(0.1)
    assert (await http.get("/q/q")).json()["value"] == "kept"


@pytest_twisted.ensureDeferred
async def test_lease_reserves_and_ack_finishes(http):
    """GET ?lease=S reserves (hidden, with a receipt); POST /ack with the receipt deletes it."""
    await add(http, "q", "x")
    got = (await http.get("/q/q?lease=30")).json()
    assert got["value"] == "x" and got["attempts"] == 1 and got["receipt"]
    assert (await http.get("/q/q?lease=30")).status == 204
    acked = await http.post("/q/q/ack", data={"receipt": got["receipt"]})
    assert acked.json() == {"queue": "q", "acked": 1}
    stale = await http.post("/q/q/ack", json_body={"receipt": [got["receipt"]]})
    assert stale.status == 409 and stale.json()["code"] == "stale_receipt"


@pytest_twisted.ensureDeferred
async def test_nack_touch_and_text_receipts(http):
    """nack gives back, touch extends, and a text/plain body is the receipt."""
    await add(http, "q", "x")
    got = (await http.get("/q/q?lease=30&count=1")).json()[0]
    touched = await http.post("/q/q/touch", data=got["receipt"].encode(), headers={"Content-Type": "text/plain"})
    assert touched.json()["lease_until"] > got["lease_until"] - 1
    nacked = await http.post(f"/q/q/nack?receipt={got['receipt']}", data={"error": "flaky"})
    assert nacked.json() == {"queue": "q", "nacked": 1, "state": "ready"}
    assert (await http.get("/q/q?lease=5")).json()["attempts"] == 2


@pytest_twisted.ensureDeferred
async def test_config_get_put_and_redrive(http):
    """GET|PUT /q/<q>/config reads and sets settings; POST /redrive brings dead letters back."""
    assert (await http.get("/q/q/config")).json()["max_attempts"] == 5
    put = await http("PUT", "/q/q/config", json_body={"max_attempts": 1, "lease": 10})
    assert put.json() == {"queue": "q", "max_attempts": 1, "lease": 10.0, "dedup_window": 300.0, "max_length": 0}
    bad = await http("PUT", "/q/q/config", json_body={"max_attempts": 0})
    assert bad.status == 400 and bad.json()["code"] == "bad_request"
    await add(http, "q", "poison")
    got = (await http.get("/q/q?lease=5")).json()
    assert (await http.post("/q/q/nack", data={"receipt": got["receipt"]})).json()["state"] == "dead"
    assert (await http.get("/q/q/peek?state=dead")).json()["key"] == "q.dead:1"
    assert (await http.post("/q/q/redrive", data={})).json() == {"queue": "q", "moved": 1}
    assert (await http.get("/q/q")).json()["value"] == "poison"


@pytest_twisted.ensureDeferred
async def test_peek_and_message_by_number(http):
    """/peek looks without taking; /q/<q>/<n> reads message <q>:<n>, 404 once gone; DELETE removes it."""
    for v in "ab":
        await add(http, "q", v)
    assert (await http.get("/q/q/peek")).json()["value"] == "a"
    assert [m["value"] for m in (await http.get("/q/q/peek/?count=5")).json()] == ["a", "b"]
    assert (await http.get("/q/q/2")).json()["value"] == "b"
    await http.get("/q/q")
    gone = await http.get("/q/q/1")
    assert gone.status == 404 and gone.json()["code"] == "not_found"
    deleted = await http("DELETE", "/q/q/2")
    assert deleted.json() == {"queue": "q", "deleted": True, "key": "q:2"}
    assert (await http.get("/q/q/peek")).status == 204


@pytest_twisted.ensureDeferred
async def test_actions_answer_json_errors(http):
    """/ack without a receipt is a 400 JSON error, and an unknown action is a JSON 404."""
    reply = await http.post("/q/q/ack", data={})
    assert reply.status == 400 and reply.json()["code"] == "bad_request"
    assert (await http.get("/q/q/nope")).status == 404


@pytest_twisted.ensureDeferred
async def test_purge_and_list(http):
    """DELETE /q/<q> purges ({queue, status, purged}); GET /q and /q/ list the queues."""
    await add(http, "a", "1")
    await add(http, "a", "2")
    await add(http, "b", "3")
    listed = (await http.get("/q")).json()
    assert listed["count"] == 2 and listed["queues"]["a"]["len"] == 2
    assert (await http.get("/q/")).json() == listed
    assert (await http("DELETE", "/q/a")).json() == {"queue": "a", "status": 1, "purged": 2}
    assert (await http("DELETE", "/q/a/")).json() == {"queue": "a", "status": 0, "purged": 0}
    assert (await http.get("/q")).json()["queues"]["a"]["len"] == 0


# -- the original quick path: / -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_root_post_adds_and_get_takes(http):
    """POST / with queue + value (or msg) adds; GET /?queue=q takes with count 0; empty is 404 JSON."""
    reply = await http.post("/", data={"queue": "q", "msg": "hi"})
    assert reply.body == b"q:1\r\n"
    message = (await http.get("/?queue=q")).json()
    assert (message["key"], message["value"], message["count"]) == ("q:1", "hi", 0)
    empty = await http.get("/?queue=q")
    assert empty.status == 404 and empty.json() == {"error": "empty queue", "code": "empty"}
    missing = await http.post("/", data={"value": "x"})
    assert missing.status == 400 and missing.json()["code"] == "bad_request"


@pytest_twisted.ensureDeferred
async def test_root_post_with_original_ttl_drops_the_message_later(http):
    """The original ttl field is accepted on POST / and an expired message is never taken."""
    reply = await http.post("/", data={"queue": "q", "value": "brief", "ttl": "0.05"})
    assert reply.body == b"q:1\r\n"
    await sleep(0.1)
    assert (await http.get("/q/q")).status == 204


@pytest_twisted.ensureDeferred
async def test_root_without_queue_redirects_to_dashboard(http):
    """GET / without a queue is a 302 to the dashboard."""
    response = await treq.get(http.base + "/", allow_redirects=False, persistent=False)
    await response.content()
    assert response.code == 302
    assert response.headers.getRawHeaders("location") == ["/dashboard"]


# -- the JSON protocol: /queue ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_json_protocol_original_commands(http):
    """add, get (counting looks), take and del answer the original shapes with HTTP 200."""
    added = (await http.post("/queue", json_body={"cmd": "add", "queue": "q", "value": "x"})).json()
    assert added == {"queue": "q", "value": "x", "key": "q:1"}
    got = (await http.post("/queue", json_body={"cmd": "get", "queue": "q"})).json()
    assert (got["queue"], got["value"], got["key"], got["count"]) == ("q", "x", "q:1", 1)
    assert (await http.post("/queue", json_body={"cmd": "get", "queue": "q"})).json()["count"] == 2
    taken = (await http.post("/queue", json_body={"cmd": "take", "queue": "q"})).json()
    assert (taken["queue"], taken["value"], taken["key"]) == ("q", "x", "q:1")
    await http.post("/queue", json_body={"cmd": "add", "queue": "q", "msg": "y"})
    deleted = (await http.post("/queue", json_body={"cmd": "del", "queue": "q", "key": "q:2"})).json()
    assert deleted == {"queue": "q", "deleted": True, "key": "q:2"}


@pytest_twisted.ensureDeferred
async def test_json_protocol_in_form_fields(http):
    """The command may come in the form field body= (or msg=), as original clients send it."""
    command = json.dumps({"cmd": "add", "queue": "q", "value": "v"})
    assert (await http.post("/queue", data={"body": command})).json()["key"] == "q:1"
    taken = await http.post("/queue", data={"msg": json.dumps({"cmd": "take", "queue": "q"})})
    assert taken.json()["value"] == "v"


@pytest_twisted.ensureDeferred
async def test_json_protocol_failures_are_200_rpc_style(http):
    """A command that fails answers 200 with {error, code}; the empty queue keeps its original text."""
    empty = await http.post("/queue", json_body={"cmd": "take", "queue": "q"})
    assert empty.status == 200 and empty.json() == {"error": "empty queue", "code": "empty"}
    unknown = await http.post("/queue", json_body={"cmd": "explode", "queue": "q"})
    assert unknown.status == 200 and unknown.json()["code"] == "unknown_command"
    bad = await http.post("/queue", json_body={"cmd": "add", "queue": "bad name", "value": "x"})
    assert bad.status == 200 and bad.json()["code"] == "bad_queue_name"


@pytest.mark.parametrize(
    ("data", "ctype"),
    [(b"not json", "application/json"), (b'{"queue": "q"}', "application/json"), (b"", "application/json"),
     (b'["take"]', "application/json"), (b"body=nope", "application/x-www-form-urlencoded")],
)
@pytest_twisted.ensureDeferred
async def test_json_protocol_unreadable_is_400(http, data, ctype):
    """A body that is not a JSON command with cmd is 400 JSON."""
    reply = await http.post("/queue", data=data, headers={"Content-Type": ctype})
    assert reply.status == 400 and reply.json()["code"] == "bad_request"


@pytest_twisted.ensureDeferred
async def test_json_protocol_page(http):
    """GET /queue is a small self-contained HTML form to try commands."""
    reply = await http.get("/queue")
    assert reply.status == 200 and reply.type == "text/html; charset=utf-8"
    assert b"<form" in reply.body and b"http://" not in reply.body and b"https://" not in reply.body


# -- JSONP, slashes, methods, routes ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_jsonp_wraps_json_answers(http):
    """callback=NAME wraps a JSON answer as NAME(<json>); + CRLF in application/javascript."""
    await add(http, "q", "x")
    reply = await http.get("/stats/q?callback=app.onStats")
    assert reply.status == 200 and reply.type == "application/javascript; charset=utf-8"
    assert reply.body.startswith(b"app.onStats({") and reply.body.endswith(b"});\r\n")
    assert json.loads(reply.body[len("app.onStats("):-4])["len"] == 1
    taken = await http.get("/q/q?callback=cb&_=1234")
    assert json.loads(taken.body[3:-4])["value"] == "x"


@pytest_twisted.ensureDeferred
async def test_bad_jsonp_callback_is_400(http):
    """A callback that is not a JavaScript identifier path is refused, not echoed."""
    await add(http, "q", "x")
    reply = await http.get("/q/q?callback=alert(document.cookie)")
    assert reply.status == 400 and reply.json()["code"] == "bad_request"
    assert (await http.get("/q/q")).json()["value"] == "x"


@pytest_twisted.ensureDeferred
async def test_trailing_slash_is_optional(http):
    """Every route answers the same with and without a trailing slash."""
    for path in ("/stats", "/stats/q", "/control", "/control/q", "/p/q", "/health", "/q"):
        plain, slashed = await http.get(path), await http.get(path + "/")
        assert plain.status == slashed.status == 200, path
        assert plain.type == slashed.type


@pytest_twisted.ensureDeferred
async def test_unknown_route_is_404_json(http):
    """A path nobody serves is a JSON 404, never twisted.web's HTML page."""
    for path in ("/nope", "/q/q/1/2", "/stats/q/extra", "/p", "/c/"):
        reply = await http.get(path)
        assert reply.status == 404 and reply.json()["code"] == "not_found", path


@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405_json_with_allow(http):
    """A method a route does not take is a JSON 405 that says which ones it does."""
    reply = await http("PUT", "/q/q")
    assert reply.status == 405 and reply.json()["code"] == "bad_request"
    assert reply.header("allow") == "GET, POST, DELETE"
    assert (await http("DELETE", "/stats")).header("allow") == "GET, HEAD"
    head = await http("HEAD", "/q/q")  # HEAD must not take a message
    assert head.status == 405
    assert (await http("HEAD", "/stats")).status == 200


@pytest_twisted.ensureDeferred
async def test_unexpected_failure_is_500_json_without_traceback(http):
    """A failure nobody planned for is a generic JSON 500; the traceback stays in the log."""

    class Broken:
        def execute(self, name, args, principal=None, frontend="other"):
            return defer.fail(ZeroDivisionError("secret detail"))

    port = _reactor().listenTCP(0, build_site(Broken()), interface="127.0.0.1")
    try:
        reply = await Client(f"http://127.0.0.1:{port.getHost().port}").get("/stats")
    finally:
        await port.stopListening()
    assert reply.status == 500 and reply.json() == {"error": "internal error", "code": "internal"}
    assert b"secret" not in reply.body and b"Traceback" not in reply.body


# -- admin routes -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stats_shapes(http):
    """/stats answers the original {queues: {q: {name, len, status, policy}}, redis, count} and
    /stats/<q> the original {queue, len, redis}, each with our fields beside."""
    await add(http, "q", "x")
    server = (await http.get("/stats")).json()
    assert server["count"] == 1 and isinstance(server["redis"], str)
    q = server["queues"]["q"]
    assert (q["name"], q["len"], q["status"], q["policy"]) == ("q", 1, 1, 1)
    one = (await http.get("/stats/q")).json()
    assert (one["queue"], one["len"]) == ("q", 1) and one["redis"].startswith(("redis", "valkey"))
    assert one["counters"]["added"] == 1


@pytest_twisted.ensureDeferred
async def test_control_pauses_and_resumes(http):
    """POST /control/<q> status=stop pauses (takes see nothing), start resumes; GET shows status."""
    await add(http, "q", "x")
    stopped = (await http.post("/control/q", data={"status": "stop"})).json()
    assert stopped == {"stat": {"queue": "q", "status": 0}, "queue": "q", "state": "paused"}
    assert (await http.get("/q/q")).status == 204
    shown = (await http.get("/control/q")).json()
    assert shown == {"queue": "q", "status": {"queue": "q", "status": 0}, "state": "paused"}
    everything = (await http.get("/control/")).json()
    assert everything["queues"]["q"]["status"] == 0 and everything["count"] == 1
    assert (await http.post("/control/q?status=resume")).json()["state"] == "running"
    assert (await http.get("/q/q")).json()["value"] == "x"


@pytest_twisted.ensureDeferred
async def test_control_bad_status_is_400_with_stat(http):
    """A bad status is 400 with the original's stat text beside error and code."""
    reply = await http.post("/control/q", data={"status": "explode"})
    assert reply.status == 400
    body = reply.json()
    assert body["stat"] == "invalid status: explode" and body["code"] == "bad_request"


@pytest_twisted.ensureDeferred
async def test_policy_get_and_set(http):
    """GET /p/<q> answers {queue, value, policy}; POST policy= sets it; an unknown one is 400."""
    assert (await http.get("/p/q")).json() == {"queue": "q", "value": "broadcast", "policy": "broadcast"}
    assert (await http.post("/p/q", data={"policy": "roundrobin"})).json()["value"] == "roundrobin"
    assert (await http.get("/p/q/")).json()["policy"] == "roundrobin"
    for data in ({"policy": "random"}, {}):
        reply = await http.post("/p/q", data=data)
        assert reply.status == 400 and reply.json()["code"] == "bad_request"


@pytest_twisted.ensureDeferred
async def test_health_answers_200(http):
    """GET /health is 200 with Redis's facts while Redis answers."""
    reply = await http.get("/health")
    assert reply.status == 200 and reply.json()["status"] == "ok"


@pytest_twisted.ensureDeferred
async def test_pages_escape_values(http):
    """/dashboard lists queues and /j/<q> shows length and messages, every value HTML-escaped."""
    await add(http, "q", "<script>alert(1)</script>")
    page = await http.get("/dashboard")
    assert page.status == 200 and page.type == "text/html; charset=utf-8" and b'href="/j/q"' in page.body
    jobs = await http.get("/j/q")
    assert jobs.status == 200 and b"&lt;script&gt;alert(1)&lt;/script&gt;" in jobs.body
    assert b"<script>alert" not in jobs.body
    assert (await http.get("/j/bad%20name")).json()["code"] == "bad_queue_name"


@pytest_twisted.ensureDeferred
async def test_xmlrpc_is_mounted_at_both_paths(http):
    """XML-RPC answers at /RPC2 and /xmlrpc on the same port."""
    call = (
        b"<?xml version='1.0'?><methodCall><methodName>set</methodName><params>"
        b"<param><value><string>q</string></value></param>"
        b"<param><value><string>v</string></value></param></params></methodCall>"
    )
    for path, key in (("/RPC2", b"q:1"), ("/xmlrpc", b"q:2")):
        reply = await http.post(path, data=call, headers={"Content-Type": "text/xml"})
        assert reply.status == 200 and key in reply.body


# -- COMET --------------------------------------------------------------------------------------


class Lines(protocol.Protocol):
    """Collects a streamed response body; ``ended`` fires when the response completes."""

    def __init__(self) -> None:
        self.data = b""
        self.reason: Any = None
        self.ended: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any) -> None:
        self.reason = reason
        self.ended.callback(None)

    @property
    def lines(self) -> list[bytes]:
        return [line for line in self.data.split(b"\r\n") if line]

    def leave(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]


async def comet(http: Client, path: str) -> tuple[Any, Lines]:
    response = await treq.get(http.base + path, unbuffered=True, persistent=False)
    lines = Lines()
    response.deliverBody(lines)
    return response, lines


@pytest_twisted.ensureDeferred
async def test_comet_streams_a_new_queue_within_100ms(http, engine):
    """A COMET client connected before the queue exists gets each added message as one JSON line fast."""
    response, lines = await comet(http, "/c/fresh")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    await until(lambda: engine.hub.subscribers("fresh") == 1)
    start = time.monotonic()
    key = await add(http, "fresh", "hello")
    await until(lambda: len(lines.lines) == 1, timeout=1.0, step=0.002)
    assert time.monotonic() - start < 0.1
    message = json.loads(lines.lines[0])
    assert (message["key"], message["value"]) == (key, "hello")
    assert lines.data.endswith(b"\r\n")
    await add(http, "fresh", "second")
    await until(lambda: len(lines.lines) == 2)
    assert (await http.get("/q/fresh")).status == 204  # streamed messages were taken
    lines.leave()


@pytest_twisted.ensureDeferred
async def test_comet_ends_when_the_queue_is_purged(http, engine):
    """Purging the queue completes the COMET response."""
    _, lines = await comet(http, "/c/q/")
    await until(lambda: engine.hub.subscribers("q") == 1)
    await http("DELETE", "/q/q")
    await lines.ended
    from twisted.web.client import ResponseDone

    assert lines.reason.check(ResponseDone)  # complete, chunked terminator included
    await until(lambda: engine.hub.subscribers("q") == 0)


@pytest_twisted.ensureDeferred
async def test_comet_broadcast_reaches_every_client(http, engine):
    """With the broadcast policy two COMET clients both get the message."""
    _, first = await comet(http, "/c/q")
    _, second = await comet(http, "/c/q")
    await until(lambda: engine.hub.subscribers("q") == 2)
    await add(http, "q", "to all")
    await until(lambda: len(first.lines) == 1 and len(second.lines) == 1)
    assert json.loads(first.lines[0])["value"] == json.loads(second.lines[0])["value"] == "to all"
    first.leave()
    second.leave()


@pytest_twisted.ensureDeferred
async def test_comet_disconnect_removes_the_subscriber(http, engine):
    """A COMET client that disconnects is unsubscribed at once and later messages stay queued."""
    _, lines = await comet(http, "/c/q")
    await until(lambda: engine.hub.subscribers("q") == 1)
    lines.leave()
    await until(lambda: engine.hub.subscribers("q") == 0, timeout=1.0)
    await add(http, "q", "kept")
    await sleep(0.05)
    assert (await http.get("/q/q")).json()["value"] == "kept"


@pytest_twisted.ensureDeferred
async def test_comet_jsonp_lines(http, engine):
    """callback=NAME wraps each streamed line as NAME(<json>); + CRLF."""
    _, lines = await comet(http, "/c/q?callback=onMessage")
    await until(lambda: engine.hub.subscribers("q") == 1)
    await add(http, "q", "x")
    await until(lambda: len(lines.lines) == 1)
    assert lines.lines[0].startswith(b"onMessage({") and lines.lines[0].endswith(b"});")
    lines.leave()


@pytest_twisted.ensureDeferred
async def test_comet_refuses_bad_input_with_json(http):
    """A bad queue name, callback or mode on /c is answered with a JSON error, not a stream."""
    assert (await http.get("/c/bad%20name")).json()["code"] == "bad_queue_name"
    assert (await http.get("/c/q?callback=1x")).json()["code"] == "bad_request"
    assert (await http.get("/c/q?mode=explode")).json()["code"] == "bad_request"


# -- Redis outage -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_redis_outage_is_503_json(redis_server):
    """With Redis gone, /health and adds answer 503 backend_unavailable quickly, as JSON."""
    from restmq.dispatch import Dispatcher
    from tests.conftest import make_engine, start_redis

    private = start_redis(tempfile.mkdtemp(prefix="restmq-http-gone-"))
    engine = await make_engine(private, timeout=0.5)
    port = _reactor().listenTCP(0, build_site(Dispatcher(engine)), interface="127.0.0.1")
    http = Client(f"http://127.0.0.1:{port.getHost().port}")
    try:
        assert (await http.get("/health")).status == 200
        private.process.terminate()
        private.process.wait(10)
        for method, path, data in (("GET", "/health", None), ("POST", "/q/q", {"value": "x"})):
            start = time.monotonic()
            reply = await http(method, path, data=data)
            assert time.monotonic() - start < 1.5
            assert reply.status == 503 and reply.json()["code"] == "backend_unavailable"
    finally:
        if private.process.poll() is None:
            private.process.terminate()
        await port.stopListening()
        await engine.stop()
        engine.redis.disconnect()


@pytest_twisted.ensureDeferred
async def test_static_comet_page_is_served_and_unknown_files_are_json_404(http):
    """The COMET example page is served from the server's origin; other names get the JSON 404."""
    page = await http.get("/static/comet.html")
    assert page.status == 200 and page.type == "text/html; charset=utf-8"
    assert b"/c/${encodeURIComponent(queue)}" in page.body
    missing = await http.get("/static/secret.txt")
    assert missing.status == 404 and missing.json()["code"] == "not_found"
    posted = await http.post("/static/comet.html", data={"x": "1"})
    assert posted.status == 405 and posted.json()["code"] == "bad_request"
