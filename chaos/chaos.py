"""Chaos: real RestMQ and Redis processes killed and frozen under a mixed load; the promises checked.

    .venv/bin/python chaos/chaos.py             # the long run: 25 kills of RestMQ, 10 of Redis, ...
    .venv/bin/python chaos/chaos.py --short     # what CI runs (about a minute)
    .venv/bin/python chaos/chaos.py --json out.json

Scenarios (each on its own private redis-server, ``--appendonly yes``):

* ``kill-restmq``: producers (``add``, ``add_many`` over HTTP), reserve/ack/nack consumers (HTTP) and
  a reserve-mode stream consumer (line ``subscribe``, acking on its connection) run while
  ``restmq serve`` is killed with SIGKILL at random instants and restarted, N times. Then the queue
  is drained (reserve + ack) and checked:

  - every add answered success was delivered and acked at least once (nothing lost);
  - a message acked with success is never delivered again (no delivery with more attempts after
    the ack that succeeded);
  - in Redis every held message is in exactly one of ready / reserved / delayed / dead, and every
    id is below the never-reset counter (ids never reused, nothing in two places);
  - no add answered a key that an earlier add had answered.

* ``kill-redis``: the same load while redis-server is killed with SIGKILL and restarted on its AOF,
  with ``appendfsync always`` (nothing answered success may be lost) and ``everysec`` (the loss
  window is measured). Also measured: how long RestMQ takes to answer ``backend_unavailable`` once
  Redis is gone (promise: within 1 s, ``--redis-timeout``) and to serve again once it is back
  (promise: within 2 s), without a restart of RestMQ.

* ``kill-embedded-redis``: the same with RestMQ's own redis-server (``--durability always``):
  RestMQ notices, restarts it on its AOF (with backoff) and serves again; nothing acknowledged is
  lost. Measured: the seconds from the kill to serving again.

* ``disk-full``: the embedded server's AOF on a 3 MB tmpfs (needs root to mount; skipped otherwise)
  filled by adds, with ``--durability always`` (nothing acknowledged may be lost; Redis exits rather
  than answer a write it could not log, and RestMQ restarts it) and ``everysec`` (Redis refuses
  writes with ``MISCONF … No space left``, but may already have answered the one that failed: the
  loss is measured). The add that does not fit is answered 503, reads keep working.

* ``stall-redis``: the load, plus at-most-once HTTP takers and a COMET subscriber, while
  redis-server is stopped with SIGSTOP for 3 x ``--redis-timeout`` and continued, N times. Calls
  answered in the meantime say "nothing was applied"; the ledger checks that none of them took
  effect later (no add answered so is ever delivered, no message a failed take removed is lost),
  that nothing acked comes back, and that adds work again within 1 s of SIGCONT.

* ``freeze-redis``: redis-server stopped with SIGSTOP: adds answer 503 within the timeout, routes
  that need no Redis still answer at once (the reactor never blocks), ``/health`` says 503; SIGCONT
  and everything works again.

Exit status 0 when every promise held, 1 otherwise; a table of the figures is printed either way.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402 - bench/harness.py: the servers as child processes, shared with the benches

from restmq.backend.embedded import EmbeddedRedisError  # noqa: E402
from restmq.backend.local import TEST_REDIS_ENV, free_port, redis_server_binary  # noqa: E402

QUEUE = "chaos"
LEASE = 2.0


def redis_binary() -> str:
    """$RESTMQ_TEST_REDIS, as for the test suite, else the one ``restmq serve`` would run."""
    try:
        return redis_server_binary(env_var=TEST_REDIS_ENV)
    except EmbeddedRedisError as e:
        raise SystemExit(f"chaos needs a redis-server (or RESTMQ_TEST_REDIS): {e}") from e


class Gone(Exception):
    """No answer: the server is down, was killed mid-request, or did not answer in time."""


def call(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json", "accept": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (OSError, ValueError) as e:
        raise Gone(repr(e)) from e
    try:
        return status, (json.loads(raw) if raw.strip() else None)
    except ValueError:
        return status, raw


# -- processes ----------------------------------------------------------------------------------


class Redis:
    """A private redis-server with an append-only file, restartable on the same data (and port)."""

    def __init__(self, directory: Path, fsync: str) -> None:
        self.dir, self.fsync, self.port = directory, fsync, free_port()
        self.process: harness.Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = harness.redis_child(
            redis_binary(), self.port, self.dir, None, harness.child_env(),
            ["--appendonly", "yes", "--appendfsync", self.fsync, "--save", "", "--logfile", "redis.log"],
        )
        self.process.start()
        if not harness.wait_redis(self.process, self.port, 20):
            raise SystemExit(f"redis-server did not start (see {self.dir}/redis.log)")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        if sig == signal.SIGKILL:
            self.process.kill()
        else:
            self.process.send(sig)

    def stop(self) -> None:
        if self.process is not None and self.process.exited() is None:
            self.process.send(signal.SIGCONT)
            self.process.kill()

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port)


class RestMQ:
    """``restmq serve`` on fixed ports (so clients find it again after a restart)."""

    def __init__(self, directory: Path, redis_url: str | None, timeout: float = 1.0) -> None:
        """``redis_url`` None: the embedded redis-server under ``directory/data``, fsync always."""
        self.dir, self.redis_url, self.timeout = directory, redis_url, timeout
        self.http, self.line = free_port(), free_port()
        self.process: harness.Child | None = None
        self.starts = 0
        #: Options of the embedded server (no ``redis_url``).
        self.start_args = ["--durability", "always"]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def start(self) -> float:
        """Start and wait until it serves; answers the seconds it took."""
        self.dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        self.process = harness.serve_child(
            [*(["--redis", self.redis_url] if self.redis_url else self.start_args),
             "--http", f"tcp:{self.http}:interface=127.0.0.1", "--line", f"tcp:{self.line}:interface=127.0.0.1",
             "--data", str(self.dir / "data"), "--redis-timeout", str(self.timeout)],
            self.dir / f"restmq-{self.starts}.log", self.dir, harness.child_env(),
        )
        self.starts += 1
        self.process.start()
        while True:
            try:
                if call("GET", self.base + "/health", timeout=1)[0] == 200:
                    return time.monotonic() - began
            except Gone:
                pass
            if self.process.exited() is not None:
                raise SystemExit(f"restmq serve exited (see {self.dir})")
            if time.monotonic() - began > 30:
                raise SystemExit("restmq serve did not become healthy in 30 s")
            time.sleep(0.05)

    def embedded_pid(self) -> int:
        """The embedded redis-server's pid (from its pid file)."""
        return int((self.dir / "data" / "redis.pid").read_text().split()[0])

    def embedded_client(self) -> Any:
        import redis

        from restmq.backend.embedded import socket_path_for

        return redis.Redis(unix_socket_path=socket_path_for(str(self.dir / "data")))

    def kill(self) -> None:
        """SIGKILL ``restmq serve`` alone: its embedded redis-server, if any, lives on."""
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        """SIGTERM ``restmq serve`` alone (it stops its embedded redis-server itself), SIGKILL if it lingers."""
        if self.process is not None:
            self.process.stop(timeout=15, group=False)


