"""``restmq serve --workers N``: one parent, N workers on the same ports, limits and numbers for the whole server."""

from __future__ import annotations

from http.client import HTTPConnection
import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from restmq.backend.embedded import pid_alive
from restmq.workers.shares import share
from tests.test_process import Server, http, serve_argv, servers  # noqa: F401  (servers: a fixture)

FORM = {"content-type": "application/x-www-form-urlencoded"}


def start(
    tmp_path: Path, servers: list[Server], *extra: str, workers: int = 2, token: str | None = None,  # noqa: F811
) -> Server:
    """A ``restmq serve --workers`` whose every worker is ready."""
    server = Server(serve_argv(tmp_path / "data", "--workers", str(workers), *extra), cwd=tmp_path)
    servers.append(server)
    for _ in range(workers):
        server.wait_for(r"\[worker \d+\] engine ready")
    for _ in range(3):  # every worker has reported, whichever answers
        wait_until(lambda: len(processes(server, token)) == workers)
    return server


def wait_until(check, timeout: float = 20.0):
    """Poll ``check`` until it answers something true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout} s: {check}")


def stats(server: Server, query: str = "", token: str | None = None) -> dict:
    status, body = http("GET", server.url("/stats" + query), headers={"authorization": f"Bearer {token}"} if token else None)
    assert status == 200, body
    return json.loads(body)


def processes(server: Server, token: str | None = None) -> list[dict]:
    return stats(server, token=token).get("processes", [])


def connection_to(server: Server, exclude: set[str] = frozenset()) -> tuple[HTTPConnection, str]:
    """A keep-alive connection served by a worker not in ``exclude``, and that worker's process id."""
    host, port = server.addresses["http"].rsplit(":", 1)
    for _ in range(200):
        conn = HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/stats")
        process = json.loads(conn.getresponse().read())["process"]
        if process not in exclude:
            return conn, process
        conn.close()
    raise AssertionError(f"every connection went to {exclude}")


def one_connection_each(server: Server) -> tuple[HTTPConnection, HTTPConnection]:
    """Two keep-alive connections, served by two different workers."""
    first, one = connection_to(server)
    second, other = connection_to(server, {one})
    assert one != other
    return first, second


def test_two_workers_answer_on_one_port(tmp_path, servers):
    """Two workers with different pids accept on the one HTTP port; /stats lists both, /health counts
    them, and a SIGHUP with nothing to reload leaves them running."""
    server = start(tmp_path, servers)
    listed = processes(server)
    assert sorted(p["worker"] for p in listed) == [0, 1]
    assert len({p["pid"] for p in listed}) == 2 and os.getpid() not in {p["pid"] for p in listed}
    assert all(p["uptime"] >= 0 and "connections" in p and "subscribers" in p for p in listed)
    assert json.loads(http("GET", server.url("/health"))[1])["workers"] == 2
    server.proc.send_signal(signal.SIGHUP)  # nothing to reload: no worker is hurt
    server.wait_for("SIGHUP: no --auth-file or --acl to reload")
    for conn in one_connection_each(server):
        conn.close()
    assert {p["pid"] for p in processes(server)} == {p["pid"] for p in listed}
    assert server.stop() == 0


def test_reuse_port_gives_each_worker_its_socket(tmp_path, servers):
    """With --reuse-port both workers answer on the logged port (port 0 resolved once, by the parent)."""
    server = start(tmp_path, servers, "--reuse-port")
    for conn in one_connection_each(server):
        conn.close()
    assert server.stop() == 0


