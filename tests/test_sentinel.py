"""Sentinel failover: a master, a replica and three Sentinels on loopback; the master is killed -9 and
a real ``restmq serve`` on ``redis+sentinel://`` follows the new master, pool and pub/sub alike."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, redis_binary
from tests.test_process import Server, http as request, serve_argv, servers  # noqa: F401  (fixture)


def ask(port: int, *command: str) -> bytes:
    """One inline command to a Redis or Sentinel on loopback; its raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall((" ".join(command) + "\r\n").encode())
        time.sleep(0.05)
        return s.recv(65536)


def wait_until(check, timeout: float, what: str) -> float:
    began = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - began
        except OSError:
            pass
        assert time.monotonic() - began < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def sentinels(tmp_path):
    """A master, one replica and three Sentinels (down after 500 ms): (master port, replica port, sentinel ports, procs)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        procs.append(subprocess.Popen([redis_binary(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    master, replica = free_port(), free_port()
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    start("--port", str(master), *common)
    wait_until(lambda: b"PONG" in ask(master, "PING"), 10, "the master")
    start("--port", str(replica), "--replicaof", "127.0.0.1", str(master), *common)
    wait_until(lambda: b"master_link_status:up" in ask(replica, "INFO", "replication"), 10, "the replica")
    ports = [free_port() for _ in range(3)]
    for port in ports:
        conf = tmp_path / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master} 2\n"
            "sentinel down-after-milliseconds mymaster 500\n"
            "sentinel failover-timeout mymaster 3000\n"
        )
        start(str(conf), "--sentinel")
    for port in ports:
        wait_until(lambda: b"num-other-sentinels" in ask(port, "SENTINEL", "MASTER", "mymaster")
                   and b"\r\n2\r\n" in ask(port, "SENTINEL", "MASTER", "mymaster").split(b"num-other-sentinels")[1][:20],
                   15, "the sentinels to know each other")
    yield master, replica, ports, procs
    for proc in procs:
        proc.kill()
        proc.wait(10)


def test_restmq_follows_a_sentinel_failover_within_5_s(tmp_path, servers, sentinels):  # noqa: F811
    """After the master is killed -9, adds work again within 5 s of the replica's promotion and a long poll is woken by an add on the new master."""
    master, replica, ports, procs = sentinels
    url = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/mymaster/0"
    server = Server(serve_argv(tmp_path / "data", "--redis", url, "--redis-timeout", "0.5"), cwd=tmp_path)
    servers.append(server)
    server.wait_for("engine ready")
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert request("POST", server.url("/q/jobs"), b"value=before", form)[0] == 200
    wait_until(lambda: b"rmq:{jobs}" in ask(replica, "KEYS", "*"), 5, "the add to reach the replica")
    procs[0].send_signal(signal.SIGKILL)  # the master
    killed = time.monotonic()
    # Sentinel's own election takes about a second here (longer when a first vote splits).
    promoted = wait_until(lambda: b"role:master" in ask(replica, "INFO", "replication"), 30, "the promotion")
    wait_until(lambda: request("POST", server.url("/q/jobs"), b"value=after", form)[0] == 200, 15, "adds to work again")
    recovered = time.monotonic() - killed
    assert recovered - promoted < 5.0, f"adds worked again {recovered - promoted:.2f} s after the promotion"

    answer: dict = {}

    def long_poll() -> None:
        began = time.monotonic()
        status, body = request("GET", server.url("/q/wake?wait=10"))
        answer.update(status=status, body=body, took=time.monotonic() - began)

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(0.5)
    assert request("POST", server.url("/q/wake"), b"value=hello", form)[0] == 200
    poller.join(15)
    assert answer["status"] == 200 and json.loads(answer["body"])["value"] == "hello"
    assert answer["took"] < 2.0, f"the long poll was woken only after {answer['took']:.2f} s (pub/sub on the old master?)"
    values = []
    while True:
        status, body = request("GET", server.url("/q/jobs"))
        if status != 200:
            break
        values.append(json.loads(body)["value"])
    assert "after" in values and "before" in values
    assert server.stop() == 0
    print(f"promoted {promoted:.2f} s after the kill; adds worked again {recovered:.2f} s after it")


def test_replicas_1_acknowledges_writes_only_once_replicated_and_loses_none_across_failover(
    tmp_path, servers, sentinels  # noqa: F811
):
    """With --replicas 1 an add is refused (503) while the replica is frozen, and every add answered success survives the master's death."""
    master, replica, ports, procs = sentinels
    url = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/mymaster/0"
    server = Server(serve_argv(tmp_path / "data", "--redis", url, "--replicas", "1", "--redis-timeout", "1"),
                    cwd=tmp_path)
    servers.append(server)
    server.wait_for("engine ready")
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert request("POST", server.url("/q/jobs"), b"value=first", form)[0] == 200
    procs[1].send_signal(signal.SIGSTOP)  # the replica stops acknowledging
    try:
        began = time.monotonic()
        status, body = request("POST", server.url("/q/jobs"), b"value=unreplicated", form)
        assert status == 503 and b"replicas acknowledged" in body and time.monotonic() - began < 2.0
    finally:
        procs[1].send_signal(signal.SIGCONT)
    wait_until(lambda: request("POST", server.url("/q/jobs"), b"value=again", form)[0] == 200, 5, "adds again")

    answered: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            status, body = request("POST", server.url("/q/load"), f"value=m{n}".encode(), form)
            if status == 200:
                answered.append(f"m{n}")

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(1.0)
    procs[0].send_signal(signal.SIGKILL)  # the master, mid-load
    wait_until(lambda: b"role:master" in ask(replica, "INFO", "replication"), 30, "the promotion")
    time.sleep(2.0)
    stop.set()
    producer.join(15)
    taken = []
    while True:
        status, body = request("GET", server.url("/q/load?count=1000"))
        if status != 200 or not json.loads(body):
            break
        taken.extend(m["value"] for m in json.loads(body))
    missing = set(answered) - set(taken)
    assert answered and not missing, f"{len(missing)} of {len(answered)} acknowledged adds lost, e.g. {sorted(missing)[:5]}"
    print(f"--replicas 1: {len(answered)} adds acknowledged around the failover, none lost")
    assert server.stop() == 0