# -- the load and its ledger ----------------------------------------------------------------------


@dataclass
class Ledger:
    """What the clients were told, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    added: list[str] = field(default_factory=list)
    uncertain_adds: int = 0
    acked: dict[str, int] = field(default_factory=dict)  # key -> attempts of the delivery acked
    #: Keys in an ack whose answer never came, or was backend_unavailable: Redis may have applied it.
    uncertain_acks: set[str] = field(default_factory=set)
    deliveries: int = 0
    redelivered: int = 0
    seen: dict[str, int] = field(default_factory=dict)  # key -> highest attempts seen
    violations: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    #: Keys handed over at most once (HTTP take, a COMET stream): delivered, never acked.
    taken: set[str] = field(default_factory=set)
    #: Values of adds answered "nothing was applied": none of them may ever show up.
    not_applied: set[str] = field(default_factory=set)
    #: Every value delivered in any way.
    values: set[str] = field(default_factory=set)

    def add_keys(self, keys: list[str]) -> None:
        with self.lock:
            self.added.extend(keys)

    def took(self, messages: list[dict[str, Any]]) -> None:
        with self.lock:
            for m in messages:
                self.deliveries += 1
                if m["key"] in self.taken:
                    self.violations.append(f"{m['key']} taken twice")
                self.taken.add(m["key"])
                self.values.add(str(m.get("value")))

    def delivered(self, message: dict[str, Any]) -> None:
        key, attempts = message["key"], int(message.get("attempts", 1))
        with self.lock:
            self.values.add(str(message.get("value")))
            self.deliveries += 1
            if key in self.seen:
                self.redelivered += 1
            self.seen[key] = max(self.seen.get(key, 0), attempts)
            done = self.acked.get(key)
            if done is not None and attempts > done:
                self.violations.append(f"{key} delivered again (attempt {attempts}) after its ack of attempt {done}")

    def acked_ok(self, messages: list[dict[str, Any]]) -> None:
        with self.lock:
            for m in messages:
                self.acked[m["key"]] = max(self.acked.get(m["key"], 0), int(m.get("attempts", 1)))

    def ack_unknown(self, messages: list[dict[str, Any]]) -> None:
        with self.lock:
            self.uncertain_acks.update(m["key"] for m in messages)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1


class Load:
    """Producer, consumer and stream threads against one RestMQ, surviving its restarts."""

    def __init__(self, server: RestMQ, ledger: Ledger, seed: int, takers: bool = False) -> None:
        """``takers`` adds at-most-once consumers (HTTP takes and a COMET stream): only where
        RestMQ is not killed, since a killed process loses what it was handing over."""
        self.server, self.ledger = server, ledger
        self.stop = threading.Event()
        self.stop_adding = threading.Event()
        self.random = random.Random(seed)
        self.counter = 0
        self.threads = [
            threading.Thread(target=self.produce, daemon=True),
            threading.Thread(target=self.produce, args=(True,), daemon=True),
            threading.Thread(target=self.consume, daemon=True),
            threading.Thread(target=self.consume, daemon=True),
            threading.Thread(target=self.stream, daemon=True),
        ]
        if takers:
            self.threads += [
                threading.Thread(target=self.take, daemon=True),
                threading.Thread(target=self.comet, daemon=True),
            ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        """Stop adding first and give the consumers a moment: an at-most-once stream stopped
        while messages are on their way to it would lose them by design."""
        self.stop_adding.set()
        time.sleep(1.0)
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _value(self) -> str:
        with self.ledger.lock:
            self.counter += 1
            return f"v{self.counter}"

    def produce(self, many: bool = False) -> None:
        while not self.stop_adding.is_set():
            values = [self._value() for _ in range(20 if many else 1)]
            try:
                if many:
                    status, answer = call("POST", f"{self.server.base}/q/{QUEUE}", {"messages": values})
                    keys = answer.get("keys", []) if isinstance(answer, dict) else []
                else:
                    status, answer = call("POST", f"{self.server.base}/q/{QUEUE}", {"value": values[0]})
                    keys = [answer["key"]] if isinstance(answer, dict) and "key" in answer else []
            except Gone:
                with self.ledger.lock:
                    self.ledger.uncertain_adds += 1
                time.sleep(0.05)
                continue
            if status in (200, 201) and keys:
                self.ledger.add_keys(keys)
            elif status == 503 and isinstance(answer, dict) and answer.get("applied") is False:
                with self.ledger.lock:
                    self.ledger.not_applied.update(values)
                self.ledger.error("add 503 not applied")
                time.sleep(0.05)
            else:
                self.ledger.error(f"add {status}")
                time.sleep(0.05)
            time.sleep(0.005)

    def _fetch(self, query: str, what: str) -> list[dict[str, Any]] | None:
        """One ``GET /q/<queue>?<query>``: the messages, or None (empty, an error, or no answer:
        counted, and a short pause so a broken server is not hammered)."""
        try:
            status, got = call("GET", f"{self.server.base}/q/{QUEUE}?{query}")
        except Gone:
            status, got = 0, None
        if status == 200 and isinstance(got, list):
            return got
        if status not in (0, 204):
            self.ledger.error(f"{what} {status}")
        time.sleep(0.05)
        return None

    def consume(self) -> None:
        while not self.stop.is_set():
            got = self._fetch(f"lease={LEASE}&count=10", "reserve")
            if got is None:
                continue
            for m in got:
                self.ledger.delivered(m)
            keep = [m for m in got if self.random.random() < 0.8]
            give_back = [m for m in got if m not in keep and self.random.random() < 0.5]
            if keep:
                try:
                    status, answer = call("POST", f"{self.server.base}/q/{QUEUE}/ack",
                                          {"receipt": [m["receipt"] for m in keep]})
                except Gone:
                    self.ledger.ack_unknown(keep)
                    continue
                if status == 200 and isinstance(answer, dict) and answer.get("acked") == len(keep):
                    self.ledger.acked_ok(keep)
                elif status != 409:  # 409 stale: a lease ran out first, nothing was acked
                    self.ledger.error(f"ack {status}")
                    self.ledger.ack_unknown(keep)
            try:
                for m in give_back:
                    call("POST", f"{self.server.base}/q/{QUEUE}/nack", {"receipt": m["receipt"]})
            except Gone:
                continue

    def take(self) -> None:
        """At-most-once HTTP takes: what a take answered is the only trace of its messages."""
        while not self.stop.is_set():
            got = self._fetch("count=5", "take")
            if got is not None:
                self.ledger.took(got)

    def lines(self, reader: Any) -> Any:
        """The JSON lines a stream sends until it ends or the load stops (quiet spells skipped)."""
        while not self.stop.is_set():
            try:
                raw = reader.readline()
            except socket.timeout:
                continue
            if not raw:
                return
            if raw.strip():
                yield json.loads(raw)

    def comet(self) -> None:
        """A COMET subscriber (take mode): one JSON message per line, at most once."""
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(f"{self.server.base}/c/{QUEUE}", timeout=1) as stream:
                    for message in self.lines(stream):
                        if isinstance(message, dict) and "key" in message:
                            self.ledger.took([message])
            except (OSError, ValueError):
                time.sleep(0.05)

    def stream(self) -> None:
        """A line-protocol subscriber in reserve mode acking on its own connection."""
        while not self.stop.is_set():
            pending: dict[str, dict[str, Any]] = {}  # acks sent, answers not read yet
            try:
                with socket.create_connection(("127.0.0.1", self.server.line), timeout=1) as s:
                    s.sendall(f"subscribe {QUEUE} reserve {LEASE}\n".encode())
                    for line in self.lines(s.makefile("rb")):
                        if isinstance(line, dict) and "receipt" in line:
                            self.ledger.delivered(line)
                            pending[line["receipt"]] = line
                            s.sendall(f"ack {QUEUE} {line['receipt']}\n".encode())
                        elif isinstance(line, dict) and "reply" in line and line["reply"].get("acked") == 1:
                            # answers come in request order: the oldest ack sent is the one answered
                            receipt = next(iter(pending))
                            self.ledger.acked_ok([pending.pop(receipt)])
                        elif isinstance(line, dict) and "error" in line and pending:
                            failed = pending.pop(next(iter(pending)))
                            if line.get("code") != "stale_receipt":  # stale: the lease ran out first
                                self.ledger.ack_unknown([failed])
            except (OSError, ValueError):
                pass
            finally:
                self.ledger.ack_unknown(list(pending.values()))
            time.sleep(0.05)


def drain(server: RestMQ, ledger: Ledger, deadline: float) -> list[str]:
    """Reserve and ack until nothing is ready, reserved or delayed; the keys acked here."""
    drained: list[str] = []
    while time.monotonic() < deadline:
        status, got = call("GET", f"{server.base}/q/{QUEUE}?lease=30&count=100")
        if status == 200 and got:
            for m in got:
                ledger.delivered(m)
            status, answer = call("POST", f"{server.base}/q/{QUEUE}/ack", {"receipt": [m["receipt"] for m in got]})
            if status == 200:
                ledger.acked_ok(got)
                drained.extend(m["key"] for m in got)
            continue
        _, length = call("GET", f"{server.base}/stats/{QUEUE}")
        held = length["length"] if isinstance(length, dict) else {}
        if not held.get("ready") and not held.get("reserved") and not held.get("delayed"):
            return drained
        time.sleep(0.2)
    ledger.violations.append("the queue did not drain in time")
    return drained


def check_redis(redis_client: Any, ledger: Ledger) -> dict[str, Any]:
    """Every held message in exactly one place; every id below the counter; adds answered distinct keys."""
    from restmq.engine import keys as K

    k = K.for_queue(QUEUE)
    sets = {name: {int(n) for n in redis_client.zrange(getattr(k, name), 0, -1)}
            for name in ("ready", "reserved", "delayed")}
    records = {int(n) for n in redis_client.hkeys(k.messages)}
    dead = {int(n) for n in redis_client.zrange(k.dead, 0, -1)}
    seq = int(redis_client.get(k.seq) or 0)
    places: dict[int, list[str]] = {}
    for name, members in {**sets, "dead": dead}.items():
        for n in members:
            places.setdefault(n, []).append(name)
    for n, where in places.items():
        if len(where) > 1:
            ledger.violations.append(f"{QUEUE}:{n} is in {where}")
    held = sets["ready"] | sets["reserved"] | sets["delayed"]
    if held != records:
        ledger.violations.append(f"records without a place {sorted(records - held)[:5]}, places without a record "
                                 f"{sorted(held - records)[:5]}")
    numbers = [int(key.rsplit(":", 1)[1]) for key in ledger.added]
    if len(numbers) != len(set(numbers)):
        ledger.violations.append("an add answered a key another add had answered (an id was reused)")
    if numbers and max(numbers) > seq:
        ledger.violations.append(f"key {max(numbers)} is above the counter {seq}")
    return {"dead": len(dead), "seq": seq}


def lost(ledger: Ledger) -> list[str]:
    """Added keys never acked (an ack whose answer was lost may have been applied: not counted)."""
    return [
        key for key in ledger.added
        if key not in ledger.acked and key not in ledger.uncertain_acks and key not in ledger.taken
    ]


# -- scenarios ----------------------------------------------------------------------------------


def wait_status(url: str, want: set[int], limit: float, body: Any = None) -> float | None:
    """Seconds until ``url`` answers a status in ``want`` (a POST when ``body``), or None."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        try:
            status, _ = call("POST" if body is not None else "GET", url, body, timeout=limit)
        except Gone:
            status = 0
        if status in want:
            return time.monotonic() - began
        time.sleep(0.02)
    return None