def test_killed_worker_is_replaced_and_service_continues(tmp_path, servers):
    """A worker killed with -9 is logged, replaced after a short backoff, and requests keep working."""
    server = start(tmp_path, servers)
    victim = processes(server)[0]
    os.kill(victim["pid"], signal.SIGKILL)
    assert re.search(r"ended \(signal 9\)", server.wait_for(rf"worker {victim['worker']} pid={victim['pid']} ended"))
    server.wait_for(rf"worker {victim['worker']} started")
    for i in range(5):  # the other worker answers meanwhile, the replacement afterwards
        assert http("POST", server.url("/q/k"), f"value={i}".encode(), FORM)[0] == 200

    def replaced() -> bool:
        listed = processes(server)
        return sorted(p["worker"] for p in listed) == [0, 1] and victim["pid"] not in {p["pid"] for p in listed}

    wait_until(replaced)
    assert json.loads(http("GET", server.url("/q/k"))[1])["value"] == "0"
    assert server.stop() == 0


def test_sigterm_ends_streams_then_every_process(tmp_path, servers):
    """SIGTERM to the parent ends an open COMET stream, stops both workers and Redis, and exits 0."""
    server = start(tmp_path, servers)
    pids = [p["pid"] for p in processes(server)]
    redis_pid = int((tmp_path / "data" / "redis.pid").read_text())
    host, port = server.addresses["http"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as stream:
        stream.sendall(b"GET /c/s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert stream.recv(4096).startswith(b"HTTP/1.1 200")
        server.proc.send_signal(signal.SIGTERM)
        rest = b""
        while chunk := stream.recv(4096):
            rest += chunk
    assert rest.endswith(b"0\r\n\r\n"), rest  # the chunked stream was ended, not cut
    assert server.proc.wait(20) == 0
    assert not any(pid_alive(pid) for pid in [*pids, redis_pid])


def test_sighup_reloads_tokens_in_every_worker(tmp_path, servers):
    """SIGHUP to the parent makes every worker read the tokens file again."""
    tokens = tmp_path / "tokens"
    tokens.write_text("old read,write *\n")
    server = start(tmp_path, servers, "--auth-file", str(tokens), "--reuse-port", token="old")
    tokens.write_text("new read,write *\n")
    server.proc.send_signal(signal.SIGHUP)
    reloaded = {server.wait_for(r"\[worker \d\] auth file reloaded")[:10] for _ in range(2)}
    assert len(reloaded) == 2
    host, port = server.addresses["http"].rsplit(":", 1)
    for i in range(10):  # new connections: both workers are asked
        conn = HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/q/t", b"x", {"content-type": "text/plain", "authorization": "Bearer old"})
        assert conn.getresponse().status == 401
        conn.close()
        assert http("POST", server.url("/q/t"), b"x", {"content-type": "text/plain", "authorization": "Bearer new"})[0] == 200
    assert server.stop() == 0


def test_connection_limit_is_a_total_for_the_server(tmp_path, servers):
    """--max-connections 4 with two workers admits at most 4 connections in all, however they spread."""
    assert [share(4, i, 2) for i in range(2)] == [2, 2] and [share(5, i, 2) for i in range(2)] == [3, 2]
    server = start(tmp_path, servers, "--max-connections", "4", "--reuse-port")
    host, port = server.addresses["line"].rsplit(":", 1)
    held, admitted = [], 0
    for _ in range(12):
        s = socket.create_connection((host, int(port)), timeout=10)
        held.append(s)
        s.sendall(b"ping\n")
        reply = s.recv(4096)
        if b"pong" in reply:
            admitted += 1
        else:
            assert b"too many connections" in reply, reply
    assert 2 <= admitted <= 4
    for s in held:
        s.close()
    assert server.stop() == 0


def test_metrics_and_stats_add_up_every_worker(tmp_path, servers):
    """/metrics and /stats count the commands of both workers, whichever worker is scraped."""
    server = start(tmp_path, servers, "--reuse-port")
    first, second = one_connection_each(server)
    for conn in (first, second):
        for i in range(3):
            conn.request("POST", "/q/m", f"value={i}".encode(), FORM)
            assert conn.getresponse().read() .startswith(b"m:")

    def added() -> bool:
        text = http("GET", server.url("/metrics"))[1].decode()
        found = re.search(r'^restmq_commands_total\{command="add"\} (\S+)$', text, re.M)
        return bool(found) and float(found.group(1)) == 6.0 and 'restmq_request_seconds_count{command="add",frontend="http"} 6.0' in text

    wait_until(added)
    wait_until(lambda: stats(server)["commands"].get("add") == 6)
    detail = stats(server, "?detail=1")
    assert all("metrics" in p for p in detail["processes"])
    first.close()
    second.close()
    assert server.stop() == 0


def test_long_poll_and_stream_wake_across_workers(tmp_path, servers):
    """A long poll and an SSE stream on one worker get messages added through the other worker."""
    server = start(tmp_path, servers, "--reuse-port")
    consumer, producer = one_connection_each(server)
    consumer.request("GET", "/q/lp?wait=15")
    time.sleep(0.5)  # the long poll is waiting on its worker
    producer.request("POST", "/q/lp", b"value=woken", FORM)
    assert producer.getresponse().read() == b"lp:1\r\n"
    answer = consumer.getresponse()
    assert answer.status == 200 and json.loads(answer.read())["value"] == "woken"

    consumer.request("GET", "/sse/st")
    events = consumer.getresponse()
    assert events.status == 200
    time.sleep(0.5)
    producer.request("POST", "/q/st", b"value=streamed", FORM)
    assert producer.getresponse().read() == b"st:1\r\n"
    while not (line := events.fp.readline()).startswith(b"data:"):
        assert line, "the stream ended"
    assert b"streamed" in line
    consumer.close()
    producer.close()
    assert server.stop() == 0


@pytest.mark.parametrize("how", ["twistd"])
def test_twistd_runs_workers_too(tmp_path, servers, how):
    """twistd restmq --workers 2 runs the same parent and workers as restmq serve."""
    from tests.test_process import BIN, TWISTD_CLEAN_EXIT

    server = Server(
        [str(BIN / "twistd"), "-n", "--pidfile=", "restmq", "--workers", "2", "--data", str(tmp_path / "data"),
         "--http", "tcp:0:interface=127.0.0.1", "--line", "none"], cwd=tmp_path,
    )
    servers.append(server)
    for _ in range(2):
        server.wait_for(r"\[worker \d+\] engine ready")
    wait_until(lambda: len(processes(server)) == 2)
    assert http("POST", server.url("/q/tw"), b"value=x", FORM) == (200, b"tw:1\r\n")
    assert server.stop() in TWISTD_CLEAN_EXIT
    server.wait_for("restmq stopped")


@pytest.mark.parametrize("reuse", [False, True], ids=["shared", "reuse-port"])
def test_tls_listener_is_served_by_every_worker(tmp_path, servers, reuse):  # noqa: F811
    """An ssl: HTTP listener works with workers, on one shared socket or one per worker."""
    import ssl
    from http.client import HTTPSConnection

    from tests.test_tls import make_cert

    cert_path, key_path = make_cert(tmp_path)
    tls = f"privateKey={key_path}:certKey={cert_path}"
    server = Server(serve_argv(tmp_path / "data", "--workers", "2", "--http", f"ssl:0:interface=127.0.0.1:{tls}",
                               *(["--reuse-port"] if reuse else [])), cwd=tmp_path)
    servers.append(server)
    for _ in range(2):
        server.wait_for(r"\[worker \d+\] engine ready")
    host, port = server.addresses["http"].rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(cert_path))
    seen = set()
    for i in range(40):
        conn = HTTPSConnection(host, int(port), timeout=10, context=context)
        conn.request("GET", "/stats")
        answer = conn.getresponse()
        assert answer.status == 200
        seen.add(json.loads(answer.read())["process"])
        conn.close()
        if len(seen) == 2 and reuse:
            break
    assert len(seen) == 2 or not reuse
    assert server.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_twistd_binds_as_root_and_workers_run_as_the_service_user(tmp_path, servers, redis):  # noqa: F811
    """twistd --uid --gid restmq --workers 2: the parent binds first and both workers run unprivileged;
    when that user cannot run this Python, it says so in one line and exits 1 before serving."""
    import subprocess
    import sys

    from tests.test_process import BIN, TWISTD_CLEAN_EXIT

    argv = [str(BIN / "twistd"), "--uid=65534", "--gid=65534", "-n", "--pidfile=", "restmq", "--workers", "2",
            "--redis", redis.url, "--http", "tcp:0:interface=127.0.0.1", "--line", "none"]
    try:
        usable = subprocess.run([sys.executable, "-c", "import restmq"], user=65534, group=65534, cwd="/",
                                capture_output=True, timeout=30).returncode == 0
    except PermissionError:
        usable = False
    server = Server(argv, cwd=tmp_path)
    servers.append(server)
    if not usable:  # e.g. a Python under /root: the service user cannot exec it
        assert "cannot run" in server.wait_for("restmq cannot start")
        assert server.proc.wait(20) == 1
        return
    for _ in range(2):
        server.wait_for(r"\[worker \d+\] engine ready")
    for _ in range(3):
        wait_until(lambda: len(processes(server)) == 2)
    for pid in [server.proc.pid, *(p["pid"] for p in processes(server))]:
        status = Path(f"/proc/{pid}/status").read_text()
        assert re.search(r"^Uid:\s+65534\s", status, re.M), status
    assert http("POST", server.url("/q/u"), b"value=x", FORM) == (200, b"u:1\r\n")
    assert server.stop() in TWISTD_CLEAN_EXIT


def test_one_worker_holds_the_sweeper_lease_and_delays_still_come_due(tmp_path, servers, redis):  # noqa: F811
    """With two workers one of them holds the sweeper's lease, and a delayed message is released on time."""
    server = start(tmp_path, servers, "--redis", redis.url)
    ids = {p["process"] for p in processes(server)}

    def lease() -> bytes | None:
        found = redis.cli("GET", "rmq:sweeper")
        return None if found.startswith(b"$-1") else found

    holder = wait_until(lease)
    assert any(process.encode() in holder for process in ids), holder
    assert http("POST", server.url("/q/later?delay=1"), b"value=soon", FORM)[0] == 200
    assert wait_until(lambda: json.loads(http("GET", server.url("/stats/later"))[1])["length"]["ready"] == 1)
    assert server.stop() == 0
    assert b"rmq:processes" not in redis.cli("KEYS", "rmq:processes") or redis.cli("HLEN", "rmq:processes") == b":0\r\n"


@pytest.mark.parametrize("listener", ["tcp", "unix"])
def test_a_worker_that_stops_leaves_the_shared_socket_to_the_others(tmp_path, servers, listener):  # noqa: F811
    """SIGTERM to one worker alone: it is replaced, and the other keeps accepting on the shared TCP or UNIX socket."""
    extra = ["--http", f"unix:{tmp_path / 'h.sock'}"] if listener == "unix" else []
    server = Server(serve_argv(tmp_path / "data", "--workers", "2", "--line", "tcp:0:interface=127.0.0.1", *extra),
                    cwd=tmp_path)
    servers.append(server)
    for _ in range(2):
        server.wait_for(r"\[worker \d+\] engine ready")
    while "line" not in server.addresses:
        server.wait_for("listening")
    host, port = server.addresses["line"].rsplit(":", 1)

    def ping() -> bool:
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"ping\n")
            return b"pong" in s.recv(4096)

    victim = next(int(json.loads(line)["pid"]) for line in server.log if "worker 0 started" in line)
    os.kill(victim, signal.SIGTERM)
    server.wait_for(rf"worker 0 pid={victim} ended \(exit code 0\)")
    assert all(ping() for _ in range(10))  # worker 1 alone, on the socket worker 0 closed
    server.wait_for("worker 0 started")
    server.wait_for(r"\[worker 0\] engine ready")
    assert all(ping() for _ in range(10))
    if listener == "unix":
        assert (tmp_path / "h.sock").exists()
    assert server.stop() == 0
    assert not (tmp_path / "h.sock").exists()


