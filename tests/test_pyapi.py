"""restmq.client.Queue (queue.Queue over at-least-once delivery) and QueueClient (ZenQueue's API
over the line protocol) against a live `restmq serve`, with consumers in separate processes."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from restmq.client import Queue, QueueClient, RestMQ, Timeout
from restmq.errors import BackendUnavailable, BadQueueName, RestMQError
from tests.conftest import free_port
from tests.test_process import ROOT, Server, serve_argv

#: A consumer process: ``hold`` gets one item and never calls task_done; ``work`` waits for a
#: ``go`` line, then gets and task_dones until the queue stays empty for a second.
CONSUMER = """
import json, queue, sys, time
from restmq.client import Queue
name, url, lease, mode = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
q = Queue(name, url, lease=lease)
if mode == "hold":
    print(json.dumps(q.get(timeout=10)), flush=True)
    time.sleep(120)
print("ready", flush=True)
sys.stdin.readline()
while True:
    try:
        item = q.get(timeout=1.0)
    except queue.Empty:
        break
    time.sleep(0.005)
    print(json.dumps(item), flush=True)
    q.task_done()
q.close()
"""


class Live:
    """A running `restmq serve` (HTTP and line protocol) on the session's test Redis."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = server.url()
        host, port = server.addresses["line"].rsplit(":", 1)
        self.line = (host, int(port))

    def queue(self, name: str, **options: object) -> Queue:
        return Queue(name, self.url, **options)  # type: ignore[arg-type]

    def client(self, name: str, **options: object) -> QueueClient:
        return QueueClient(*self.line, queue=name, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def live(redis_server, tmp_path_factory) -> Iterator[Live]:
    """One `restmq serve` for the module; each test uses queues of its own."""
    tmp = tmp_path_factory.mktemp("pyapi")
    server = Server(serve_argv(tmp / "data", "--redis", redis_server.url), cwd=tmp)
    try:
        server.wait_for("engine ready")
        while "http" not in server.addresses or "line" not in server.addresses:
            server.wait_for("listening")
        yield Live(server)
    finally:
        server.stop()


def consumer(live: Live, name: str, lease: float, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CONSUMER, name, live.url, str(lease), mode],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def counts(live: Live, name: str) -> dict[str, int]:
    with RestMQ(live.url) as mq:
        return mq.len(name)  # type: ignore[no-any-return]


# -- Queue ------------------------------------------------------------------------------------------


def test_queue_put_get_task_done_and_join(live):
    """Items come back in order as JSON values, task_done acks them, and join returns once all are done."""
    with live.queue("pyapi-basic") as q:
        assert q.empty() and q.qsize() == 0
        with pytest.raises(ValueError, match="None cannot be queued"):
            q.put(None)
        items = ["text", 42, {"n": [1, 2]}, [None]]
        for item in items:
            q.put(item)
        assert q.qsize() == 4 and not q.empty() and not q.full()
        got = [q.get(), q.get(timeout=1), q.get(block=True), q.get_nowait()]
        assert got == items
        assert counts(live, "pyapi-basic")["reserved"] == 4
        with pytest.raises(TimeoutError):
            q.join(timeout=0.2)
        for _ in items:
            q.task_done()
        with pytest.raises(ValueError, match="too many times"):
            q.task_done()
        q.join(timeout=5)
        assert counts(live, "pyapi-basic")["len"] == 0


def test_queue_get_raises_empty_at_once_or_after_its_timeout(live):
    """get_nowait and get(block=False) raise queue.Empty at once; get(timeout=0.3) after about 0.3 s."""
    with live.queue("pyapi-empty") as q:
        with pytest.raises(queue.Empty):
            q.get_nowait()
        with pytest.raises(queue.Empty):
            q.get(block=False)
        started = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get(timeout=0.3)
        assert 0.25 < time.monotonic() - started < 2.0
        with pytest.raises(ValueError):
            q.get(timeout=-1)


def test_queue_full_follows_max_length(live):
    """With max_length 2, full() is true, put_nowait and a timed put raise queue.Full, a blocking put
    waits until a consumer frees a slot, and nothing extra was queued."""
    with live.queue("pyapi-full") as q:
        RestMQ(live.url).config("pyapi-full", max_length=2)
        assert q.maxsize == 2
        q.put("a")
        q.put("b")
        assert q.full()
        with pytest.raises(queue.Full):
            q.put_nowait("c")
        started = time.monotonic()
        with pytest.raises(queue.Full):
            q.put("c", timeout=0.3)
        assert time.monotonic() - started >= 0.25
        assert counts(live, "pyapi-full")["ready"] == 2

        def free_a_slot() -> None:
            time.sleep(0.3)
            assert q.get() == "a"
            q.task_done()

        helper = threading.Thread(target=free_a_slot)
        helper.start()
        q.put("c", timeout=5)  # waits for the helper's task_done
        helper.join()
        assert [q.get_nowait(), q.get_nowait()] == ["b", "c"]
        q.task_done()
        q.task_done()
        q.join(timeout=5)


def test_blocking_get_in_one_thread_is_woken_by_put_from_another(live):
    """A get() without timeout blocks in one thread while another thread of the same Queue puts."""
    with live.queue("pyapi-threads") as q:
        got: list[object] = []
        waiter = threading.Thread(target=lambda: got.append(q.get()))
        waiter.start()
        time.sleep(0.3)
        assert not got
        q.put({"wake": True})
        waiter.join(5)
        assert got == [{"wake": True}]
        q.task_done()
        q.join(timeout=5)


def test_lease_is_kept_alive_while_an_item_is_held(live):
    """An item held three times longer than its lease is not redelivered, thanks to the keeper thread."""
    with live.queue("pyapi-keep", lease=0.5) as holder, live.queue("pyapi-keep") as other:
        holder.put("slow job")
        assert holder.get() == "slow job"
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            with pytest.raises(queue.Empty):
                other.get(timeout=0.2)
        holder.task_done()
        holder.join(timeout=5)


def test_without_keepalive_an_item_held_past_its_lease_comes_back(live):
    """keepalive=False: an item held past its lease is delivered again, and the late task_done says so."""
    with live.queue("pyapi-nokeep", lease=0.3, keepalive=False) as slow, live.queue("pyapi-nokeep") as other:
        slow.put("job")
        assert slow.get() == "job"
        assert other.get(timeout=5) == "job"
        with pytest.raises(RestMQError) as info:
            slow.task_done()
        assert info.value.code == "stale_receipt"
        other.task_done()
        other.join(timeout=5)


def test_consumer_processes_share_the_work_each_item_once(live):
    """Three consumer processes drain 60 items: every item processed exactly once, and join returns."""
    name = "pyapi-procs"
    procs = [consumer(live, name, 30.0, "work") for _ in range(3)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with live.queue(name) as q:
            for i in range(60):
                q.put({"job": i})
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            outputs = [proc.communicate(timeout=30)[0] for proc in procs]
            q.join(timeout=5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    done = [[json.loads(line)["job"] for line in out.splitlines()] for out in outputs]
    everything = [job for jobs in done for job in jobs]
    assert sorted(everything) == list(range(60))
    assert sum(1 for jobs in done if jobs) >= 2, f"work was not shared: {[len(j) for j in done]}"
    assert all(proc.returncode == 0 for proc in procs)


def test_killed_consumer_item_is_redelivered_to_another(live):
    """A consumer killed with SIGKILL before task_done loses nothing: its item goes to another consumer."""
    name = "pyapi-kill"
    with live.queue(name) as q:
        q.put("precious")
        q.put("next")
        victim = consumer(live, name, 1.0, "hold")
        try:
            assert victim.stdout is not None
            assert json.loads(victim.stdout.readline()) == "precious"
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
        finally:
            if victim.poll() is None:
                victim.kill()
        assert q.get(timeout=5) == "next"
        started = time.monotonic()
        assert q.get(timeout=10) == "precious"
        assert time.monotonic() - started < 5
        q.task_done()
        q.task_done()
        q.join(timeout=5)
    with RestMQ(live.url) as mq:
        assert mq.stats(name)["counters"]["acked"] == 2


def test_queue_errors_are_restmq_errors(live):
    """A bad queue name raises BadQueueName; an unreachable server raises BackendUnavailable."""
    with live.queue("no spaces allowed") as q:
        with pytest.raises(BadQueueName):
            q.put("x")
    with Queue("q", f"http://127.0.0.1:{free_port()}") as q:
        with pytest.raises(BackendUnavailable):
            q.get_nowait()


# -- QueueClient (ZenQueue) -----------------------------------------------------------------------------


def test_queue_client_push_and_pull_like_zenqueue(live):
    """push, push_many, pull and pull_many return the JSON values in order, as ZenQueue's README shows."""
    with live.client("zen-basic") as c:
        assert c.push("a") == "zen-basic:1"
        assert c.push_many("b", "c", {"d": 1}, [2]) == [f"zen-basic:{n}" for n in (2, 3, 4, 5)]
        assert c.pull() == "a"
        assert c.pull_many(3) == ["b", "c", {"d": 1}]
        assert c.pull(timeout=0) == [2]


def test_queue_client_timeouts_and_partial_pull_many(live):
    """An empty pull raises Timeout after its timeout; pull_many returns a partial result, and
    pull_many(None, timeout=0) drains the queue."""
    with live.client("zen-timeout") as c:
        started = time.monotonic()
        with pytest.raises(Timeout) as info:
            c.pull(timeout=0.3)
        assert 0.25 < time.monotonic() - started < 2.0
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, RestMQError)
        with pytest.raises(QueueClient.Timeout):
            c.pull_many(5, timeout=0)
        c.push_many(1, 2)
        started = time.monotonic()
        assert c.pull_many(5, timeout=0.2) == [1, 2]
        assert time.monotonic() - started < 2.0
        c.push_many(*range(1500))
        assert c.pull_many(None, timeout=0) == list(range(1500))
        with pytest.raises(ValueError):
            c.pull_many(None)
        assert c.pull_many(0) == []


def test_queue_client_blocking_pull_is_woken_by_a_push(live):
    """pull() without timeout waits until another client pushes."""
    got: list[object] = []
    with live.client("zen-wake") as waiting, live.client("zen-wake") as pusher:
        thread = threading.Thread(target=lambda: got.append(waiting.pull()))
        thread.start()
        time.sleep(0.3)
        assert not got
        pusher.push("hello")
        thread.join(5)
    assert got == ["hello"]


def test_queue_client_errors_keep_the_connection_and_unreachable_is_clear(live):
    """A server error is raised as its RestMQError and the connection keeps working; a closed port
    raises BackendUnavailable."""
    with live.client("zen-errors") as c:
        with pytest.raises(BadQueueName):
            c.call("add", queue="bad name", value="x")
        assert c.push("still here") == "zen-errors:1"
        assert c.pull(timeout=0) == "still here"
    with QueueClient("127.0.0.1", free_port()) as gone:
        with pytest.raises(BackendUnavailable):
            gone.push("x")


def test_queue_client_with_a_token(tmp_path: Path, redis_server):
    """With --auth-file, QueueClient sends its token first; a wrong token raises Unauthorized."""
    tokens = tmp_path / "tokens"
    tokens.write_text("zen-token read,write zen-*\n")
    server = Server(serve_argv(tmp_path / "data", "--redis", redis_server.url, "--auth-file", str(tokens)),
                    cwd=tmp_path)
    try:
        server.wait_for("engine ready")
        while "line" not in server.addresses:
            server.wait_for("listening")
        host, port = server.addresses["line"].rsplit(":", 1)
        with QueueClient(host, int(port), token="zen-token", queue="zen-auth") as c:
            c.push("secret")
            assert c.pull(timeout=0) == "secret"
        with QueueClient(host, int(port), token="wrong", queue="zen-auth") as c:
            with pytest.raises(RestMQError) as info:
                c.push("x")
            assert info.value.code == "unauthorized"
    finally:
        server.stop()