def faulted(
    server: RestMQ, seed: int, kills: int, fault: Any, client: Any, takers: bool = False
) -> tuple[Ledger, dict[str, Any]]:
    """Run the load on ``server`` while ``fault(rnd)`` strikes ``kills`` times (a second or so
    apart), then drain and check Redis (``client()``); the ledger and the Redis figures."""
    ledger = Ledger()
    rnd = random.Random(seed)
    server.start()
    call("PUT", f"{server.base}/q/{QUEUE}/config", {"max_attempts": 1000})
    load = Load(server, ledger, seed, takers)
    load.start()
    for _ in range(kills):
        time.sleep(rnd.uniform(0.3, 1.5))
        fault(rnd)
    time.sleep(0.5)
    load.finish()
    drain(server, ledger, time.monotonic() + 60)
    applied_late = sorted(ledger.not_applied & ledger.values)
    if applied_late:
        ledger.violations.append(f"{len(applied_late)} adds answered 'not applied' were delivered, e.g. {applied_late[:5]}")
    return ledger, {"not_applied_adds": len(ledger.not_applied), "applied_late": len(applied_late),
                    **check_redis(client(), ledger)}


def figures(scenario: str, kills: int, ledger: Ledger, **extra: Any) -> dict[str, Any]:
    """A scenario's result: what the clients were told, what was lost, and ``extra``."""
    return {
        "scenario": scenario, "kills": kills, "added": len(ledger.added), "uncertain_adds": ledger.uncertain_adds,
        "deliveries": ledger.deliveries, "redelivered": ledger.redelivered, "acked": len(ledger.acked),
        "uncertain_acks": len(ledger.uncertain_acks - set(ledger.acked)), "lost": len(lost(ledger)),
        **extra, "errors": ledger.errors, "violations": ledger.violations,
    }


