"""``--workers`` scaling: HTTP add and take with ``restmq serve --workers 1`` and ``--workers N``.

Why this shape:

* The load is ``wrk`` (C, one thread): on a machine where the client, Redis and RestMQ share the
  cores, a Python load generator would take the CPU the second worker needs.
* Every row runs against a fresh ``restmq serve --redis … --workers N`` on one private,
  non-persistent redis-server (bench/harness.py), so only the worker count changes.
* Each row reports the CPU of every process (parent, each worker, Redis, wrk) as % of one core, and
  the worker CPU per request: what one core of worker buys, which with Redis's CPU per request
  projects what a machine with more cores should see (printed under the table).
* Take drains a queue prefilled with ``add_many`` (enough for the row, checked after it: a take
  that found the queue empty would be a cheaper 204, so the row says so).
* Rows are interleaved over ``--rounds`` (1, N, 1, N …) and each keeps its best round, so a burst
  of other work on the machine hits one round rather than one worker count.

Never fails on timing: figures are printed (and written as JSON with ``--json``). Run::

    .venv/bin/python bench/workers.py --seconds 5 --rounds 3 [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402  (bench/ is not a package)
    ANY_PORT,
    SetupError,
    child_env,
    cpu_seconds,
    find_redis,
    http_once,
    load_average_line,
    machine_facts,
    machine_line,
    payload_text,
    run_bench,
    start_redis,
    start_restmq,
)

QUEUE = "bench"


@dataclass
class Row:
    """One measured row: a kind of request against one worker count."""

    kind: str
    workers: int
    req_s: float = 0.0
    requests: int = 0
    errors: str = ""
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    #: CPU as % of one core over the row, by process: parent/worker0…/redis/wrk, then ``others``
    #: (every other process on the machine) and ``idle`` (what nobody used)
    cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def worker_cpu(self) -> float:
        """Every worker's CPU together (% of one core)."""
        return sum(v for k, v in self.cpu.items() if k.startswith("worker"))

    @property
    def worker_ms_per_request(self) -> float | None:
        """Worker CPU milliseconds per request (all workers together)."""
        return 10 * self.worker_cpu / self.req_s if self.req_s else None

    @property
    def redis_ms_per_request(self) -> float | None:
        return 10 * self.cpu.get("redis", 0.0) / self.req_s if self.req_s else None


