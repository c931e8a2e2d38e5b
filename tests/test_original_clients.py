"""The original RestMQ's clients, unchanged: the exact requests its dashboard (jQuery 1.7.1), its
curl script (examples/test_rest.sh), its Python examples and collectd send, byte for byte, and the
answer shapes they parse. Also: two daemons started the original way side by side, and the message
size limit counting the message itself."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.conftest import free_port, run
from tests.test_http import http  # noqa: F401  (fixture)
from tests.test_process import BIN, Server, servers  # noqa: F401  (fixture)
from tests.test_process import http as blocking_http
from tests.test_ws import until

#: What jQuery 1.7.1 sends with every XHR, and with a form body (``$.post(url, {…})``).
JQUERY_XHR = {"Accept": "*/*", "X-Requested-With": "XMLHttpRequest"}
JQUERY_FORM = "application/x-www-form-urlencoded; charset=UTF-8"
#: ``$.getJSON(url + "?callback=?")``: jQuery names the callback and adds a cache buster.
JQUERY_JSONP_ACCEPT = ("text/javascript, application/javascript, application/ecmascript, "
                       "application/x-ecmascript, */*; q=0.01")
CURL = {"User-Agent": "curl/7.88.1", "Accept": "*/*"}


class Answer:
    """A raw HTTP answer: status, lower-case headers, body (Content-Length or until close)."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json; charset=utf-8", self.headers
        assert self.body.endswith(b"\r\n")
        return json.loads(self.body)


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