def slowest(times: list[float]) -> float:
    return round(max(times, default=0.0), 3)


def kill_restmq(tmp: Path, kills: int, seed: int) -> dict[str, Any]:
    """``restmq serve`` killed -9 and restarted on the same Redis."""
    redis = Redis(tmp / "redis", "everysec")
    redis.start()
    server = RestMQ(tmp / "restmq", redis.url)
    restarts: list[float] = []

    def fault(rnd: random.Random) -> None:
        server.kill()
        time.sleep(rnd.uniform(0.0, 0.3))
        restarts.append(server.start())

    try:
        ledger, extra = faulted(server, seed, kills, fault, redis.client)
    finally:
        server.stop()
        redis.stop()
    missing = lost(ledger)
    if missing:
        ledger.violations.append(f"{len(missing)} added messages never acked, e.g. {missing[:5]}")
    return figures("kill-restmq", kills, ledger, restart_s_max=slowest(restarts), **extra)


def kill_redis(tmp: Path, kills: int, fsync: str, seed: int) -> dict[str, Any]:
    """An external redis-server killed -9 and started again on its AOF."""
    redis = Redis(tmp / f"redis-{fsync}", fsync)
    redis.start()
    server = RestMQ(tmp / f"restmq-{fsync}", redis.url)
    detect: list[float] = []
    recover: list[float] = []

    def fault(rnd: random.Random) -> None:
        redis.signal(signal.SIGKILL)
        seen = wait_status(f"{server.base}/q/probe", {503}, 5.0, {"value": "probe"})
        detect.append(seen if seen is not None else 99.0)
        time.sleep(rnd.uniform(0.2, 0.8))
        redis.start()
        back = wait_status(f"{server.base}/health", {200}, 10.0)
        recover.append(back if back is not None else 99.0)

    try:
        ledger, extra = faulted(server, seed, kills, fault, redis.client)
    finally:
        server.stop()
        redis.stop()
    missing = lost(ledger)
    if fsync == "always" and missing:
        ledger.violations.append(f"appendfsync always lost {len(missing)} acknowledged adds, e.g. {missing[:5]}")
    if slowest(detect) > 1.5:
        ledger.violations.append(f"backend_unavailable took {slowest(detect)} s (promise: 1 s + margin)")
    if slowest(recover) > 2.5:
        ledger.violations.append(f"recovery took {slowest(recover)} s (promise: 2 s + margin)")
    return figures(f"kill-redis ({fsync})", kills, ledger, detect_s_max=slowest(detect),
                   recover_s_max=slowest(recover), **extra)


