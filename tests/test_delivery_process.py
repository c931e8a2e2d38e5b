"""At-least-once across kill -9: consumers reserve and ack over HTTP while `restmq serve` is killed.

`restmq serve` runs with its embedded Redis (AOF on). 300 messages are added, four consumer threads
reserve 10 at a time with a 0.5 s lease and ack half of each batch (the other half comes back when the
lease runs out), and RestMQ is killed with SIGKILL in the middle of that. A second `restmq serve` on
the same data directory then drains the queue (reserve + ack until nothing is ready, reserved or
delayed). Invariants (docs/guarantees.md: "a crash of the server at any instant leaves each message in
exactly one place"):

* no message is lost: every added key was acked (200) before the kill, or is drained after it, or was
  in an ack whose answer the kill swallowed (then the ack may or may not have happened);
* an acked message never comes back, and no key is acked twice;
* the drain sees each key once (its lease outlives the drain), and nothing ends in the dead-letter
  queue (no message is delivered anywhere near ``max_attempts`` = 5 times here).

A message may be delivered more than once (at-least-once); that is counted, not refused.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.test_process import Server, serve_argv, servers  # noqa: F401 - servers is a fixture

N = 300
CONSUMERS = 4
LEASE = 0.5
BATCH = 10
JSON = {"content-type": "application/json", "accept": "application/json"}


class Gone(Exception):
    """The server did not answer (killed, or not listening)."""


def request(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    """(status, parsed JSON body or None); HTTP errors are answers; a connection that fails or breaks
    raises ``Gone``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=JSON if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (OSError, http.client.HTTPException) as e:
        raise Gone(f"{method} {url}: {e!r}") from e
    return status, (json.loads(raw) if raw.strip() else None)


def started(tmp_path: Path, servers: list[Server]) -> Server:  # noqa: F811
    server = Server(serve_argv(tmp_path / "data", "--line", "none"), cwd=tmp_path)
    servers.append(server)
    server.wait_for("engine ready")
    while "http" not in server.addresses:
        server.wait_for("listening")
    return server


class Consumers:
    """Threads reserving ``BATCH`` messages with a ``LEASE`` and acking every other one, until told
    to stop or their server is gone; everything they saw is recorded under one lock."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.acked: set[str] = set()
        self.acked_twice: list[str] = []
        self.uncertain: set[str] = set()  # in an ack whose answer never came
        self.deliveries = 0
        self.stale = 0
        self.problems: list[str] = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(CONSUMERS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a consumer did not stop"

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status, got = request("GET", f"{self.base}/q/work?lease={LEASE}&count={BATCH}")
            except Gone:
                return  # the server is gone
            if status == 204 or got == []:
                time.sleep(0.02)
                continue
            if status != 200 or not isinstance(got, list):
                with self.lock:
                    self.problems.append(f"reserve answered {status} {got!r}")
                return
            mine = got[::2]
            with self.lock:
                self.deliveries += len(got)
            try:
                status, answer = request("POST", f"{self.base}/q/work/ack", {"receipt": [m["receipt"] for m in mine]})
            except Gone:
                with self.lock:
                    self.uncertain.update(m["key"] for m in mine)
                return
            with self.lock:
                if status == 200 and isinstance(answer, dict) and answer.get("acked") == len(mine):
                    for m in mine:
                        if m["key"] in self.acked:
                            self.acked_twice.append(m["key"])
                        self.acked.add(m["key"])
                elif status == 409 and isinstance(answer, dict) and answer.get("code") == "stale_receipt":
                    self.stale += 1  # a lease ran out first: nothing was acked (all-or-nothing)
                else:
                    self.problems.append(f"ack answered {status} {answer!r}")
                    return


def test_kill_9_mid_workload_loses_no_message(tmp_path, servers):  # noqa: F811
    """Reserve/ack consumers, kill -9, restart on the same data: acked ∪ drained covers every key."""
    begun = time.monotonic()
    first = started(tmp_path, servers)
    keys: list[str] = []
    for start in range(0, N, 100):
        batch = [f"job {i}" for i in range(start, start + 100)]
        status, answer = request("POST", first.url("/q/work"), {"messages": batch})
        assert status == 201, (status, answer)
        keys += answer["keys"]
    assert len(set(keys)) == N

    consumers = Consumers(first.url())
    consumers.start()
    # Kill once the first leases ran out and redeliveries are being reserved and acked (about 0.5 s
    # in; at most 3 s on a slow machine), so the kill lands among in-flight reserves and acks.
    soonest, latest = time.monotonic() + 0.5, time.monotonic() + 3
    while time.monotonic() < latest:
        with consumers.lock:
            if time.monotonic() >= soonest and consumers.deliveries > N + BATCH * CONSUMERS:
                break
        time.sleep(0.005)
    first.stop(signal.SIGKILL)
    consumers.join(15)
    assert not consumers.problems, consumers.problems
    assert not consumers.acked_twice, f"acked twice: {consumers.acked_twice}"
    acked_before = len(consumers.acked)
    assert 0 < acked_before < N, f"the kill did not land mid-workload ({acked_before} of {N} acked)"

    second = started(tmp_path, servers)
    drained: list[str] = []
    redelivered_acked: list[str] = []
    deadline = time.monotonic() + 15
    while True:
        status, got = request("GET", second.url("/q/work?lease=10&count=100"))
        if status == 200 and got:
            for m in got:
                (redelivered_acked if m["key"] in consumers.acked else drained).append(m["key"])
            status, answer = request("POST", second.url("/q/work/ack"), {"receipt": [m["receipt"] for m in got]})
            assert status == 200 and answer["acked"] == len(got), (status, answer)
            continue
        assert status in (200, 204), (status, got)
        status, length = request("POST", second.url("/queue"), {"cmd": "len", "queue": "work"})
        assert status == 200, (status, length)
        if length["ready"] + length["reserved"] + length["delayed"] == 0:
            break
        assert time.monotonic() < deadline, f"still not drained after 15 s: {length}"
        time.sleep(0.05)

    assert not redelivered_acked, f"acked before the kill, delivered again after it: {redelivered_acked}"
    assert len(drained) == len(set(drained)), "the drain saw a key twice within one 10 s lease"
    lost = set(keys) - consumers.acked - set(drained) - consumers.uncertain
    assert not lost, f"lost across kill -9: {sorted(lost, key=lambda k: int(k.split(':')[1]))}"
    assert set(drained) <= set(keys), f"unknown keys drained: {set(drained) - set(keys)}"
    assert length["dead"] == 0, length
    print(f"\n{N} messages, {consumers.deliveries} deliveries before the kill, {acked_before} acked, "
          f"{len(consumers.uncertain)} in acks cut by the kill ({len(consumers.uncertain - set(drained))} of them "
          f"applied), {consumers.stale} stale acks, {len(drained)} drained after the restart; "
          f"{time.monotonic() - begun:.1f} s")
    assert second.stop() == 0
