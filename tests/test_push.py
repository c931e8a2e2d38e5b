"""Push subscriptions (docs/push-and-schedules.md): messages POSTed to a Twisted receiver on port 0, with retries,
signatures, dead letters, timeouts, --push-allow, pause, concurrency, and real processes."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor, task, threads
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from restmq.dispatch import Dispatcher
from restmq.push import Pusher
from tests.conftest import fails, run
from tests.test_process import servers  # noqa: F401 - a fixture

ALLOW = ("http://127.0.0.1:",)


class Receiver(Resource):
    """An HTTP endpoint that records each POST and answers the next of ``codes`` (then ``default``);
    ``hold`` seconds before answering (None: never answers)."""

    isLeaf = True

    def __init__(
        self, codes: tuple[int, ...] = (), default: int = 200, hold: float | None = 0.0, hang: int = 0
    ) -> None:
        super().__init__()
        self.codes, self.default, self.hold, self.hang = list(codes), default, hold, hang
        self.requests: list[dict[str, Any]] = []
        self.open = 0
        self.most_open = 0

    def render_POST(self, request: Any) -> Any:
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append({"headers": headers, "body": request.content.read()})
        code = self.codes.pop(0) if self.codes else self.default
        if self.hold is None or len(self.requests) <= self.hang:
            return NOT_DONE_YET
        self.open += 1
        self.most_open = max(self.most_open, self.open)

        def answer() -> None:
            self.open -= 1
            if not request._disconnected:
                request.setResponseCode(code)
                request.write(b"thanks")
                request.finish()

        reactor.callLater(self.hold, answer)
        return NOT_DONE_YET


@pytest_twisted.async_yield_fixture
async def receiver_at() -> Any:
    """Start receivers on free loopback ports: ``receiver_at(receiver)`` answers its URL."""
    ports = []

    def start(receiver: Receiver) -> str:
        port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
        ports.append(port)
        return f"http://127.0.0.1:{port.getHost().port}/hook"

    yield start
    for port in ports:
        await port.stopListening()


@pytest_twisted.async_yield_fixture
async def pushers(engine: Any) -> Any:
    """Start delivering processes (Pushers) over the test engine: ``pushers(allow)``."""
    started: list[Pusher] = []

    def start(allow: tuple[str, ...] = ALLOW) -> Pusher:
        pusher = Pusher(engine, reactor, allow, poll=0.2)
        pusher.startService()
        started.append(pusher)
        return pusher

    yield start
    for pusher in started:
        await pusher.stopService()


@pytest.fixture
def pushing(engine: Any) -> Dispatcher:
    """A dispatcher of a server started with --push-allow http://127.0.0.1:."""
    return Dispatcher(engine, push_allow=ALLOW)


async def until(check: Callable[[], Any], timeout: float = 15.0) -> None:
    """Wait (polling the reactor) until ``check()`` is true."""
    deadline = time.monotonic() + timeout
    while not await _value(check()):
        assert time.monotonic() < deadline, "timed out waiting"
        await task.deferLater(reactor, 0.02, lambda: None)


async def _value(x: Any) -> Any:
    return await x if inspect.isawaitable(x) else x