def kill_embedded_redis(tmp: Path, kills: int, seed: int) -> dict[str, Any]:
    """The embedded server (``--durability always``) killed -9: RestMQ restarts it on its AOF."""
    server = RestMQ(tmp / "restmq-embedded", None)
    answered: list[float] = []
    restarted: list[float] = []

    def fault(rnd: random.Random) -> None:
        killed_at = time.monotonic()
        os.kill(server.embedded_pid(), signal.SIGKILL)
        # the probe is answered either way within the timeout: 503 while Redis is gone, or served
        # once RestMQ has restarted it (often within the timeout: its backoff starts at 0.5 s)
        seen = wait_status(f"{server.base}/q/probe", {503, 200, 201}, 5.0, {"value": "probe"})
        answered.append(seen if seen is not None else 99.0)
        back = wait_status(f"{server.base}/health", {200}, 15.0)
        restarted.append(time.monotonic() - killed_at if back is not None else 99.0)

    try:
        ledger, extra = faulted(server, seed, kills, fault, server.embedded_client)
    finally:
        server.stop()
    missing = lost(ledger)
    if missing:
        ledger.violations.append(f"durability always lost {len(missing)} acknowledged adds, e.g. {missing[:5]}")
    if slowest(answered) > 1.5:
        ledger.violations.append(f"a request waited {slowest(answered)} s for an answer (promise: 1 s + margin)")
    return figures("kill-embedded-redis", kills, ledger, answer_s_max=slowest(answered),
                   restarted_s_max=slowest(restarted), **extra)