def test_workers_stop_when_their_parent_is_killed(tmp_path, servers):  # noqa: F811
    """A parent killed with -9 leaves no worker behind: each notices and stops within seconds."""
    server = start(tmp_path, servers)
    pids = [p["pid"] for p in processes(server)]
    server.proc.kill()
    server.proc.wait(10)
    wait_until(lambda: not any(pid_alive(pid) for pid in pids))


def test_workers_option_takes_a_count_or_auto():
    """--workers takes a count from 1, or auto for the usable cores; the limits split into shares that add up."""
    from twisted.python.usage import UsageError

    from restmq.tap import parse
    from restmq.workers.shares import worker_config

    assert parse([]).workers == 1
    assert parse(["--workers", "auto"]).workers == len(os.sched_getaffinity(0))
    assert parse(["--workers", "3", "--reuse-port"]).reuse_port
    for bad in ("0", "-1", "many"):
        with pytest.raises(UsageError):
            parse(["--workers", bad])
    config = parse(["--workers", "3", "--max-connections", "10", "--max-connections-per-address", "0",
                    "--max-subscribers", "7", "--redis-pool", "10", "--cors", "*"])
    shares = [worker_config(config, i, 3, "unix:///r.sock") for i in range(3)]
    assert [c.max_connections for c in shares] == [4, 3, 3]
    assert [c.max_subscribers for c in shares] == [3, 2, 2]
    assert [c.redis_pool for c in shares] == [4, 3, 3]
    assert {c.max_connections_per_address for c in shares} == {0}
    assert {(c.workers, c.redis, c.cors) for c in shares} == {(1, "unix:///r.sock", ("*",))}


