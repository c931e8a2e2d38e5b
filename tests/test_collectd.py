"""collectd ingestion: the pure parsers on the formats of collectd's documentation, and
POST /collectd/data and /collectd/event on a live Site talked to with treq."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
import pytest_twisted
import treq

from restmq.errors import BadRequest
from restmq.wire.collectd import parse_data, parse_event

NOW = 1_700_000_000.0

#: collectd-exec(5) / the plain-text protocol wiki: PUTVAL lines as an exec script prints them.
PUTVAL_BODY = b"""\
PUTVAL "testhost/interface/if_octets-test0" interval=10 1179574444:123:456
PUTVAL testhost/cpu-0/cpu-idle interval=10.000 1426585572.123:2.5 1426585582:U
# a comment and a blank line are skipped

PUTVAL "host with space/load/load" N:0.5:0.4:0.3 meta:source="exec script"
"""

#: The write_http plugin's Format "JSON" (collectd wiki, "Plugin:Write HTTP").
WRITE_HTTP_JSON = b"""[
  {
    "values":  [1901474177],
    "dstypes":  ["counter"],
    "dsnames":    ["value"],
    "time":      1280959128,
    "interval":          10,
    "host":            "leeloo.octo.it",
    "plugin":          "cpu",
    "plugin_instance": "0",
    "type":            "cpu",
    "type_instance":   "idle"
  },
  {"values": [0.5, null], "dstypes": ["gauge", "gauge"], "dsnames": ["rx", "tx"], "time": 1280959138.5,
   "interval": 10.0, "host": "leeloo.octo.it", "plugin": "interface", "plugin_instance": "eth0",
   "type": "if_packets", "type_instance": "", "meta": {"network:received": true}}
]"""

#: collectd-exec(5), NotificationExec: what a notification script reads on its stdin.
EXEC_NOTIFICATION = b"""Severity: FAILURE
Time: 1200928930.515
Host: myhost.mydomain.org
Plugin: df
PluginInstance: root
Type: percent_bytes
TypeInstance: free
DataSource: value
CurrentValue: 4.2

This is a test notification to demonstrate the format
"""

#: write_http with Format "JSON" and Notifications true (collectd >= 5.6: Alertmanager's form).
ALERTMANAGER_JSON = b"""[{"labels":{"alertname":"collectd_cpu","instance":"host.example.com",
"severity":"FAILURE","service":"collectd","cpu":"0","type":"wait"},
"annotations":{"summary":"CPU wait is high","DataSource":"value"},
"startsAt":"2017-05-03T10:00:00.123456789Z"}]"""


# -- the parsers ------------------------------------------------------------------------------------


def test_putval_lines_become_one_record_per_value_list():
    """Each PUTVAL value list becomes a record with the identifier's parts, time, interval and values."""
    records = parse_data(PUTVAL_BODY, NOW)
    assert records[0] == {
        "host": "testhost", "plugin": "interface", "plugin_instance": "", "type": "if_octets",
        "type_instance": "test0", "time": 1179574444.0, "interval": 10.0, "values": [123, 456],
    }
    assert records[1]["plugin_instance"] == "0" and records[1]["type_instance"] == "idle"
    assert (records[1]["time"], records[1]["values"]) == (1426585572.123, [2.5])
    assert (records[2]["time"], records[2]["values"]) == (1426585582.0, [None])
    assert records[3] == {
        "host": "host with space", "plugin": "load", "plugin_instance": "", "type": "load",
        "type_instance": "", "time": NOW, "interval": None, "values": [0.5, 0.4, 0.3],
        "meta": {"source": "exec script"},
    }
    assert len(records) == 4


def test_write_http_json_keeps_dsnames_dstypes_and_meta():
    """write_http's JSON array gives the same records plus dsnames, dstypes and meta; null stays null."""
    first, second = parse_data(WRITE_HTTP_JSON, NOW)
    assert first == {
        "host": "leeloo.octo.it", "plugin": "cpu", "plugin_instance": "0", "type": "cpu",
        "type_instance": "idle", "time": 1280959128, "interval": 10, "values": [1901474177],
        "dsnames": ["value"], "dstypes": ["counter"],
    }
    assert second["values"] == [0.5, None] and second["meta"] == {"network:received": True}