def disk_full(tmp: Path, durability: str) -> dict[str, Any]:
    """The embedded server's AOF on a 3 MB tmpfs filled up: writes refused with 503, reads still
    answered, and after room is made (and a restart) every acknowledged add is there; with
    ``everysec`` Redis may already have answered the write that failed (the loss is measured)."""
    out: dict[str, Any] = {"scenario": f"disk-full ({durability})"}
    small = tmp / f"small-{durability}"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        return {**out, "skipped": f"cannot mount a small tmpfs: {mounted.stderr.strip()[:80]}", "violations": []}
    violations: list[str] = []
    server = RestMQ(small / "restmq", None)
    server.start_args = ["--durability", durability]
    try:
        server.start()
        acknowledged = 0
        refused: tuple[int, Any] = (0, None)
        for _ in range(1000):
            status, answer = call("POST", f"{server.base}/q/big", {"value": "x" * 20000})
            if status not in (200, 201):
                refused = (status, answer)
                break
            acknowledged += 1
        out["acknowledged"] = acknowledged
        out["refused"] = refused[0]
        if refused[0] != 503:
            violations.append(f"a write on a full disk answered {refused}")
        # always: Redis exits rather than answer a write it could not log; RestMQ restarts it
        status = wait_status(f"{server.base}/stats/big", {200}, 10.0)
        out["reads_while_full"] = 200 if status is not None else None
        if status is None:
            violations.append("reads did not work while the disk was full")
        server.stop()
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        server.start()
        status, stats = call("GET", f"{server.base}/stats/big")
        out["after_room"] = stats["length"]["ready"] if status == 200 else None
        out["lost"] = acknowledged - (out["after_room"] or 0)
        if out["lost"] and durability == "always":
            violations.append(f"{acknowledged} adds acknowledged, {out['after_room']} there after the restart")
        if call("POST", f"{server.base}/q/big", {"value": "again"})[0] not in (200, 201):
            violations.append("writes did not work again once there was room")
    finally:
        server.stop()
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
    out["violations"] = violations
    return out