def machine_idle() -> tuple[float, float]:
    """(idle, total) CPU ticks of the whole machine, from /proc/stat: what nobody used."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def wrk_script(tmp: Path, kind: str, payload: str) -> Path:
    """The Lua script that makes wrk send ``kind``'s request."""
    path = tmp / f"{kind}.lua"
    if kind == "add":
        path.write_text(
            'wrk.method = "POST"\n'
            f'wrk.body = "value={payload}"\n'
            'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        )
    else:
        path.write_text('wrk.method = "GET"\n')
    return path


def parse_wrk(text: str) -> tuple[float, int, str, float | None, float | None]:
    """req/s, requests, errors text, p50 and p99 latency (ms) from wrk's ``--latency`` report."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    count = re.search(r"(\d+) requests in", text)
    errors = "; ".join(m.group(0).strip() for m in re.finditer(r"(Non-2xx.*|Socket errors.*)", text))

    def percentile(p: str) -> float | None:
        found = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not found:
            return None
        return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]

    return (float(rate.group(1)) if rate else 0.0, int(count.group(1)) if count else 0, errors,
            percentile("50"), percentile("99"))


async def process_ids(port: int, workers: int, timeout: float = 60.0) -> list[int]:
    """The workers' pids from /stats (the server's own pid with one process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = await http_once(port, "GET", "/stats")
        if status == 200:
            answer = json.loads(body)
            listed = [int(p["pid"]) for p in answer.get("processes", [])]
            if workers == 1 or len(listed) == workers:
                return listed
        await asyncio.sleep(0.2)
    raise SetupError(f"/stats did not list {workers} workers within {timeout:g} s")


async def prefill(port: int, wanted: int, payload: str) -> None:
    batch = json.dumps({"messages": [payload] * 1000}).encode()
    for _ in range(0, wanted, 1000):
        status, body = await http_once(port, "POST", f"/q/{QUEUE}", batch, "application/json")
        if status not in (200, 201):
            raise SetupError(f"prefill failed: {status} {body[:200]!r}")


async def ready_length(port: int) -> int:
    status, body = await http_once(port, "GET", f"/stats/{QUEUE}")
    return int(json.loads(body)["length"]["ready"]) if status == 200 else -1


def measure(args: argparse.Namespace, tmp: Path, children: dict[str, Any], redis_port: int, kind: str,
            workers: int, expected: float) -> Row:
    """Start ``restmq serve --workers workers``, run wrk with ``kind`` for ``args.seconds``, stop it."""
    env = child_env()
    options = ["--redis", f"redis://127.0.0.1:{redis_port}/0", "--http", ANY_PORT, "--line", "none",
               "--workers", str(workers), "--max-connections", "0", "--max-connections-per-address", "0",
               *(["--reuse-port"] if args.reuse_port and workers > 1 else [])]
    row = Row(kind, workers)
    try:
        port = start_restmq(children, tmp, env, options, ("http",))["http"]
        pids = asyncio.run(process_ids(port, workers))
        server = children["restmq"]
        asyncio.run(http_once(port, "DELETE", f"/q/{QUEUE}"))
        if kind == "take":
            wanted = int(max(expected, 20000) * (args.seconds + 1) * 1.3)
            asyncio.run(prefill(port, wanted, payload_text(args.payload)))
            row.notes.append(f"prefilled {wanted} messages")
        named = {"parent": server.pid} if workers > 1 else {}
        named.update({f"worker{i}": pid for i, pid in enumerate(pids)} if workers > 1 else {"worker0": server.pid})
        named["redis"] = children["redis"].pid
        script = wrk_script(tmp, kind, payload_text(args.payload))
        path = "/q/" + QUEUE
        wrk = subprocess.Popen(
            ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.seconds:g}s", "--latency",
             "-s", str(script), f"http://127.0.0.1:{port}{path}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        named["wrk"] = wrk.pid
        start = time.perf_counter()
        before = {name: cpu_seconds(pid) for name, pid in named.items()}
        idle_before = machine_idle()
        assert wrk.stdout is not None
        output = wrk.stdout.read()  # until wrk exits
        after = {name: cpu_seconds(pid) for name, pid in named.items() if name != "wrk"}
        idle_after = machine_idle()
        _, _, usage = os.wait4(wrk.pid, 0)  # wrk's own CPU, not other children's
        wrk.returncode = 0
        wall = time.perf_counter() - start
        row.req_s, row.requests, row.errors, row.latency_p50_ms, row.latency_p99_ms = parse_wrk(output)
        for name, b in before.items():
            a = after.get(name)
            if a is not None and b is not None:
                row.cpu[name] = round(100 * (a - b) / wall, 1)
        row.cpu["wrk"] = round(100 * (usage.ru_utime + usage.ru_stime) / wall, 1)
        cores = os.cpu_count() or 1
        idle = (idle_after[0] - idle_before[0]) / max(idle_after[1] - idle_before[1], 1)
        row.cpu["others"] = round(max(0.0, 100 * cores * (1 - idle) - sum(row.cpu.values())), 1)
        row.cpu["idle"] = round(100 * cores * idle, 1)
        if kind == "take":
            left = asyncio.run(ready_length(port))
            if left == 0:
                row.notes.append("the queue ran empty: some takes were 204")
    finally:
        if "restmq" in children:
            children.pop("restmq").stop()
    return row


def print_table(rows: list[Row], facts: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"{'row':<22}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'worker cpu%':>13}  {'cpu% by process':<72}"
          f"{'worker ms/req':>14}{'redis ms/req':>13}")
    print("-" * 159)
    for r in rows:
        by = " ".join(f"{k}={v:.0f}" for k, v in r.cpu.items())
        print(f"{r.kind + ' --workers ' + str(r.workers):<22}{r.req_s:>9.0f}"
              f"{(r.latency_p50_ms or 0):>8.2f}{(r.latency_p99_ms or 0):>8.2f}{r.worker_cpu:>13.0f}  {by:<72}"
              f"{(r.worker_ms_per_request or 0):>14.3f}{(r.redis_ms_per_request or 0):>13.3f}")
        for note in [*r.notes, *([r.errors] if r.errors else [])]:
            print(f"{'':<22}{note}")
    print()
    for kind in ("add", "take"):
        one = next((r for r in rows if r.kind == kind and r.workers == 1), None)
        many = next((r for r in rows if r.kind == kind and r.workers == args.workers), None)
        if one and many and one.req_s:
            print(f"{kind}: --workers {args.workers} / --workers 1 = {many.req_s / one.req_s:.2f}x")
    print()
    for kind in ("add", "take"):
        many = next((r for r in rows if r.kind == kind and r.workers == args.workers), None)
        if many and many.worker_ms_per_request and many.redis_ms_per_request:
            per_core = 1000 / many.worker_ms_per_request
            redis_cap = 1000 / many.redis_ms_per_request
            print(f"{kind}: one worker core serves ~{per_core:.0f} req/s; Redis (one thread) tops out near "
                  f"~{redis_cap:.0f} req/s; with C free cores for workers expect ~min(C x {per_core:.0f}, "
                  f"{redis_cap:.0f}) req/s, the client and Redis on cores of their own")
    print(machine_line(facts))
    line = load_average_line(facts, skew_note=True)
    if line:
        print(line)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="HTTP add/take with --workers 1 and --workers N (never fails on timing).")
    parser.add_argument("--workers", type=int, default=2, help="the worker count compared with 1 (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, rows interleaved; each row keeps its best")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--payload", type=int, default=64, help="message size in bytes (default 64)")
    parser.add_argument("--only", choices=("add", "take"), action="append", help="only these rows (repeatable)")
    parser.add_argument("--reuse-port", action="store_true", help="run the workers with --reuse-port")
    parser.add_argument("--redis-server", help="redis-server/valkey-server binary")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the servers' output")
    args = parser.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work(tmp: Path, children: dict[str, Any]) -> int:
        binary = find_redis(args.redis_server)
        redis, redis_port, info = start_redis(binary, tmp, child_env())
        children["redis"] = redis
        facts = machine_facts(info, binary)
        print(f"--workers scaling: wrk -t{args.threads} -c{args.connections}, {args.seconds:g} s per row, "
              f"{args.payload}-byte messages, best of {args.rounds} round(s)"
              + (", --reuse-port" if args.reuse_port else ""))
        best: dict[tuple[str, int], Row] = {}
        for number in range(args.rounds):
            for kind in args.only or ("add", "take"):
                for workers in (1, args.workers):
                    print(f"round {number + 1}: {kind} --workers {workers} ...", file=sys.stderr, flush=True)
                    expected = max((r.req_s for r in best.values() if r.kind == "add"), default=10000)
                    row = measure(args, tmp, children, redis_port, kind, workers, expected)
                    key = (kind, workers)
                    if key not in best or row.req_s > best[key].req_s:
                        if key in best:
                            row.notes.insert(0, f"best round; another gave {best[key].req_s:.0f}")
                        best[key] = row
        rows = [best[k] for k in sorted(best, key=lambda k: (k[0], k[1]))]
        print_table(rows, facts, args)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": facts,
                 "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
        return 0

    return run_bench("restmq-workers-", args.keep_logs, work)


if __name__ == "__main__":
    sys.exit(main())