def test_notifications_in_every_collectd_format():
    """PUTNOTIF lines, NotificationExec text, write_http's Alertmanager JSON and flat JSON all parse."""
    putnotif = parse_event(
        b'PUTNOTIF severity=okay time=1201094702 message="Everything is back to normal" host=h '
        b'plugin=df type=percent_bytes s:mount=/\n'
        b"PUTNOTIF message=disk-full severity=FAILURE time=1201094703\n",
        NOW,
    )
    assert putnotif[0] == {
        "severity": "okay", "time": 1201094702.0, "message": "Everything is back to normal", "host": "h",
        "plugin": "df", "plugin_instance": "", "type": "percent_bytes", "type_instance": "", "meta": {"mount": "/"},
    }
    assert (putnotif[1]["severity"], putnotif[1]["message"]) == ("failure", "disk-full")

    [exec_note] = parse_event(EXEC_NOTIFICATION, NOW)
    assert exec_note == {
        "severity": "failure", "time": 1200928930.515, "message": "This is a test notification to demonstrate the format",
        "host": "myhost.mydomain.org", "plugin": "df", "plugin_instance": "root", "type": "percent_bytes",
        "type_instance": "free", "meta": {"DataSource": "value", "CurrentValue": "4.2"},
    }

    [alert] = parse_event(ALERTMANAGER_JSON, NOW)
    assert alert["severity"] == "failure" and alert["message"] == "CPU wait is high"
    assert alert["host"] == "host.example.com" and alert["alertname"] == "collectd_cpu"
    assert alert["labels"] == {"service": "collectd", "cpu": "0", "type": "wait"}
    assert alert["meta"] == {"DataSource": "value"}
    assert alert["time"] == pytest.approx(1493805600.123456)

    [flat] = parse_event(b'{"severity": "warning", "time": 5, "message": "m", "host": "h"}', NOW)
    assert (flat["severity"], flat["time"], flat["host"], flat["plugin"]) == ("warning", 5, "h", "")