def stall_redis(tmp: Path, stalls: int, seed: int) -> dict[str, Any]:
    """Redis stopped (SIGSTOP) for 3 x ``--redis-timeout`` under the load, at-most-once takers and
    a COMET stream included, then continued: every call answered "nothing was applied" must not
    have been applied later, nothing is lost, and service resumes within 1 s."""
    redis = Redis(tmp / "redis-stalled", "everysec")
    redis.start()
    server = RestMQ(tmp / "restmq-stalled", redis.url)
    resumed: list[float] = []

    def fault(rnd: random.Random) -> None:
        redis.signal(signal.SIGSTOP)
        time.sleep(3 * server.timeout)
        redis.signal(signal.SIGCONT)
        back = wait_status(f"{server.base}/q/probe", {200, 201}, 5.0, {"value": "probe"})
        resumed.append(back if back is not None else 99.0)

    try:
        ledger, extra = faulted(server, seed, stalls, fault, redis.client, takers=True)
    finally:
        server.stop()
        redis.stop()
    missing = lost(ledger)
    if missing:
        ledger.violations.append(f"{len(missing)} added messages never delivered, e.g. {missing[:5]}")
    if slowest(resumed) > 1.0:
        ledger.violations.append(f"service resumed {slowest(resumed)} s after SIGCONT (promise: 1 s)")
    return figures("stall-redis", stalls, ledger, taken=len(ledger.taken), resume_s_max=slowest(resumed), **extra)