async def empty(dispatcher: Dispatcher, queue: str) -> bool:
    length = await run(dispatcher, "len", queue=queue)
    return length["len"] == 0


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """docs/push-and-schedules.md's check: v1= hex HMAC-SHA256 of "<timestamp>.<body>" keyed with the secret."""
    expected = hmac.new(secret.encode(), headers["restmq-timestamp"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(headers["restmq-signature"], "v1=" + expected.hexdigest())


@pytest_twisted.ensureDeferred
async def test_500_twice_then_200_arrives_three_times_then_acked(pushing, receiver_at, pushers):
    """A receiver that answers 500, 500, then 200 gets the message three times (attempts 1, 2, 3),
    signed, and then the queue is empty and the subscription shows its last success and error."""
    receiver = Receiver(codes=(500, 500))
    url = receiver_at(receiver)
    await run(pushing, "push_set", queue="jobs", url=url, secret="s3cret", backoff=[0.05])
    added = await run(pushing, "add", queue="jobs", value={"order": 7})
    pusher = pushers()
    await until(lambda: len(receiver.requests) >= 3)
    await until(lambda: empty(pushing, "jobs"))
    assert [r["headers"]["restmq-attempt"] for r in receiver.requests] == ["1", "2", "3"]
    for r in receiver.requests:
        h = r["headers"]
        assert h["restmq-queue"] == "jobs" and h["restmq-key"] == added["key"]
        assert h["content-type"] == "application/json"
        assert json.loads(r["body"]) == {"order": 7}
        assert abs(int(h["restmq-timestamp"]) - time.time()) < 300
        assert verify("s3cret", h, r["body"])
        assert not verify("other", h, r["body"])
    state = await run(pushing, "push_get", queue="jobs")
    assert state["pushed"] == 1 and state["failed"] == 2 and state["in_flight"] == 0
    assert state["last_success"] and "HTTP 500" in state["last_error"]
    assert state["secret"] == "***"
    stats = await run(pushing, "stats", queue="jobs")
    assert stats["push"]["last_success"] == state["last_success"]
    assert stats["counters"]["acked"] == 1
    from restmq.frontends.http.metrics import Snapshot, render

    text = render(Snapshot(push=pusher.metrics)).decode()
    assert 'restmq_push_delivered_total{queue="jobs"} 1.0' in text
    assert 'restmq_push_failed_total{queue="jobs",reason="http_5xx"} 2.0' in text
    assert 'restmq_push_seconds_count{outcome="failed",queue="jobs"} 2.0' in text


@pytest_twisted.ensureDeferred
async def test_text_values_go_as_utf8_text_without_signature_when_no_secret(pushing, receiver_at, pushers):
    """A text message arrives as text/plain; charset=utf-8, unsigned when the subscription has no secret."""
    receiver = Receiver()
    await run(pushing, "push_set", queue="t", url=receiver_at(receiver))
    await run(pushing, "add", queue="t", value="héllo")
    pushers()
    await until(lambda: empty(pushing, "t"))
    (only,) = receiver.requests
    assert only["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert only["body"] == "héllo".encode()
    assert "restmq-signature" not in only["headers"]


@pytest_twisted.ensureDeferred
async def test_always_failing_receiver_dead_letters_with_last_status(pushing, receiver_at, pushers):
    """A receiver that always answers 503: after max_attempts the message is in <q>.dead with the status."""
    receiver = Receiver(default=503)
    await run(pushing, "config", queue="d", max_attempts=3)
    await run(pushing, "push_set", queue="d", url=receiver_at(receiver), backoff=[0.01, 0.05])
    await run(pushing, "add", queue="d", value=[1, 2])
    pushers()
    await until(lambda: _dead(pushing, "d"))
    assert len(receiver.requests) == 3
    dead = await run(pushing, "peek", queue="d", state="dead")
    assert "HTTP 503" in dead["error"] and dead["attempts"] == 3


async def _reserved(dispatcher: Dispatcher, queue: str, n: int) -> bool:
    return (await run(dispatcher, "len", queue=queue))["reserved"] == n


async def _dead(dispatcher: Dispatcher, queue: str) -> bool:
    return (await run(dispatcher, "len", queue=queue))["dead"] == 1


@pytest_twisted.ensureDeferred
async def test_timeout_is_honoured(pushing, receiver_at, pushers):
    """A receiver that never answers: the push gives up after its timeout and records why."""
    receiver = Receiver(hold=None)
    await run(pushing, "config", queue="slow", max_attempts=1)
    await run(pushing, "push_set", queue="slow", url=receiver_at(receiver), timeout=0.3)
    await run(pushing, "add", queue="slow", value="x")
    pushers()
    await until(lambda: _dead(pushing, "slow"))
    dead = await run(pushing, "peek", queue="slow", state="dead")
    assert dead["error"].startswith("timeout")
    assert len(receiver.requests) == 1


@pytest_twisted.ensureDeferred
async def test_push_allow_refuses_at_set_and_at_delivery(engine, pushing, receiver_at, pushers):
    """Without --push-allow push is off; a URL outside it is refused when set, and a subscription
    whose URL the delivering server does not allow is never POSTed (the message fails instead)."""
    off = Dispatcher(engine)
    error = await fails(off, "bad_request", "push_set", queue="a", url="http://127.0.0.1:1/")
    assert "--push-allow" in error.message
    error = await fails(pushing, "bad_request", "push_set", queue="a", url="http://example.org/")
    assert "outside --push-allow" in error.message
    receiver = Receiver()
    await run(pushing, "config", queue="a", max_attempts=1)
    await run(pushing, "push_set", queue="a", url=receiver_at(receiver))
    await run(pushing, "add", queue="a", value=1)
    pushers(("https://hooks.example.org/",))
    await until(lambda: _dead(pushing, "a"))
    dead = await run(pushing, "peek", queue="a", state="dead")
    assert "outside --push-allow" in dead["error"]
    assert receiver.requests == []


@pytest_twisted.ensureDeferred
async def test_paused_queue_pushes_nothing_until_resumed(pushing, receiver_at, pushers):
    """While the queue is paused nothing is pushed; resuming delivers at once."""
    receiver = Receiver()
    await run(pushing, "push_set", queue="p", url=receiver_at(receiver))
    await run(pushing, "pause", queue="p")
    await run(pushing, "add", queue="p", value=1)
    pushers()
    await task.deferLater(reactor, 0.6, lambda: None)
    assert receiver.requests == []
    await run(pushing, "resume", queue="p")
    await until(lambda: empty(pushing, "p"))
    assert len(receiver.requests) == 1


@pytest_twisted.ensureDeferred
async def test_concurrency_caps_requests_in_flight_across_processes(pushing, receiver_at, pushers):
    """Two delivering processes, concurrency 2: never more than 2 requests at the receiver at once."""
    receiver = Receiver(hold=0.1)
    await run(pushing, "push_set", queue="c", url=receiver_at(receiver), concurrency=2)
    await run(pushing, "add_many", queue="c", messages=list(range(12)))
    pushers()
    pushers()
    await until(lambda: empty(pushing, "c"))
    assert len(receiver.requests) == 12
    assert receiver.most_open == 2


@pytest_twisted.ensureDeferred
async def test_removing_the_subscription_stops_new_deliveries(pushing, receiver_at, pushers):
    """push_rm while one push is in flight: that one finishes (acked), the next is never pushed."""
    receiver = Receiver(hold=0.5)
    await run(pushing, "push_set", queue="r", url=receiver_at(receiver), concurrency=1)
    await run(pushing, "add_many", queue="r", messages=["one", "two"])
    pushers()
    await until(lambda: len(receiver.requests) == 1)
    assert (await run(pushing, "push_rm", queue="r")) == {"queue": "r", "removed": True}
    await until(lambda: _reserved(pushing, "r", 0))
    await task.deferLater(reactor, 0.5, lambda: None)
    length = await run(pushing, "len", queue="r")
    assert (length["ready"], length["len"]) == (1, 1)
    assert len(receiver.requests) == 1
    await fails(pushing, "not_found", "push_get", queue="r")


@pytest_twisted.ensureDeferred
async def test_http_routes_set_show_and_remove_with_clear_400s(engine, receiver_at):
    """PUT/GET/DELETE /q/<q>/push over HTTP: the secret is redacted, bad input is a clear 400."""
    from restmq.frontends.http.routes import build_site

    port = reactor.listenTCP(0, build_site(Dispatcher(engine, push_allow=ALLOW), reactor=reactor),
                             interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}/q/h/push"
    try:
        bad = [
            {}, {"url": "ftp://127.0.0.1:1/"}, {"url": "not a url"}, {"url": "http://127.0.0.1:1/", "backoff": [0]},
            {"url": "http://127.0.0.1:1/", "backoff": "x"}, {"url": "http://127.0.0.1:1/", "backoff": []},
            {"url": "http://127.0.0.1:1/", "concurrency": 0}, {"url": "http://127.0.0.1:1/", "timeout": -1},
            {"url": "http://u:p@127.0.0.1:1/"}, {"url": "http://127.0.0.1:1/", "colour": "red"},
        ]
        for body in bad:
            answer = await treq.put(base, json=body, persistent=False)
            got = json.loads(await answer.content())
            assert answer.code == 400 and got["code"] == "bad_request" and got["error"], (body, got)
        url = receiver_at(Receiver())
        answer = await treq.put(base, json={"url": url, "secret": "k", "backoff": [2, 10]}, persistent=False)
        assert answer.code == 200
        shown = json.loads(await (await treq.get(base, persistent=False)).content())
        assert shown["url"] == url and shown["secret"] == "***" and shown["backoff"] == [2, 10]
        assert (shown["timeout"], shown["concurrency"]) == (10.0, 4)
        answer = await treq.delete(base, persistent=False)
        assert json.loads(await answer.content())["removed"] is True
        assert (await treq.get(base, persistent=False)).code == 404
        answer = await treq.put(base, data={"url": url, "backoff": "2,10", "concurrency": "2"}, persistent=False)
        shown = json.loads(await answer.content())
        assert answer.code == 200 and (shown["backoff"], shown["concurrency"], shown["secret"]) == ([2, 10], 2, None)
    finally:
        await port.stopListening()


# -- real processes --------------------------------------------------------------------------------


def start_server(tmp_path: Any, servers: list[Any], redis_url: str, name: str) -> Any:
    """A `restmq serve` on the shared test Redis with --push-allow for loopback (blocking: run it
    in a thread)."""
    from tests.test_process import Server, serve_argv

    server = Server(serve_argv(tmp_path / name, "--line", "none", "--redis", redis_url,
                               "--push-allow", "http://127.0.0.1:"), cwd=tmp_path)
    servers.append(server)
    server.wait_for("engine ready")
    while "http" not in server.addresses:
        server.wait_for("listening")
    return server


async def started(tmp_path: Any, servers: list[Any], redis: Any, name: str) -> Any:
    return await threads.deferToThread(start_server, tmp_path, servers, redis.url, name)


async def call(server: Any, method: str, path: str, body: Any = None) -> Any:
    answer = await treq.request(method, server.url(path), json=body, persistent=False)
    return json.loads(await answer.content())


async def drained(server: Any, queue: str) -> bool:
    return (await call(server, "GET", f"/stats/{queue}"))["len"] == 0


@pytest_twisted.ensureDeferred
async def test_kill_9_mid_push_pushes_again_after_the_lease(tmp_path, servers, redis, receiver_at):
    """The delivering RestMQ is killed with SIGKILL while its POST is in flight: after the lease
    another RestMQ pushes the message again (attempt 2), and it is acked, never lost."""
    receiver = Receiver(hang=1)
    url = receiver_at(receiver)
    first = await started(tmp_path, servers, redis, "a")
    await call(first, "PUT", "/q/k/config", {"lease": 1})
    await call(first, "PUT", "/q/k/push", {"url": url, "timeout": 2})
    added = await call(first, "POST", "/q/k", {"value": {"n": 1}})
    await until(lambda: len(receiver.requests) == 1)
    first.proc.send_signal(signal.SIGKILL)
    await threads.deferToThread(first.proc.wait, 10)
    second = await started(tmp_path, servers, redis, "b")
    await until(lambda: drained(second, "k"), timeout=30)
    assert [r["headers"]["restmq-attempt"] for r in receiver.requests] == ["1", "2"]
    assert {r["headers"]["restmq-key"] for r in receiver.requests} == {added["key"]}
    assert (await call(second, "GET", "/stats/k"))["counters"]["acked"] == 1


@pytest_twisted.ensureDeferred
async def test_two_processes_push_each_message_once(tmp_path, servers, redis, receiver_at):
    """Two RestMQ processes deliver one queue: each message reaches the receiver exactly once."""
    receiver = Receiver(hold=0.01)
    url = receiver_at(receiver)
    one, two = await defer.gatherResults([
        defer.ensureDeferred(started(tmp_path, servers, redis, name)) for name in ("one", "two")
    ])
    await call(one, "PUT", "/q/two/push", {"url": url, "concurrency": 8})
    added = await call(two, "POST", "/q/two", {"messages": list(range(60))})
    await until(lambda: drained(one, "two"), timeout=30)
    keys = Counter(r["headers"]["restmq-key"] for r in receiver.requests)
    assert set(keys) == set(added["keys"]) and max(keys.values()) == 1


@pytest_twisted.ensureDeferred
async def test_cli_push_set_get_rm(tmp_path, servers, redis, receiver_at):
    """`restmq push set|get|rm` manage the subscription; `restmq push QUEUE VALUE` still adds."""
    server = await started(tmp_path, servers, redis, "cli")
    url = receiver_at(Receiver())

    def cli(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "restmq.cli", *words, "--url", server.url()],
                              capture_output=True, text=True, timeout=30)

    done = await threads.deferToThread(cli, "push", "set", "c", url, "--secret", "k", "--backoff", "1,2")
    assert done.returncode == 0, done.stderr
    shown = await threads.deferToThread(cli, "push", "get", "c", "--json")
    got = json.loads(shown.stdout)
    assert (got["url"], got["secret"], got["backoff"]) == (url, "***", [1, 2])
    refused = await threads.deferToThread(cli, "push", "set", "c", "http://example.org/")
    assert refused.returncode == 3 and "--push-allow" in refused.stderr
    assert (await threads.deferToThread(cli, "push", "rm", "c")).returncode == 0
    assert (await threads.deferToThread(cli, "push", "get", "c")).returncode == 3
    added = await threads.deferToThread(cli, "push", "c", "hello")
    assert added.returncode == 0 and added.stdout.startswith("c:")


@pytest_twisted.ensureDeferred
async def test_stopping_mid_push_cuts_the_request_and_gives_the_message_back(pushing, receiver_at, pushers):
    """A RestMQ that stops while a receiver hangs waits its grace, then nacks the message ("stopped")."""
    receiver = Receiver(hold=None)
    await run(pushing, "push_set", queue="s", url=receiver_at(receiver), timeout=60, backoff=[0.01])
    await run(pushing, "add", queue="s", value=1)
    pusher = pushers()
    pusher.STOP_GRACE = 0.2
    await until(lambda: len(receiver.requests) == 1)
    await pusher.stopService()
    await until(lambda: run(pushing, "peek", queue="s", count=1))
    message = await run(pushing, "peek", queue="s")
    assert message["attempts"] == 1 and message["error"].startswith("restmq stopped")


@pytest_twisted.ensureDeferred
async def test_a_delayed_nack_comes_back_after_its_delay_not_its_lease(pushing):
    """A message reserved for an hour and nacked with a short delay is ready again after the delay
    with nobody touching the queue (the sweeper's timer follows the nack, which push retries use)."""
    await run(pushing, "add", queue="n", value=1)
    got = await run(pushing, "reserve", queue="n", lease=3600)
    await run(pushing, "nack", queue="n", receipt=got["receipt"], delay=0.05)
    await until(lambda: run(pushing, "peek", queue="n", count=1))


def test_push_allow_option_and_subscription_arguments_are_checked():
    """--push-allow takes http(s) prefixes; push_set's url and backoff are refused with a reason."""
    from restmq.commands import COMMANDS, parse
    from restmq.errors import BadRequest
    from restmq.options import url_prefixes
    from restmq.push import encode_body, signature

    assert url_prefixes("http://127.0.0.1:, https://hooks.example.org/") == (
        "http://127.0.0.1:", "https://hooks.example.org/")
    assert url_prefixes("") == ()
    for bad in ("ftp://x/", "hooks.example.org", "http://a b/"):
        with pytest.raises(ValueError, match="--push-allow"):
            url_prefixes(bad)
    command = COMMANDS["push_set"]
    parsed = parse(command, {"queue": "q", "url": "https://h.example/x?y=1", "backoff": "1, 2.5"})
    assert parsed["backoff"] == (1.0, 2.5) and parsed["concurrency"] == 4 and parsed["timeout"] == 10.0
    assert parse(command, {"queue": "q", "url": "http://h/"})["backoff"] == (1.0, 5.0, 30.0, 120.0)
    for bad, why in (({"url": "http://h/#f"}, "fragment"), ({"url": "http://h:0/"}, "port 0"),
                     ({"url": "http://h:99999/"}, "not a valid URL"), ({"url": "http:///p"}, "with a host"),
                     ({"url": "http://h/", "backoff": [1, -1]}, "at least 0"),
                     ({"url": "http://h/", "backoff": [True]}, "seconds"),
                     ({"url": "http://h/", "backoff": list(range(1, 30))}, "1 to 20")):
        with pytest.raises(BadRequest, match=why):
            parse(command, {"queue": "q", **bad})
    assert encode_body(b'"caf\\u00e9"') == ("café".encode(), b"text/plain; charset=utf-8")
    assert encode_body(b"[1]") == (b"[1]", b"application/json")
    assert signature("k", "1700000000", b"{}") == "v1=" + hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()


@pytest_twisted.ensureDeferred
async def test_setting_a_subscription_needs_admin_and_reading_it_needs_read(engine, tmp_path):
    """A token with read and write on a queue may read its subscription but not set or remove it."""
    from restmq.auth import Tokens

    path = tmp_path / "tokens"
    path.write_text("admin-t admin *\nworker-t read,write jobs\n")
    tokens = Tokens(str(path))
    guarded = Dispatcher(engine, push_allow=ALLOW, authorize=tokens.authorize)
    args = {"queue": "jobs", "url": "http://127.0.0.1:1/hook", "secret": "s3cret-value"}
    for name in ("push_set", "push_rm"):
        with pytest.raises(Exception) as refused:
            await guarded.execute(name, args if name == "push_set" else {"queue": "jobs"}, "worker-t")
        assert getattr(refused.value, "code", None) == "forbidden"
    await guarded.execute("push_set", args, "admin-t")
    shown = await guarded.execute("push_get", {"queue": "jobs"}, "worker-t")
    assert shown["secret"] == "***" and "s3cret-value" not in json.dumps(shown)


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")  # Twisted's ssl: endpoint
@pytest_twisted.ensureDeferred
async def test_redirects_are_not_followed_and_https_checks_certificates(engine, receiver_at, pushers, tmp_path):
    """A 302 is a failure (its Location is never requested); an https receiver with a certificate
    the system does not trust is never sent the message (the failure says tls)."""
    from twisted.internet.endpoints import serverFromString

    from tests.test_tls import make_cert

    allow = (*ALLOW, "https://127.0.0.1:")
    pushing = Dispatcher(engine, push_allow=allow)
    target = Receiver()
    elsewhere = receiver_at(target)

    class Redirecting(Receiver):
        def render_POST(self, request: Any) -> Any:
            self.requests.append({"headers": {}, "body": request.content.read()})
            request.setResponseCode(302)
            request.setHeader(b"location", elsewhere.encode())
            return b""

    redirecting = Redirecting()
    await run(pushing, "config", queue="r3", max_attempts=1)
    await run(pushing, "push_set", queue="r3", url=receiver_at(redirecting))
    cert, key = make_cert(tmp_path)
    secure = Receiver()
    port = await serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}").listen(Site(secure))
    try:
        await run(pushing, "config", queue="tls", max_attempts=1)
        await run(pushing, "push_set", queue="tls", url=f"https://127.0.0.1:{port.getHost().port}/hook")
        await run(pushing, "add", queue="r3", value=1)
        await run(pushing, "add", queue="tls", value=1)
        pusher = pushers(allow)
        await until(lambda: _dead(pushing, "r3"))
        await until(lambda: _dead(pushing, "tls"))
    finally:
        await port.stopListening()
    assert "HTTP 302" in (await run(pushing, "peek", queue="r3", state="dead"))["error"]
    assert len(redirecting.requests) == 1 and target.requests == []
    assert (await run(pushing, "peek", queue="tls", state="dead"))["error"].startswith("tls")
    assert secure.requests == []
    assert pusher.metrics.failed[("tls", "tls")] == 1 and pusher.metrics.failed[("r3", "http_3xx")] == 1