@pytest.mark.parametrize(
    ("parse", "body", "says"),
    [
        (parse_data, b"", "empty body"),
        (parse_data, b"\xff\xfe", "UTF-8"),
        (parse_data, b"PUTVAL", "needs an identifier"),
        (parse_data, b"PUTVAL host/cpu 1:2", "not host/plugin"),
        (parse_data, b"PUTVAL host//cpu 1:2", "plugin is empty"),
        (parse_data, b"PUTVAL host/cpu/cpu interval=10", "without a value list"),
        (parse_data, b"PUTVAL host/cpu/cpu 1426585572", "not TIME:VALUE"),
        (parse_data, b"PUTVAL host/cpu/cpu 1426585572:abc", "'abc' is not a number"),
        (parse_data, b"PUTVAL host/cpu/cpu 1426585572:inf", "not finite"),
        (parse_data, b"PUTVAL host/cpu/cpu yesterday:1", "time must be a number"),
        (parse_data, b"PUTVAL host/cpu/cpu interval=-1 N:1", "interval must be a positive"),
        (parse_data, b"PUTVAL host/cpu/cpu interval= N:1", "has no value"),
        (parse_data, b"PUTVAL host/cpu/cpu color=red N:1", "unknown PUTVAL option 'color'"),
        (parse_data, b'PUTVAL "host/cpu/cpu N:1', "unterminated"),
        (parse_data, b'PUTVAL "host/cpu/cpu"N:1', "followed by a blank"),
        (parse_data, b"PUTVAL h/cpu/cpu N:1\nPUTNOTIF severity=okay time=1 message=x", "line 2: expected PUTVAL"),
        (parse_data, b"GETVAL h/cpu/cpu", "expected PUTVAL, not 'GETVAL'"),
        (parse_data, b"[", "not valid JSON"),
        (parse_data, b"[]", "empty"),
        (parse_data, b"[1]", "item 0: must be a JSON object"),
        (parse_data, b'[{"values": [1], "host": "h", "plugin": "p", "type": "t"}]', "time is missing"),
        (parse_data, b'[{"values": [], "time": 1, "host": "h", "plugin": "p", "type": "t"}]', "non-empty"),
        (parse_data, b'[{"values": ["1"], "time": 1, "host": "h", "plugin": "p", "type": "t"}]', "numbers or null"),
        (parse_data, b'[{"values": [NaN], "time": 1}]', "NaN"),
        (parse_data, b'[{"values": [1], "time": 1, "host": "h", "plugin": "p", "type": "t", "dsnames": []}]',
         "dsnames must be a list of 1"),
        (parse_data, b"PUTVAL " + b"h" * 129 + b"/cpu/cpu N:1", "longer than 128"),
        (parse_event, b"PUTNOTIF severity=okay time=1", "without message"),
        (parse_event, b"PUTNOTIF severity=okay message=x", "without time"),
        (parse_event, b"PUTNOTIF severity=panic time=1 message=x", "severity must be"),
        (parse_event, b"PUTNOTIF severity=okay time=1 message=x extra", "only key=value"),
        (parse_event, b"PUTNOTIF severity=okay time=1 message=x colour=red", "unknown PUTNOTIF option"),
        (parse_event, b"PUTVAL h/cpu/cpu N:1", "PUTVAL goes to /collectd/data"),
        (parse_event, b"Severity: FAILURE\nTime: 1\nnot a header\n\nmsg", "line 3"),
        (parse_event, b'[{"labels": {"severity": "FAILURE"}, "annotations": {"summary": "x"}, "startsAt": "soon"}]',
         "not an RFC 3339 time"),
        (parse_event, b'{"severity": "okay", "time": 1}', "without message"),
    ],
)
def test_bad_payloads_are_refused_with_a_clear_error(parse, body, says):
    """Malformed collectd payloads raise bad_request naming what is wrong (and where)."""
    with pytest.raises(BadRequest) as info:
        parse(body, NOW)
    assert says in info.value.message


# -- over HTTP ----------------------------------------------------------------------------------------


async def post(url: str, path: str, body: bytes, content_type: str = "text/plain") -> tuple[int, Any]:
    response = await treq.post(url + path, body, headers={"content-type": content_type}, persistent=False)
    return response.code, json.loads(await response.content())


async def queued(url: str, queue: str) -> list[Any]:
    """Every value queued on ``queue`` (taken, so the queue ends empty)."""
    response = await treq.get(f"{url}/q/{queue}?count=1000", persistent=False)
    if response.code == 204:
        return []
    return [m["value"] for m in json.loads(await response.content())]


@pytest_twisted.ensureDeferred
async def test_post_putval_lines_queues_one_message_per_value_list(site_url):
    """POST /collectd/data with PUTVAL lines answers the keys, and collectd_data holds the records in order."""
    code, body = await post(site_url, "/collectd/data?form=records", PUTVAL_BODY)
    assert code == 200
    assert body == {"queue": "collectd_data", "keys": [f"collectd_data:{n}" for n in (1, 2, 3, 4)]}
    records = await queued(site_url, "collectd_data")
    assert [r["type_instance"] for r in records] == ["test0", "idle", "idle", ""]
    assert records[0]["values"] == [123, 456]
    assert 1_000_000_000 < records[3]["time"]  # N: the server's clock


@pytest_twisted.ensureDeferred
async def test_post_write_http_json_and_curl_form_bodies(site_url):
    """write_http's JSON is accepted, and so is a PUTVAL body sent with curl -d's form Content-Type."""
    code, body = await post(site_url, "/collectd/data/?form=records", WRITE_HTTP_JSON, "application/json")
    assert code == 200 and len(body["keys"]) == 2
    code, body = await post(site_url, "/collectd/data?form=records", b"PUTVAL h/cpu/cpu N:1",
                            "application/x-www-form-urlencoded")
    assert code == 200 and len(body["keys"]) == 1
    records = await queued(site_url, "collectd_data")
    assert [r["host"] for r in records] == ["leeloo.octo.it", "leeloo.octo.it", "h"]


