"""Operators: failing fast and clearly at start, dropping privileges with the embedded Redis, and a
/health a load balancer can probe without a token."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from restmq.dispatch import Dispatcher
from restmq.frontends.http.routes import build_site
from tests.conftest import make_engine, start_redis
from tests.test_process import BIN, ROOT, TWISTD_CLEAN_EXIT, Server, http, kill_processes_under, servers  # noqa: F401

# -- fail fast: one line, no traceback, a non-zero exit within seconds --------------------------

LISTEN = ["--http", "tcp:0:interface=127.0.0.1", "--line", "none"]
#: The option names as the tac's RESTMQ_* variables.
ENV_NAMES = {"--http": "RESTMQ_HTTP", "--line": "RESTMQ_LINE", "--data": "RESTMQ_DATA",
             "--redis-server": "RESTMQ_REDIS_SERVER", "--durability": "RESTMQ_DURABILITY"}


def start_argv(how: str, options: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line (and environment) that starts RestMQ ``how`` with ``options``."""
    if how == "serve":
        return [str(BIN / "restmq"), "serve", *options], {}
    if how == "twistd":
        return [str(BIN / "twistd"), "-n", "--pidfile=", "restmq", *options], {}
    pairs = dict(zip(options[::2], options[1::2]))
    return [str(BIN / "twistd"), "-ny", str(ROOT / "restmq_server.tac"), "--pidfile="], {
        ENV_NAMES[name]: value for name, value in pairs.items()
    }


def run_failing(how: str, options: list[str], cwd: Path) -> tuple[int, str, float]:
    """Start RestMQ expecting it to refuse: its exit code, all it printed, and how long it took."""
    argv, env = start_argv(how, options)
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def assert_one_clear_line(output: str, pattern: str) -> None:
    """The reason is said once, in one line, and no traceback is printed."""
    assert "Traceback" not in output, output
    matching = [line for line in output.splitlines() if re.search(pattern, line)]
    assert len(matching) == 1, output


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


@pytest.fixture
def locked_data(tmp_path: Path, servers: list[Server]) -> Path:  # noqa: F811
    """A data dir a running RestMQ holds."""
    data = tmp_path / "held"
    holder = Server([str(BIN / "restmq"), "serve", "--data", str(data), *LISTEN], cwd=tmp_path)
    servers.append(holder)
    holder.wait_for("engine ready")
    return data


HOW = ["serve", "twistd", "tac"]


@pytest.mark.parametrize("how", HOW)
def test_a_port_in_use_fails_the_start(tmp_path, busy_port, how):
    """A listener that cannot bind: exit 1 within seconds, one line naming the endpoint, no traceback."""
    code, output, took = run_failing(
        how, ["--data", str(tmp_path / "data"), "--http", f"tcp:{busy_port}:interface=127.0.0.1", "--line", "none"],
        tmp_path,
    )
    assert code == 1 and took < 10, (code, took, output)
    assert_one_clear_line(output, rf"cannot start: --http tcp:{busy_port}\S*: cannot listen: .*Address already in use")
    assert "listening on" not in output


@pytest.mark.parametrize("how", HOW)
def test_a_locked_data_dir_fails_the_start(tmp_path, locked_data, how):
    """A data dir another RestMQ holds: exit 1 within seconds, one line naming it, no traceback."""
    code, output, took = run_failing(how, ["--data", str(locked_data), *LISTEN], tmp_path)
    assert code == 1 and took < 10, (code, took, output)
    assert_one_clear_line(output, rf"cannot start: data dir {re.escape(str(locked_data))} is in use by another RestMQ")
    assert "listening on" not in output


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("binary", ["/nonexistent", "/bin/false"])
def test_a_missing_or_unusable_redis_binary_fails_the_start(tmp_path, how, binary):
    """--redis-server that is missing or is no Redis: exit 1 within seconds, one line, no traceback."""
    code, output, took = run_failing(how, ["--data", str(tmp_path / "data"), "--redis-server", binary, *LISTEN],
                                     tmp_path)
    assert code == 1 and took < 10, (code, took, output)
    assert_one_clear_line(output, rf"cannot start: .*{re.escape(binary)}")
    assert "listening on" not in output


@pytest.mark.parametrize("how", HOW)
def test_an_invalid_option_fails_the_start(tmp_path, how):
    """A bad option value: exit 2 at once, one line saying what is wrong (not the whole help)."""
    code, output, took = run_failing(how, ["--durability", "sometimes"], tmp_path)
    assert code == 2 and took < 10, (code, took, output)
    assert_one_clear_line(output, r"durability must be one of everysec, always, not 'sometimes'")
    assert len(output.strip().splitlines()) == 1, output


