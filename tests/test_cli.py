"""The ``restmq`` client subcommands as real processes against one ``restmq serve`` process."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.test_process import Server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory) -> Iterator[Server]:
    """One ``restmq serve`` on the test Redis for the whole module (each test uses its own queues)."""
    assert redis_server.cli("FLUSHALL").startswith(b"+OK")
    proc = Server(
        [sys.executable, "-m", "restmq.cli", "serve", "--redis", redis_server.url,
         "--http", "tcp:0:interface=127.0.0.1", "--line", "none", "--log-format", "json"],
        cwd=tmp_path_factory.mktemp("cli"),
    )
    try:
        proc.wait_for("engine ready")
        while "http" not in proc.addresses:
            proc.wait_for("listening")
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(10)


def env_for(server: Server) -> dict[str, str]:
    return {**os.environ, "RESTMQ_URL": server.url()}


def restmq(server: Server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m restmq.cli ARGS`` against ``server``; answer the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "restmq.cli", *args], input=stdin, capture_output=True, text=True,
        timeout=30, env=env_for(server), cwd=ROOT,
    )


def load_test(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python bench/load.py ARGS`` (the load test, formerly ``restmq bench``) against ``server``."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), *args], capture_output=True, text=True,
        timeout=30, env=env_for(server), cwd=ROOT,
    )


def test_push_a_value_then_pull_prints_text_and_json(server):
    """push prints the key; pull prints a text value raw, a JSON value as JSON, --json the message."""
    assert restmq(server, "push", "p1", "hello world").stdout == "p1:1\n"
    assert restmq(server, "push", "p1", '{"n": [1, 2]}', "--json-value", "--priority", "9").stdout == "p1:2\n"
    assert restmq(server, "push", "p1", "last", "--json").stdout.strip() == json.dumps(
        {"queue": "p1", "value": "last", "key": "p1:3"})
    pulled = restmq(server, "pull", "p1")
    assert (pulled.returncode, pulled.stdout) == (0, "hello world\n")
    full = restmq(server, "take", "p1", "--json")
    assert json.loads(full.stdout)["value"] == "last"
    assert restmq(server, "pull", "p1").stdout == '{"n": [1, 2]}\n'


def test_push_unique_adds_a_queued_value_once(server):
    """push --unique says when the value was already queued; --unique on stdin lines skips repeats."""
    assert restmq(server, "push", "u1", "job", "--unique").stdout == "u1:1\n"
    assert restmq(server, "push", "u1", "job", "--unique").stdout == "u1:1 (already queued)\n"
    assert restmq(server, "push", "u1", "-", "--unique", stdin="job\nother\nother\n").returncode == 0
    assert restmq(server, "len", "u1").stdout == "ready=2 reserved=0 delayed=0 dead=0\n"


def test_push_stdin_sends_batches_and_prints_every_key(server):
    """push QUEUE - adds each stdin line through add_many batches and prints all the keys."""
    lines = "".join(f"line {i}\n" for i in range(1, 1201)) + "\n"
    done = restmq(server, "push", "p2", "-", stdin=lines)
    assert done.returncode == 0, done.stderr
    keys = done.stdout.split()
    assert len(keys) == 1200 and keys[0] == "p2:1" and keys[-1] == "p2:1200"
    assert restmq(server, "len", "p2").stdout == "ready=1200 reserved=0 delayed=0 dead=0\n"
    pulled = restmq(server, "pull", "p2", "--count", "2")
    assert pulled.stdout == "line 1\nline 2\n"


def test_push_stdin_on_a_terminal_shows_progress_instead_of_keys(server):
    """With stderr on a terminal, push - prints an updating "pushed N" line and no keys."""
    master, slave = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "restmq.cli", "push", "p3", "-", "--batch", "2"],
            input=b"a\nb\nc\n", stdout=subprocess.PIPE, stderr=slave, timeout=30, env=env_for(server),
        )
        os.close(slave)
        slave = -1
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert done.returncode == 0 and done.stdout == b""
    assert b"\rpushed 2" in shown and shown.endswith(b"\rpushed 3\r\n")


def test_empty_queue_exits_1_for_pull_reserve_and_peek(server):
    """pull, reserve and peek exit 1 with no output when the queue has nothing for them."""
    for args in (["pull", "e1"], ["pull", "e1", "-n", "3"], ["reserve", "e1"], ["peek", "e1"],
                 ["pull", "e1", "--wait", "0.1"]):
        done = restmq(server, *args)
        assert (done.returncode, done.stdout, done.stderr) == (1, "", ""), args


def test_server_errors_exit_3_with_code_and_message(server):
    """A bad queue name and an unreachable server exit 3 with "restmq: <code>: <message>"."""
    bad = restmq(server, "push", "bad name!", "x")
    assert bad.returncode == 3
    assert bad.stderr.startswith("restmq: bad_queue_name: invalid queue name")
    down = restmq(server, "len", "q", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 3 and down.stderr.startswith("restmq: backend_unavailable: cannot reach")


def test_usage_errors_exit_2_and_help_exits_0(server):
    """Missing arguments, bad numbers and unknown commands exit 2; --help lists the commands."""
    for args in (["pull"], ["pull", "q", "--count", "many"], ["frobnicate"], ["ack", "q"],
                 ["call", "not json"], ["push", "q", "-", "--dedup", "d"]):
        done = restmq(server, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "restmq: " in done.stderr
    top = restmq(server, "--help")
    assert top.returncode == 0
    for command in ("push", "pull", "reserve", "stats", "tail", "bench", "serve"):
        assert command in top.stdout
    sub = restmq(server, "reserve", "--help")
    assert sub.returncode == 0 and "Usage: restmq reserve QUEUE" in sub.stdout and "--lease" in sub.stdout


def test_reserve_nack_reserve_ack(server):
    """reserve prints RECEIPT<TAB>VALUE; nack gives the message back; ack deletes it."""
    restmq(server, "push", "r1", "job")
    receipt, value = restmq(server, "reserve", "r1", "--lease", "30").stdout.rstrip("\n").split("\t")
    assert value == "job"
    assert restmq(server, "peek", "r1", "--state", "reserved").stdout == "r1:1\tjob\n"
    assert restmq(server, "nack", "r1", receipt, "--error", "try again").stdout == "nacked 1\n"
    again = json.loads(restmq(server, "reserve", "r1", "--json").stdout)
    assert again["attempts"] == 2
    assert restmq(server, "ack", "r1", again["receipt"]).stdout == "acked 1\n"
    stale = restmq(server, "ack", "r1", again["receipt"])
    assert stale.returncode == 3 and stale.stderr.startswith("restmq: stale_receipt:")
    assert restmq(server, "len", "r1", "--json").returncode == 0


def test_stats_table_and_json(server):
    """stats prints a table with a row per queue (and a queue's counters); --json prints the JSON."""
    restmq(server, "push", "s1", "a")
    table = restmq(server, "stats")
    assert table.returncode == 0
    header = next(line for line in table.stdout.splitlines() if line.startswith("queue "))
    assert header.split() == ["queue", "ready", "reserved", "delayed", "dead", "state", "policy", "subscribers"]
    row = next(line for line in table.stdout.splitlines() if line.startswith("s1 "))
    assert row.split()[:2] == ["s1", "1"]
    assert "s1" in json.loads(restmq(server, "stats", "--json").stdout)["queues"]
    one = restmq(server, "stats", "s1")
    assert one.stdout.startswith("queue s1: running") and "added" in one.stdout
    assert json.loads(restmq(server, "stats", "s1", "--json").stdout)["counters"]["added"] == 1


def test_admin_commands_and_call(server):
    """pause, resume, purge, redrive and call run their commands and print short answers."""
    restmq(server, "push", "a1", "x")
    assert restmq(server, "pause", "a1").stdout == "a1 paused\n"
    assert restmq(server, "pull", "a1").returncode == 1  # paused: nothing is delivered
    assert restmq(server, "resume", "a1").stdout == "a1 running\n"
    assert restmq(server, "redrive", "a1", "--count", "5").stdout == "moved 0\n"
    called = restmq(server, "call", '{"cmd": "add", "queue": "a1", "value": {"k": 1}}')
    assert json.loads(called.stdout) == {"queue": "a1", "value": {"k": 1}, "key": "a1:2"}
    assert restmq(server, "purge", "a1").stdout == "purged 2\n"
    assert restmq(server, "call", '{"cmd": "take", "queue": "a1"}').returncode == 1
    assert restmq(server, "call", '{"cmd": "nope"}').stderr.startswith("restmq: unknown_command:")


def test_tail_prints_each_new_message(server):
    """tail follows the stream: a message pushed meanwhile is printed as one line; SIGTERM ends it cleanly."""
    tail = subprocess.Popen(
        [sys.executable, "-m", "restmq.cli", "tail", "t1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env_for(server),
    )
    try:
        deadline = time.monotonic() + 10
        while json.loads(restmq(server, "stats", "t1", "--json").stdout).get("subscribers", 0) < 1:
            assert time.monotonic() < deadline, "tail did not subscribe"
            time.sleep(0.05)
        restmq(server, "push", "t1", "streamed line")
        assert tail.stdout is not None
        assert tail.stdout.readline() == "streamed line\n"
        tail.terminate()
        assert tail.wait(10) == 0
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait(10)


def test_tail_ends_when_the_queue_is_purged(server):
    """tail exits 0 by itself when the server ends the stream (purge)."""
    tail = subprocess.Popen(
        [sys.executable, "-m", "restmq.cli", "tail", "t2", "--json"], stdout=subprocess.PIPE, text=True,
        env=env_for(server),
    )
    try:
        deadline = time.monotonic() + 10
        while json.loads(restmq(server, "stats", "t2", "--json").stdout).get("subscribers", 0) < 1:
            assert time.monotonic() < deadline, "tail did not subscribe"
            time.sleep(0.05)
        restmq(server, "push", "t2", "one")
        assert tail.stdout is not None
        assert json.loads(tail.stdout.readline())["value"] == "one"
        restmq(server, "purge", "t2")
        assert tail.wait(10) == 0
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait(10)


def test_bench_prints_rates(server):
    """bench/load.py --seconds adds then takes against the server and prints messages per second."""
    done = load_test(server, "--seconds", "1", "--queue", "bench1")
    assert done.returncode == 0, done.stderr
    add, take = done.stdout.splitlines()
    assert add.startswith("add:") and add.endswith("msgs/s") and take.startswith("take:")
    result = json.loads(load_test(server, "-s", "0.2", "-q", "bench1", "--json").stdout)
    assert result["added"] > 0 and result["taken"] > 0 and result["add_rate"] > 0
    assert restmq(server, "len", "bench1").stdout.startswith("ready=0 ")


def test_bench_command_says_where_the_load_test_went(server):
    """restmq bench exits 2 and prints the bench/load.py command line that replaces it."""
    done = restmq(server, "bench", "--seconds", "5")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.endswith("run: python bench/load.py --seconds 5\n")