def test_a_scrape_adds_up_every_workers_counters():
    """/metrics' snapshot adds the other workers' commands, errors, connections, refusals and latencies to its own."""
    from restmq.frontends.http.metrics import Snapshot, render
    from restmq.latency import Latency
    from restmq.limits import Limits
    from restmq.workers.table import series_of

    other_latency = Latency()
    other_latency.observe("http", "add", 0.002)
    mine = Latency()
    snap = Snapshot(calls={"add": 1}, latency=mine, limits=Limits(0, 0))
    snap.limits.total = 1
    snap.others = [{"connections": 4, "metrics": {
        "calls": {"add": 5}, "errors": {"empty": 2}, "rejected": {"connections": 1},
        "latency": series_of(other_latency), "redis_latency": []}}]
    snap.merge_others()
    text = render(snap).decode()
    assert 'restmq_commands_total{command="add"} 6.0' in text
    assert 'restmq_errors_total{code="empty"} 2.0' in text
    assert "restmq_connections 5.0" in text
    assert 'restmq_limit_rejections_total{limit="connections"} 1.0' in text
    assert 'restmq_request_seconds_count{command="add",frontend="http"} 1.0' in text
    assert not mine.series, "the live counters are not changed by a scrape"


def test_a_scrape_adds_up_every_workers_push_deliveries():
    """/metrics' snapshot adds the other workers' push deliveries to its own, leaving the live counters alone."""
    from restmq.frontends.http.metrics import Snapshot, render
    from restmq.latency import PushMetrics
    from restmq.workers.table import push_of

    mine, other = PushMetrics(), PushMetrics()
    mine.pushed["q"] += 2
    other.pushed["q"] += 3
    other.failed[("q", "timeout")] += 1
    other.latency.observe("q", "ok", 0.01)
    snap = Snapshot(push=mine)
    snap.others = [{"metrics": {"push": push_of(other)}}]
    snap.merge_others()
    text = render(snap).decode()
    assert 'restmq_push_delivered_total{queue="q"} 5.0' in text
    assert 'restmq_push_failed_total{queue="q",reason="timeout"} 1.0' in text
    assert 'restmq_push_seconds_count{outcome="ok",queue="q"} 1.0' in text
    assert mine.pushed["q"] == 2