async def send(port: int, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Answer:
    """Send exactly this request (the target as written, ``?`` and all) and read the whole answer."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    return Answer(await threads.deferToThread(_exchange, port, raw))


def port_of(http: Any) -> int:  # noqa: F811
    return int(http.base.rsplit(":", 1)[1])


def curl_form(data: str) -> tuple[dict[str, str], bytes]:
    """``curl -X POST -d DATA``: the data as given, labelled as a form."""
    return {**CURL, "Content-Type": "application/x-www-form-urlencoded"}, data.encode()


# -- the original dashboard (static/index.html, jQuery 1.7.1) -------------------------------------------


@pytest_twisted.ensureDeferred
async def test_dashboard_pause_and_play_post_with_the_literal_callback_placeholder(http):  # noqa: F811
    """$.post("/control/"+q+"?callback=?", {status: "stop"|"start"}) changes the state and answers 200 JSON {"stat": {queue, status}}."""
    port = port_of(http)
    for queue in ("test", "user@example.org"):
        await http.post(f"/q/{queue}", data={"value": "x"})
        for status, running in (("stop", 0), ("start", 1), ("stop", 0)):
            answer = await send(port, "POST", f"/control/{queue}?callback=?",
                                {**JQUERY_XHR, "Content-Type": JQUERY_FORM}, urlencode({"status": status}).encode())
            assert answer.status == 200
            assert answer.json()["stat"] == {"queue": queue, "status": running}
            state = (await send(port, "GET", f"/control/{queue}", CURL)).json()
            assert state["status"] == {"queue": queue, "status": running}


@pytest_twisted.ensureDeferred
async def test_dashboard_stats_jsonp_as_jquery_sends_it(http):  # noqa: F811
    """$.getJSON('/stats/?callback=?') gets callback(<json>); with redis, count and each queue's name, len, status and policy."""
    port = port_of(http)
    await http.post("/q/test", data={"value": "x"})
    await http.post("/q/fila-a%C3%A7%C3%A3o", data={"value": "y"})
    await send(port, "POST", "/control/test?callback=?", {**JQUERY_XHR, "Content-Type": JQUERY_FORM}, b"status=stop")
    callback = "jQuery17104907366463541985_1700000000000"
    answer = await send(port, "GET", f"/stats/?callback={callback}&_=1700000000001",
                        {"Accept": JQUERY_JSONP_ACCEPT, "X-Requested-With": "XMLHttpRequest"})
    assert answer.status == 200 and answer.headers["content-type"] == "application/javascript; charset=utf-8"
    assert answer.body.startswith(callback.encode() + b"(") and answer.body.endswith(b");\r\n")
    data = json.loads(answer.body[len(callback) + 1: -4])
    assert isinstance(data["redis"], str) and data["count"] == 2
    test = data["queues"]["test"]
    assert (test["name"], test["len"], test["status"], test["policy"]) == ("test", 1, 0, 1)
    assert data["queues"]["fila-ação"]["status"] == 1


# -- examples/test_rest.sh (curl) ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_original_curl_script(http):  # noqa: F811
    """Each request of examples/test_rest.sh answers what the script shows: keys as text, JSON shapes with the original fields."""
    port = port_of(http)
    added = await send(port, "POST", "/", *curl_form("queue=test&value=foobar"))
    assert (added.status, added.headers["content-type"], added.body) == (200, "text/plain; charset=utf-8", b"test:1\r\n")
    got = (await send(port, "POST", "/queue", *curl_form('body={"cmd":"get", "queue":"test"}'))).json()
    assert {k: got[k] for k in ("queue", "value", "key", "count")} == {
        "queue": "test", "value": "foobar", "key": "test:1", "count": 1}
    assert (await send(port, "POST", "/q/test", *curl_form("value=foobar"))).body == b"test:2\r\n"
    taken = (await send(port, "GET", "/q/test", CURL)).json()
    assert (taken["key"], taken["value"], taken["count"]) == ("test:1", "foobar", 0)

    assert (await send(port, "GET", "/control/test", CURL)).json()["status"] == {"queue": "test", "status": 1}
    stopped = (await send(port, "POST", "/control/test", *curl_form("status=stop"))).json()
    assert stopped["stat"] == {"queue": "test", "status": 0}
    assert (await send(port, "GET", "/control/test", CURL)).json()["status"] == {"queue": "test", "status": 0}
    (await send(port, "POST", "/control/test", *curl_form("status=start"))).json()
    assert (await send(port, "GET", "/control/test", CURL)).json()["status"]["status"] == 1
    purged = (await send(port, "DELETE", "/q/test", CURL)).json()
    assert (purged["queue"], purged["status"]) == ("test", 1)

    assert (await send(port, "GET", "/p/test", CURL)).json()["value"] == "broadcast"
    for policy in ("roundrobin", "broadcast"):
        changed = await send(port, "POST", "/p/test", *curl_form(f"policy={policy}"))
        assert changed.status == 200 and changed.json()["value"] == policy
        assert (await send(port, "GET", "/p/test", CURL)).json() == {"queue": "test", "value": policy, "policy": policy}


@pytest_twisted.ensureDeferred
async def test_root_take_redirect_and_the_jobs_page(http):  # noqa: F811
    """GET /?queue=q takes {key, value, count: 0} (404 when empty), GET / redirects to the dashboard, /j/<q> is an HTML page."""
    port = port_of(http)
    await send(port, "POST", "/", *curl_form("queue=jobs&msg=one"))
    await send(port, "POST", "/", *curl_form("queue=jobs&value=two"))
    page = await send(port, "GET", "/j/jobs", CURL)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html") and b"two" in page.body
    taken = (await send(port, "GET", "/?queue=jobs", CURL)).json()
    assert (taken["key"], taken["value"], taken["count"]) == ("jobs:1", "one", 0)
    await send(port, "GET", "/?queue=jobs", CURL)
    assert (await send(port, "GET", "/?queue=jobs", CURL)).status == 404
    redirect = await send(port, "GET", "/", CURL)
    assert redirect.status == 302 and redirect.headers["location"] == "/dashboard"


@pytest_twisted.ensureDeferred
async def test_the_python_requests_example(http):  # noqa: F811
    """examples/test_request.py: requests.post("/q/test", data={'value': 'el requesto'}) prints the key."""
    headers = {"User-Agent": "python-requests/2.31.0", "Accept-Encoding": "gzip, deflate", "Accept": "*/*",
               "Content-Type": "application/x-www-form-urlencoded"}
    answer = await send(port_of(http), "POST", "/q/test", headers, b"value=el+requesto")
    assert (answer.status, answer.body) == (200, b"test:1\r\n")
    assert (await http.get("/q/test")).json()["value"] == "el requesto"


def _comet_lines(port: int, request: bytes, want: int) -> list[bytes]:
    """Send a COMET request with a raw socket and answer the first ``want`` lines of its body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while data.partition(b"\r\n\r\n")[2].count(b"\r\n") < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), head
    return body.split(b"\r\n")[:want]


@pytest_twisted.ensureDeferred
async def test_the_mapreduce_producer_and_its_comet_consumer(http, engine):  # noqa: F811
    """map.py's urllib2 POST / of queue=…&value=<json> reaches reduce.py's HTTP/1.0 downloadPage of /c/<q> as lines whose value is that JSON text."""
    port = port_of(http)
    comet = threads.deferToThread(
        _comet_lines, port, b"GET /c/reducer HTTP/1.0\r\nHost: localhost:8888\r\nUser-Agent: Twisted PageGetter\r\n\r\n", 2)
    await until(lambda: engine.hub.subscribers("reducer") == 1)
    words = [{"word": "queue", "count": 2}, {"word": "fila", "count": 1}]
    urllib2 = {"Accept-Encoding": "identity", "User-Agent": "Python-urllib/2.7",
               "Content-Type": "application/x-www-form-urlencoded"}
    for msg in words:
        body = urlencode({"queue": "reducer", "value": json.dumps(msg)}).encode()
        answer = await send(port, "POST", "/", urllib2, body)
        assert answer.status == 200 and answer.body.endswith(b"\r\n")
    lines = await comet
    packets = [json.loads(line) for line in lines]  # reduce.py: json.loads(line), then json.loads(v['value'])
    assert [json.loads(p["value"]) for p in packets] == words
    assert [p["key"] for p in packets] == ["reducer:1", "reducer:2"]


# -- collectd (docs/README.collectd, examples/test_collectd.py) ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_collectd_plain_text_is_one_message_in_the_original_shape(http, dispatcher):  # noqa: F811
    """write_http's Format Command POST stores ONE text message: the JSON list of {host, plugin_instance, type_instance, interval, value} strings."""
    body = (b"PUTVAL collectd_restmq_server/df/df-boot interval=10 1288548767:116497408.000000:391246848.000000\r\n"
            b"PUTVAL \"collectd_restmq_server/cpu-0/cpu-idle\" interval=10.000 1288548767:98\r\n")
    answer = await send(port_of(http), "POST", "/collectd/data",
                        {"User-Agent": "collectd/5.12", "Accept": "*/*", "Content-Type": "text/plain"}, body)
    assert (answer.status, answer.body) == (200, b"collectd_data:1\r\n")
    [message] = await run(dispatcher, "take", queue="collectd_data", count=10)
    assert isinstance(message["value"], str)  # the original stored text; its consumers json.loads it
    assert json.loads(message["value"]) == [
        {"host": "collectd_restmq_server", "plugin_instance": "df", "type_instance": "df-boot", "interval": "10",
         "value": "1288548767:116497408.000000:391246848.000000"},
        {"host": "collectd_restmq_server", "plugin_instance": "cpu-0", "type_instance": "cpu-idle",
         "interval": "10.000", "value": "1288548767:98"},
    ]


@pytest_twisted.ensureDeferred
async def test_collectd_json_bodies_are_stored_verbatim(http, dispatcher):  # noqa: F811
    """An application/json body (write_http's Format JSON, or any JSON) is one message holding the body's text as sent."""
    body = (b'[{"values":[1.16497e+08,3.91247e+08],"time":1288625884,"interval":10,'
            b'"host":"collectd_restmq_server","plugin":"df","plugin_instance":"","type":"df","type_instance":"boot"}]')
    other = b'{"anything": ["goes", 1, null]}\n'
    scalar = b'"any JSON value"'
    for sent in (body, other, scalar):
        answer = await send(port_of(http), "POST", "/collectd/data", {"Content-Type": "application/json"}, sent)
        assert answer.status == 200
    messages = await run(dispatcher, "take", queue="collectd_data", count=10)
    assert [m["value"] for m in messages] == [body.decode(), other.decode(), scalar.decode()]
    broken = await send(port_of(http), "POST", "/collectd/data", {"Content-Type": "application/json"}, b"[1,")
    assert broken.status == 400 and broken.json()["code"] == "bad_request"


@pytest_twisted.ensureDeferred
async def test_collectd_event_from_the_notification_script(http, dispatcher):  # noqa: F811
    """curl -X POST -d "$EVENT" /collectd/event stores the headers as one-field objects and appends {"event_text": …}."""
    event = ("Severity: WARNING\nTime: 1288548727\nHost: collectd_restmq_server\nPlugin: df\nType: df\n"
             "TypeInstance: boot\nDataSource: used\nCurrentValue: 1.164974e+08\n\n"
             "Host collectd_restmq_server, plugin df type df (instance boot): Data source \"used\" is currently "
             "116497408.000000.")
    answer = await send(port_of(http), "POST", "/collectd/event", *curl_form(event))
    assert (answer.status, answer.body) == (200, b"collectd_event:1\r\n")
    [message] = await run(dispatcher, "take", queue="collectd_event", count=10)
    assert json.loads(message["value"]) == [
        {"severity": "WARNING"}, {"time": "1288548727"}, {"host": "collectd_restmq_server"}, {"plugin": "df"},
        {"type": "df"}, {"typeinstance": "boot"}, {"datasource": "used"}, {"currentvalue": "1.164974e+08"},
        {"event_text": event.split("\n\n", 1)[1]},
    ]


@pytest_twisted.ensureDeferred
async def test_collectd_form_parameter(http, dispatcher):  # noqa: F811
    """?form=records keeps one record per value list; ?form=original is the default; any other form is a 400."""
    port = port_of(http)
    line = b"PUTVAL h/cpu-0/cpu-idle interval=10 1:1 2:2\n"
    answer = await send(port, "POST", "/collectd/data?form=records", {"Content-Type": "text/plain"}, line)
    assert answer.json() == {"queue": "collectd_data", "keys": ["collectd_data:1", "collectd_data:2"]}
    answer = await send(port, "POST", "/collectd/data?form=original", {"Content-Type": "text/plain"}, line)
    assert answer.body == b"collectd_data:3\r\n"
    json_answer = await send(port, "POST", "/collectd/data", {"Content-Type": "text/plain", "Accept": "application/json"}, line)
    assert json_answer.status == 201 and json_answer.json()["key"] == "collectd_data:4"
    bad = await send(port, "POST", "/collectd/data?form=lines", {"Content-Type": "text/plain"}, line)
    assert bad.status == 400 and "form must be original or records" in bad.json()["error"]
    putnotif = b"PUTNOTIF severity=okay time=1 message=fine"
    bad = await send(port, "POST", "/collectd/event", {"Content-Type": "text/plain"}, putnotif)
    assert bad.status == 400 and "?form=records" in bad.json()["error"]
    answer = await send(port, "POST", "/collectd/event?form=records", {"Content-Type": "text/plain"}, putnotif)
    assert answer.json() == {"queue": "collectd_event", "keys": ["collectd_event:1"]}
    values = [m["value"] for m in await run(dispatcher, "take", queue="collectd_data", count=10)]
    assert isinstance(values[0], dict) and values[0]["values"] == [1]
    assert [item["value"] for item in json.loads(values[2])] == ["1:1", "2:2"]


@pytest.mark.skipif(not shutil.which("collectd"), reason="collectd (apt-get install collectd-core) is not installed")
@pytest_twisted.ensureDeferred
async def test_a_real_collectd_at_the_original_paths_stores_the_original_messages(site_url, dispatcher, tmp_path):
    """A real collectd's write_http posts (Command and JSON) each become one text message: PUTVAL items, or the JSON as sent."""
    from tests.test_collectd import run_collectd

    await run_collectd(site_url, dispatcher, tmp_path, "")
    texts = [m["value"] for m in await run(dispatcher, "take", queue="collectd_data", count=10)]
    assert all(isinstance(text, str) for text in texts)
    lists = [json.loads(text) for text in texts]
    command = [items for items in lists if "plugin_instance" in items[0] and "plugin" not in items[0]]
    [[item]] = command  # the Command node: one PUTVAL line, the original's item
    assert (item["host"], item["plugin_instance"], item["type_instance"]) == ("restmq-test", "exec-app", "gauge-queue_depth")
    assert float(item["interval"]) == 60 and item["value"].endswith(":42")
    [[sent]] = [items for items in lists if items not in command]  # the JSON node, verbatim
    assert (sent["plugin"], sent["values"]) == ("exec", [42])
    [event] = await run(dispatcher, "take", queue="collectd_event", count=10)
    assert "queue depth is 42" in event["value"] and json.loads(event["value"])


# -- --max-message-size counts the message --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_message_of_quotes_under_the_limit_is_accepted(http):  # noqa: F811
    """600,000 '"' (600,000 bytes, 1.2 MB as a JSON string) are accepted as a form and as JSON; 1,100,000 bytes are 413 too_large."""
    quotes = '"' * 600_000
    form = await http.post("/q/big", data=urlencode({"value": quotes}).encode(),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (form.status, form.body) == (200, b"big:1\r\n")
    as_json = await http.post("/q/big", json_body={"value": quotes})
    assert as_json.status == 201
    assert [(await http.get("/q/big")).json()["value"] for _ in "12"] == [quotes, quotes]
    over = "x" * 1_100_000
    refused = await http.post("/q/big", data=urlencode({"value": over}).encode(),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert refused.status == 413 and refused.json()["code"] == "too_large"
    refused = await http.post("/q/big", json_body={"value": over})
    assert refused.status == 413 and refused.json()["code"] == "too_large"
    assert (await http.get("/q/big")).status == 204


@pytest_twisted.ensureDeferred
async def test_a_json_value_counts_its_compact_encoding(dispatcher):
    """A JSON value counts its compact JSON: a list just under the limit is accepted, one byte more is too_large."""
    from tests.conftest import fails

    small = type(dispatcher)(dispatcher.engine, max_message_size=100)
    value = ["x" * 94]  # ["xxx…"]: 94 + 4 = 98 bytes
    assert (await run(small, "add", queue="j", value=value))["key"] == "j:1"
    await fails(small, "too_large", "add", queue="j", value=["x" * 97])  # 101 bytes
    assert (await run(small, "add", queue="j", value="é" * 50))["key"] == "j:2"  # 100 bytes of UTF-8
    await fails(small, "too_large", "add", queue="j", value="é" * 50 + "x")


# -- one daemon per core, each started with only --port ---------------------------------------------------


def test_two_daemons_started_the_original_way_run_side_by_side(tmp_path, servers, redis):  # noqa: F811
    """restmq serve --port A and twistd restmq --port B with the original start script's Redis options both start (no line listener) and share the queues."""
    first_port, second_port = free_port(), free_port()
    original = ["--redis-host", redis.host, "--redis-port", str(redis.port), "--redis-pool", "10"]
    first = Server([sys.executable, "-m", "restmq.cli", "serve", "--port", str(first_port), *original], cwd=tmp_path)
    servers.append(first)
    first.wait_for("engine ready")
    second = Server([str(BIN / "twistd"), "-n", "--pidfile=", "restmq", "--port", str(second_port), *original],
                    cwd=tmp_path)
    servers.append(second)
    second.wait_for("engine ready")
    for server in (first, second):
        while "http" not in server.addresses:
            server.wait_for("listening")
        assert "line" not in server.addresses and server.proc.poll() is None
    status, body = blocking_http("POST", f"http://127.0.0.1:{first_port}/q/cores", b"value=one",
                                 {"content-type": "application/x-www-form-urlencoded"})
    assert (status, body) == (200, b"cores:1\r\n")
    status, body = blocking_http("GET", f"http://127.0.0.1:{second_port}/q/cores")
    assert status == 200 and json.loads(body)["value"] == "one"
    assert not any("line listening" in line or "8889" in line for line in first.log + second.log)
    assert first.stop() == 0


def test_the_line_rule_is_in_the_help():
    """restmq serve --help says the line listener is off with only --port/--listen."""
    from restmq.tap import Options, parse

    assert "Off when the original --port/--listen are given without it" in " ".join(str(Options()).split())
    assert parse(["--port", "8890"]).line is None
    assert parse(["--listen", "127.0.0.1"]).line is None
    assert parse(["--port", "8890", "--line", "tcp:8891:interface=127.0.0.1"]).line == "tcp:8891:interface=127.0.0.1"
    assert parse([]).line == "tcp:8889:interface=127.0.0.1"