def test_a_daemonized_twistd_reports_a_failed_start_and_logs_it(tmp_path, locked_data):
    """twistd without -n: the launching process exits 1 saying why, and the log file has the one line."""
    logfile = tmp_path / "twistd.log"
    proc = subprocess.run(
        [str(BIN / "twistd"), f"--pidfile={tmp_path / 'twistd.pid'}", f"--logfile={logfile}", "restmq",
         "--data", str(locked_data), *LISTEN],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )
    # twistd's parent prints the first 100 bytes of the reason and points to the log
    assert proc.returncode == 1 and "An error has occurred: b'restmq.startup.StartError: data dir" in proc.stderr
    deadline = time.monotonic() + 5
    while "cannot start" not in (logfile.read_text() if logfile.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_one_clear_line(logfile.read_text(), r"cannot start: data dir .* is in use by another RestMQ")
    deadline = time.monotonic() + 5  # the daemon removes its pid file as it exits, after the log line
    while (tmp_path / "twistd.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (tmp_path / "twistd.pid").exists()


def test_twistd_exits_1_when_the_embedded_redis_dies_at_start(tmp_path):
    """A Redis that passes the checks but exits at start-up: twistd stops within seconds with exit 1
    (it used to stay up answering 503 forever)."""
    fake = tmp_path / "fake-redis"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Redis server v=7.2.0" && exit 0\n'
                    'echo "FATAL: cannot start" >&2; exit 3\n')
    fake.chmod(0o755)
    code, output, took = run_failing("twistd", ["--data", str(tmp_path / "data"), "--redis-server", str(fake), *LISTEN],
                                     tmp_path)
    assert code == 1 and took < 15, (code, took, output)
    assert "restmq cannot run: redis-server exited during start-up (exit code 3)" in output
    assert "Traceback" not in output


def test_an_external_redis_down_at_start_keeps_serving(tmp_path, servers):  # noqa: F811
    """--redis pointing at nothing is not a start failure: RestMQ serves backend_unavailable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nothing = s.getsockname()[1]
    server = Server([str(BIN / "twistd"), "-n", "--pidfile=", "restmq", "--redis", f"redis://127.0.0.1:{nothing}/0",
                     *LISTEN], cwd=tmp_path)
    servers.append(server)
    server.wait_for("http listening")
    status, body = http("POST", server.url("/q/q"), b"value=x", {"content-type": "application/x-www-form-urlencoded"})
    assert status == 503 and json.loads(body)["code"] == "backend_unavailable"
    assert server.proc.poll() is None
    assert server.stop() in TWISTD_CLEAN_EXIT


# -- twistd --uid/--gid with the embedded Redis -------------------------------------------------


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A fresh directory under /tmp that any user can traverse (pytest's own tmp dirs are 0700);
    processes left running from it are killed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="restmq-ops-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    kill_processes_under(path)
    shutil.rmtree(path, ignore_errors=True)


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^Uid:\s+(\d+)", status, re.M)
    assert found, status
    return int(found.group(1))


def production_line(data: Path) -> list[str]:
    """The production twistd line of docs/operations.md, on a loopback port 0."""
    return [str(BIN / "twistd"), "--reactor=epoll", "--uid=nobody", "--gid=nogroup", "-n", "--pidfile=",
            "restmq", "--data", str(data), *LISTEN]


@pytest.mark.skipif(os.geteuid() != 0, reason="twistd --uid/--gid needs root")
def test_production_twistd_line_hands_the_data_dir_to_the_service_user(open_tmp, servers):  # noqa: F811
    """twistd --uid=nobody --gid=nogroup with a data dir that does not exist yet, then with one a run
    as root left behind: both serve, and redis-server runs as nobody."""
    data = open_tmp / "var" / "restmq"
    first = Server(production_line(data), cwd=open_tmp)
    servers.append(first)
    first.wait_for("engine ready", timeout=30)
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert http("POST", first.url("/q/jobs"), b"value=one", form) == (200, b"jobs:1\r\n")
    assert json.loads(http("GET", first.url("/q/jobs"))[1])["value"] == "one"
    assert uid_of(int((data / "redis.pid").read_text())) == 65534
    assert uid_of(first.proc.pid) == 65534
    assert oct(data.stat().st_mode & 0o777) == oct(0o700) and data.stat().st_uid == 65534
    assert first.stop() in TWISTD_CLEAN_EXIT

    left = open_tmp / "left-by-root"
    as_root = Server([str(BIN / "restmq"), "serve", "--data", str(left), *LISTEN], cwd=open_tmp)
    servers.append(as_root)
    as_root.wait_for("engine ready")
    assert http("POST", as_root.url("/q/jobs"), b"value=kept", form) == (200, b"jobs:1\r\n")
    assert as_root.stop() == 0
    assert left.stat().st_uid == 0 and (left / "redis.conf").stat().st_uid == 0

    second = Server(production_line(left), cwd=open_tmp)
    servers.append(second)
    second.wait_for("engine ready", timeout=30)
    assert json.loads(http("GET", second.url("/q/jobs"))[1])["value"] == "kept"
    assert http("POST", second.url("/q/jobs"), b"value=two", form) == (200, b"jobs:2\r\n")
    assert uid_of(int((left / "redis.pid").read_text())) == 65534
    assert all(p.stat().st_uid == 65534 for p in [left, *left.rglob("*")])
    assert second.stop() in TWISTD_CLEAN_EXIT


@pytest.mark.skipif(os.geteuid() != 0, reason="twistd --uid/--gid needs root")
def test_a_data_dir_the_service_user_cannot_reach_fails_in_one_line(open_tmp):
    """A data dir under a directory only root may enter: exit 1 saying which directory, no traceback."""
    closed = open_tmp / "closed"
    closed.mkdir(mode=0o700)
    proc = subprocess.run(production_line(closed / "data"), cwd=open_tmp, capture_output=True, text=True, timeout=30)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert_one_clear_line(output, rf"cannot be reached by uid 65534: {re.escape(str(closed))} is not searchable")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root (to leave root's files) and setpriv (to run as nobody)")
def test_a_data_dir_of_another_user_is_one_clear_line(open_tmp):
    """restmq serve as nobody on a data dir a run as root left behind: exit 1 saying to chown it."""
    data = open_tmp / "data"
    data.mkdir(mode=0o700)
    (data / "redis.conf").write_text("")
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(BIN / "restmq"), "serve",
         "--data", str(data), *LISTEN],
        cwd=open_tmp, capture_output=True, text=True, timeout=30,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert_one_clear_line(output, rf"belongs to uid 0 .*chown -R nobody {re.escape(str(data))}")


# -- /health without a token --------------------------------------------------------------------


@pytest.fixture
def tokens_file(tmp_path: Path) -> str:
    path = tmp_path / "tokens"
    path.write_text("reader-t read *\nwriter-t write *\n")
    return str(path)


def secured_site(engine, tokens_file: str):
    """An HTTP Site whose dispatcher checks the tokens file; its port and base URL."""
    from restmq.auth import Tokens

    authorize = Tokens(tokens_file).authorize
    site = reactor.listenTCP(0, build_site(Dispatcher(engine, authorize=authorize), reactor=reactor),
                             interface="127.0.0.1")
    return site, f"http://127.0.0.1:{site.getHost().port}"


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    response = await treq.get(url, headers=headers or {}, persistent=False)
    body = await response.content()
    return response.code, (json.loads(body) if body.startswith(b"{") else {"text": body.decode()})


@pytest_twisted.ensureDeferred
async def test_health_without_a_token_says_only_the_status(engine, tokens_file):
    """With --auth-file, GET /health without credentials is 200 {"status": "ok"} (no facts); a read
    token also gets the facts; a wrong token is 401; /metrics still needs a token."""
    site, url = secured_site(engine, tokens_file)
    try:
        assert await get(url + "/health") == (200, {"status": "ok"})
        code, body = await get(url + "/health", {"authorization": "Bearer reader-t"})
        assert code == 200 and body["status"] == "ok" and "version" in body["redis"] and "warnings" in body
        assert (await get(url + "/health", {"authorization": "Bearer wrong"}))[0] == 401
        assert (await get(url + "/health", {"authorization": "Bearer writer-t"}))[0] == 403
        assert (await get(url + "/metrics"))[0] == 401
        assert (await get(url + "/metrics", {"authorization": "Bearer reader-t"}))[0] == 200
    finally:
        await site.stopListening()


@pytest_twisted.ensureDeferred
async def test_health_without_a_token_is_503_when_redis_is_gone(tokens_file):
    """With --auth-file and Redis down, GET /health without credentials is 503 {"status": "unavailable"}."""
    private = start_redis(tempfile.mkdtemp(prefix="restmq-ops-gone-"))
    engine = await make_engine(private, timeout=0.5)
    site, url = secured_site(engine, tokens_file)
    try:
        assert await get(url + "/health") == (200, {"status": "ok"})
        private.process.terminate()
        private.process.wait(10)
        code, body = await get(url + "/health")
        assert code == 503 and body["status"] == "unavailable" and body["code"] == "backend_unavailable"
        assert "redis" not in body
        code, body = await get(url + "/health", {"authorization": "Bearer reader-t"})
        assert code == 503 and body["code"] == "backend_unavailable"
    finally:
        if private.process.poll() is None:
            private.process.terminate()
        await site.stopListening()
        await engine.stop()
        engine.redis.disconnect()
