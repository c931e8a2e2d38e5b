"""End to end: RestMQ as real processes (restmq serve, twistd restmq, the tac), killed and restarted."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from restmq.backend.embedded import pid_alive

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: twistd stops cleanly on SIGTERM, then re-raises the signal so its parent sees why it ended.
TWISTD_CLEAN_EXIT = (0, -signal.SIGTERM)
LISTENING = re.compile(r"(\w+) listening on (\S+)")


class Server:
    """A RestMQ process and the addresses it logged; its output is read by a thread."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.addresses: dict[str, str] = {}
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        """Read output until a line matches ``pattern``; remember every listening address seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if not self.reader.is_alive() and self.lines.empty():
                    break  # the process closed its output and every line was read
                continue
            self.log.append(line)
            text = line
            if line.startswith("{"):
                event = json.loads(line)
                text = event["message"]
            found = LISTENING.search(text)
            if found:
                self.addresses[found.group(1)] = found.group(2)
            if re.search(pattern, text):
                return text
        raise AssertionError(f"no {pattern!r} in output:\n{''.join(self.log)}")

    def url(self, path: str = "") -> str:
        return f"http://{self.addresses['http']}{path}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def http(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None):
    """A plain urllib request answering (status, body bytes), errors included."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def serve_argv(data: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "restmq.cli", "serve", "--log-format", "json",
        "--http", "tcp:0:interface=127.0.0.1", "--line", "tcp:0:interface=127.0.0.1",
        "--data", str(data), *extra,
    ]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """Processes started by a test; any left running, and any redis-server they left, are killed."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)
    kill_processes_under(tmp_path)


def kill_processes_under(path: Path) -> None:
    """SIGKILL every process whose command line names ``path`` (a test's orphaned redis-server)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in cmdline:
                os.kill(int(entry.name), signal.SIGKILL)


def test_serve_with_embedded_redis_survives_kill_9(tmp_path, servers):
    """restmq serve keeps an added message across kill -9 and a restart, and stops its Redis on exit."""
    data = tmp_path / "data"
    first = Server(serve_argv(data), cwd=tmp_path)
    servers.append(first)
    first.wait_for("engine ready")
    status, body = http("POST", first.url("/q/jobs"), b"value=hello", {"content-type": "application/x-www-form-urlencoded"})
    assert (status, body) == (200, b"jobs:1\r\n")
    orphan = int((data / "redis.pid").read_text())
    first.stop(signal.SIGKILL)
    assert pid_alive(orphan), "redis-server should outlive a kill -9 of RestMQ (an orphan)"

    second = Server(serve_argv(data), cwd=tmp_path)
    servers.append(second)
    second.wait_for("engine ready")
    status, body = http("GET", second.url("/q/jobs"))
    assert status == 200 and json.loads(body)["value"] == "hello"
    assert not pid_alive(orphan), "the orphaned redis-server was replaced"
    redis_pid = int((data / "redis.pid").read_text())
    assert second.stop() == 0
    deadline = time.monotonic() + 5
    while pid_alive(redis_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(redis_pid), "no redis-server left behind after a clean stop"


def test_serve_line_protocol_and_http_share_one_queue(tmp_path, servers):
    """A message added over the line protocol is taken over HTTP from the same process."""
    server = Server(serve_argv(tmp_path / "data"), cwd=tmp_path)
    servers.append(server)
    server.wait_for("engine ready")
    while "line" not in server.addresses or "http" not in server.addresses:
        server.wait_for("listening")
    host, port = server.addresses["line"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"add q hello world\r\nping\n")
        reply = b""
        while reply.count(b"\n") < 2:
            reply += s.recv(4096)
    first, second = reply.splitlines()[:2]
    assert json.loads(first)["key"] == "q:1"
    assert b"pong" in second
    status, body = http("GET", server.url("/q/q"))
    assert status == 200 and json.loads(body)["value"] == "hello world"
    assert server.stop() == 0


def test_serve_refuses_public_bind_without_insecure(tmp_path):
    """restmq serve exits with a usage error instead of exposing an unauthenticated queue."""
    proc = subprocess.run(
        [sys.executable, "-m", "restmq.cli", "serve", "--http", "tcp:0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert "--insecure" in proc.stderr


def test_twistd_plugin_serves(tmp_path, servers, redis):
    """twistd -n restmq runs the same service tree against an external Redis."""
    server = Server(
        [str(BIN / "twistd"), "-n", "--pidfile=", "restmq", "--redis", redis.url,
         "--http", "tcp:0:interface=127.0.0.1", "--line", "none"],
        cwd=tmp_path,
    )
    servers.append(server)
    server.wait_for("engine ready")
    if "http" not in server.addresses:
        server.wait_for("http listening")
    status, body = http("POST", server.url("/q/t"), b"x", {"accept": "application/json", "content-type": "text/plain"})
    assert status == 201 and json.loads(body)["key"] == "t:1"
    assert server.stop() in TWISTD_CLEAN_EXIT
    server.wait_for("restmq stopped")


@pytest.mark.parametrize("how", ["plugin", "tac"])
def test_twistd_logs_json_lines_with_log_format_json(tmp_path, servers, redis, how):
    """Under twistd (plugin or tac), --log-format json / RESTMQ_LOG_FORMAT=json makes every log line a JSON object."""
    common = {"RESTMQ_REDIS": redis.url, "RESTMQ_HTTP": "tcp:0:interface=127.0.0.1", "RESTMQ_LINE": "none"}
    if how == "plugin":
        argv = [str(BIN / "twistd"), "-n", "--pidfile=", "restmq", "--log-format", "json", "--redis", redis.url,
                "--http", "tcp:0:interface=127.0.0.1", "--line", "none"]
        env = {}
    else:
        argv = [str(BIN / "twistd"), "-ny", str(ROOT / "restmq_server.tac"), "--pidfile="]
        env = {**common, "RESTMQ_LOG_FORMAT": "json"}
    server = Server(argv, cwd=tmp_path, env=env)
    servers.append(server)
    server.wait_for("engine ready")
    assert server.stop() in TWISTD_CLEAN_EXIT
    server.wait_for("restmq stopped")
    lines = [line for line in server.log if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), lines[:5]
    events = [json.loads(line) for line in lines]
    listening = [e for e in events if e.get("frontend") == "http" and "listening" in e.get("log_format", "")]
    assert listening and listening[0]["port"] > 0
    assert {"time", "level", "namespace", "message"} <= set(listening[0]) and listening[0]["level"] == "info"


def test_tac_serves_from_environment(tmp_path, servers, redis):
    """twistd -ny restmq_server.tac reads RESTMQ_* variables and answers."""
    server = Server(
        [str(BIN / "twistd"), "-ny", str(ROOT / "restmq_server.tac"), "--pidfile="],
        cwd=tmp_path,
        env={"RESTMQ_REDIS": redis.url, "RESTMQ_HTTP": "tcp:0:interface=127.0.0.1", "RESTMQ_LINE": "none"},
    )
    servers.append(server)
    server.wait_for("engine ready")
    if "http" not in server.addresses:
        server.wait_for("http listening")
    status, body = http("GET", server.url("/stats"))
    assert status == 200 and "queues" in json.loads(body)
    assert server.stop() in TWISTD_CLEAN_EXIT
    server.wait_for("restmq stopped")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_twistd_epoll_binds_then_drops_privileges(tmp_path, servers, redis):
    """twistd --reactor=epoll --uid --gid binds as root, then serves as the unprivileged user."""
    server = Server(
        [str(BIN / "twistd"), "--reactor=epoll", "--uid=65534", "--gid=65534", "-n", "--pidfile=",
         "restmq", "--redis", redis.url, "--http", "tcp:0:interface=127.0.0.1", "--line", "none"],
        cwd=tmp_path,
    )
    servers.append(server)
    server.wait_for("EPollReactor")
    server.wait_for("engine ready")
    status_file = Path(f"/proc/{server.proc.pid}/status").read_text()
    assert re.search(r"^Uid:\s+65534\s", status_file, re.M), status_file
    status, body = http("POST", server.url("/q/u"), b"value=x", {"content-type": "application/x-www-form-urlencoded"})
    assert (status, body) == (200, b"u:1\r\n")
    assert json.loads(http("GET", server.url("/q/u"))[1])["value"] == "x"
    assert server.stop() in TWISTD_CLEAN_EXIT


def test_serve_exits_1_when_its_port_is_taken(tmp_path):
    """restmq serve says why and exits 1 when it cannot bind, starting no redis-server."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "restmq.cli", "serve", "--data", str(tmp_path / "data"),
             "--http", f"tcp:{port}:interface=127.0.0.1", "--line", "none"],
            cwd=tmp_path, capture_output=True, text=True, timeout=30,
        )
    assert proc.returncode == 1
    assert "Address already in use" in proc.stdout
    assert not (tmp_path / "data" / "redis.pid").exists()


def test_serve_with_tokens_reloads_them_on_sighup(tmp_path, servers, redis):
    """restmq serve --auth-file refuses calls without a token, picks up a new token on SIGHUP, and
    closes a line connection that has not authenticated within --header-timeout."""
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token read,write *\n")
    server = Server(serve_argv(tmp_path / "data", "--redis", redis.url, "--auth-file", str(tokens),
                               "--header-timeout", "1"), cwd=tmp_path)
    servers.append(server)
    server.wait_for("engine ready")
    assert http("POST", server.url("/q/t"), b"x", {"content-type": "text/plain"})[0] == 401
    ok = {"content-type": "text/plain", "authorization": "Bearer old-token"}
    assert http("POST", server.url("/q/t"), b"x", ok)[0] == 200
    tokens.write_text("new-token read,write *\n")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("auth file reloaded")
    assert http("POST", server.url("/q/t"), b"x", ok)[0] == 401
    assert http("POST", server.url("/q/t"), b"x", {**ok, "authorization": "Bearer new-token"})[0] == 200
    host, port = server.addresses["line"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as silent:
        assert json.loads(silent.recv(65536)) == {"error": "not authenticated within 1 s", "code": "unauthorized"}
        assert silent.recv(65536) == b""
    assert server.stop() == 0