@pytest_twisted.ensureDeferred
async def test_post_notifications_go_to_collectd_event(site_url):
    """PUTNOTIF, NotificationExec and Alertmanager notifications land on collectd_event, not collectd_data."""
    for body in (b"PUTNOTIF severity=warning time=1201094702 message=hot", EXEC_NOTIFICATION, ALERTMANAGER_JSON):
        code, answer = await post(site_url, "/collectd/event?form=records", body)
        assert code == 200 and answer["queue"] == "collectd_event"
    events = await queued(site_url, "collectd_event")
    assert [e["severity"] for e in events] == ["warning", "failure", "failure"]
    assert await queued(site_url, "collectd_data") == []


@pytest_twisted.ensureDeferred
async def test_bad_bodies_answer_400_and_queue_nothing(site_url):
    """A body with one bad line, a PUTNOTIF sent as data, or over 1000 records is a 400 and adds nothing."""
    code, body = await post(site_url, "/collectd/data?form=records", b"PUTVAL h/cpu/cpu N:1\nPUTVAL h/cpu/cpu N:oops\n")
    assert (code, body["code"]) == (400, "bad_request")
    assert body["error"] == "line 2: value 'oops' is not a number or U"
    code, body = await post(site_url, "/collectd/event?form=records", b"PUTVAL h/cpu/cpu N:1")
    assert code == 400 and "PUTVAL goes to /collectd/data" in body["error"]
    many = b"".join(b"PUTVAL h/cpu/cpu %d:1\n" % n for n in range(1, 1002))
    code, body = await post(site_url, "/collectd/data?form=records", many)
    assert code == 400 and "at most 1000" in body["error"]
    assert await queued(site_url, "collectd_data") == []
    assert await queued(site_url, "collectd_event") == []


@pytest_twisted.ensureDeferred
async def test_only_post_to_the_two_routes(site_url):
    """GET /collectd/data is a JSON 405 with Allow: POST; other /collectd paths are JSON 404s."""
    response = await treq.get(site_url + "/collectd/data", persistent=False)
    assert response.code == 405 and response.headers.getRawHeaders("allow") == ["POST"]
    for path in ("/collectd", "/collectd/", "/collectd/values"):
        response = await treq.post(site_url + path, b"PUTVAL h/cpu/cpu N:1", persistent=False)
        assert response.code == 404 and json.loads(await response.content())["code"] == "not_found"


@pytest_twisted.ensureDeferred
async def test_collectd_needs_the_write_right_on_its_queues(engine, tmp_path):
    """With tokens, posting needs a token with write on collectd_data / collectd_event (401, 403, 200)."""
    from twisted.internet import reactor

    from restmq.auth import Tokens
    from restmq.dispatch import Dispatcher
    from restmq.frontends.http.routes import build_site

    path = tmp_path / "tokens"
    path.write_text("agent-t write collectd_*\nother-t write jobs\n")
    dispatcher = Dispatcher(engine, authorize=Tokens(str(path)).authorize)
    port = reactor.listenTCP(0, build_site(dispatcher, reactor=reactor), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}/collectd/data"
    try:
        codes = []
        for headers in ({}, {"authorization": "Bearer other-t"}, {"authorization": "Bearer agent-t"}):
            response = await treq.post(url, b"PUTVAL h/cpu/cpu N:1", headers=headers, persistent=False)
            await response.content()
            codes.append(response.code)
        assert codes == [401, 403, 200]
    finally:
        await port.stopListening()


# -- a real collectd -------------------------------------------------------------------------------

COLLECTD_CONF = """\
Hostname "restmq-test"
FQDNLookup false
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
Interval 60
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File STDOUT
</Plugin>
LoadPlugin unixsock
<Plugin unixsock>
  SocketFile "{dir}/collectd.sock"
</Plugin>
<LoadPlugin write_http>
  FlushInterval 1
</LoadPlugin>
<Plugin write_http>
  <Node "command">
    URL "{url}/collectd/data{form}"
    Format "Command"
  </Node>
  <Node "json">
    URL "{url}/collectd/data{form}"
    Format "JSON"
  </Node>
  <Node "events">
    URL "{url}/collectd/event{form}"
    Format "JSON"
    Metrics false
    Notifications true
  </Node>
</Plugin>
"""