def freeze_redis(tmp: Path, seconds: float) -> dict[str, Any]:
    redis = Redis(tmp / "redis-frozen", "everysec")
    redis.start()
    server = RestMQ(tmp / "restmq-frozen", redis.url)
    violations: list[str] = []
    out: dict[str, Any] = {"scenario": "freeze-redis", "frozen_s": seconds}
    try:
        server.start()
        redis.signal(signal.SIGSTOP)
        began = time.monotonic()
        status, _ = call("POST", f"{server.base}/q/{QUEUE}", {"value": "frozen"}, timeout=10)
        out["add_503_s"] = round(time.monotonic() - began, 3)
        if status != 503 or out["add_503_s"] > 1.5:
            violations.append(f"an add while Redis is frozen answered {status} after {out['add_503_s']} s")
        began = time.monotonic()
        status, _ = call("GET", f"{server.base}/openapi.json", timeout=5)
        out["no_redis_route_s"] = round(time.monotonic() - began, 3)
        if status != 200 or out["no_redis_route_s"] > 0.5:
            violations.append(f"/openapi.json answered {status} in {out['no_redis_route_s']} s: the reactor blocked")
        status, _ = call("GET", f"{server.base}/health", timeout=5)
        out["health_while_frozen"] = status
        if status != 503:
            violations.append(f"/health answered {status} while Redis was frozen")
        time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        redis.signal(signal.SIGCONT)
        back = wait_status(f"{server.base}/q/{QUEUE}", {200, 201}, 10.0, {"value": "thawed"})
        out["recover_s"] = round(back, 3) if back is not None else None
        if back is None or back > 2.5:
            violations.append(f"after SIGCONT adds worked again only after {back} s")
    finally:
        server.stop()
        redis.stop()
    out["violations"] = violations
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="RestMQ chaos: kill and freeze real processes, check the promises.")
    p.add_argument("--short", action="store_true", help="the CI run: fewer kills (about a minute)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, AOFs)")
    p.add_argument("--only", metavar="SCENARIO", help="run one scenario (its name's first word, e.g. stall)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    restmq_kills, redis_kills = (5, 2) if args.short else (25, 10)
    tmp = Path(tempfile.mkdtemp(prefix="restmq-chaos-"))
    print(f"chaos: seed {seed}, temp {tmp}", flush=True)
    scenarios: list[tuple[str, Any]] = [
        ("kill-restmq", lambda: kill_restmq(tmp, restmq_kills, seed)),
        ("kill-redis", lambda: kill_redis(tmp, redis_kills, "always", seed + 1)),
        ("kill-embedded", lambda: kill_embedded_redis(tmp, redis_kills, seed + 3)),
        ("kill-redis", lambda: None if args.short else kill_redis(tmp, redis_kills, "everysec", seed + 2)),
        ("stall", lambda: stall_redis(tmp, 2 if args.short else 10, seed + 4)),
        ("freeze", lambda: freeze_redis(tmp, 1.0 if args.short else 5.0)),
        ("disk-full", lambda: disk_full(tmp, "always")),
        ("disk-full", lambda: None if args.short else disk_full(tmp, "everysec")),
    ]
    results = []
    try:
        for name, run in scenarios:
            if args.only and not name.startswith(args.only):
                continue
            result = run()
            if result is not None:
                results.append(result)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    failed = False
    for r in results:
        figures = {k: v for k, v in r.items() if k not in ("scenario", "violations")}
        ok = not r["violations"]
        failed |= not ok
        print(f"{r['scenario']:22} {'ok' if ok else 'FAILED'}  " + "  ".join(f"{k}={v}" for k, v in figures.items()))
        for v in r["violations"]:
            print(f"    violation: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": seed, "results": results}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