def unixsock(path: str, *commands: str) -> list[str]:
    """Send commands to collectd's unixsock plugin (blocking); answer its status lines."""
    import socket

    answers = []
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        reader = sock.makefile("r")
        for command in commands:
            sock.sendall(command.encode() + b"\n")
            answers.append(reader.readline().strip())
    return answers


async def run_collectd(site_url: str, dispatcher: Any, tmp_path: Any, form: str) -> None:
    """Run a real collectd posting to ``site_url``'s /collectd routes with ``form`` (a query string)
    until one PUTVAL per write_http node and one PUTNOTIF arrived (skips when its plugins cannot load)."""
    import subprocess
    import time

    from twisted.internet import reactor, task, threads

    folder = tmp_path / "collectd"
    folder.mkdir()
    conf = folder / "collectd.conf"
    conf.write_text(COLLECTD_CONF.format(dir=folder, url=site_url, form=form))
    check = subprocess.run(["collectd", "-t", "-C", str(conf)], capture_output=True, text=True, timeout=10)
    if check.returncode != 0:
        pytest.skip(f"collectd cannot load its plugins here: {check.stdout[-300:]}{check.stderr[-300:]}")
    proc = subprocess.Popen(["collectd", "-f", "-C", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sock = str(folder / "collectd.sock")
    try:
        deadline = time.monotonic() + 10
        while not (folder / "collectd.sock").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "collectd did not start"
            await task.deferLater(reactor, 0.05, lambda: None)
        answers = await threads.deferToThread(
            unixsock, sock,
            'PUTVAL "restmq-test/exec-app/gauge-queue_depth" interval=60 N:42',
            f'PUTNOTIF severity=warning time={int(time.time())} host=restmq-test plugin=exec '
            f'type=gauge message="queue depth is 42"',
        )
        assert [a.split()[0] for a in answers] == ["0", "0"], answers

        async def lengths() -> tuple[int, int]:
            data = await dispatcher.execute("len", {"queue": "collectd_data"})
            event = await dispatcher.execute("len", {"queue": "collectd_event"})
            return data["ready"], event["ready"]

        deadline = time.monotonic() + 10
        while await lengths() != (2, 1):
            assert time.monotonic() < deadline, await lengths()
            await task.deferLater(reactor, 0.05, lambda: None)
    finally:
        proc.terminate()  # it flushes write_http to our Site on the way out: keep the reactor running
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            await task.deferLater(reactor, 0.05, lambda: None)
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0].decode(errors="replace")
        print(output)  # shown by pytest when the test fails


@pytest.mark.skipif(not shutil.which("collectd"), reason="collectd (apt-get install collectd-core) is not installed")
@pytest_twisted.ensureDeferred
async def test_a_real_collectd_posts_values_and_notifications(site_url, dispatcher, tmp_path):
    """collectd's write_http (Command and JSON formats) delivers PUTVAL values to collectd_data and a
    PUTNOTIF notification to collectd_event, as records a consumer can read."""
    import time

    await run_collectd(site_url, dispatcher, tmp_path, "?form=records")
    values = [m["value"] for m in await dispatcher.execute("take", {"queue": "collectd_data", "count": 10})]
    for record in values:
        assert (record["host"], record["plugin"], record["plugin_instance"]) == ("restmq-test", "exec", "app")
        assert (record["type"], record["type_instance"], record["values"]) == ("gauge", "queue_depth", [42])
        assert record["interval"] == 60 and abs(record["time"] - time.time()) < 60
    assert sorted("dsnames" in r for r in values) == [False, True]  # the Command node, the JSON node
    [event] = await dispatcher.execute("take", {"queue": "collectd_event", "count": 10})
    assert event["value"]["severity"] == "warning"
    assert event["value"]["message"] == "queue depth is 42"
    assert event["value"]["host"] == "restmq-test" and event["value"]["alertname"] == "collectd_exec_gauge"
