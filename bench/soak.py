"""RestMQ soak: a steady mixed load with 1,000 connected stream subscribers for minutes on end.

It starts a private non-persistent redis-server and ``restmq serve`` (with the helpers of
``harness.py``), opens ``--subscribers`` idle COMET subscribers on a broadcast queue (one
broadcast a second reaches them all), and runs ``--workers`` client threads, each over one
keep-alive connection, doing add / reserve / ack cycles paced to ``--rate`` operations a second in
all (aim at about half of the peak ``throughput.py`` measures). Every ``--every`` seconds it samples:
RestMQ's RSS, Redis's ``used_memory``, the operations done, their p50/p99 latency and the errors.

After the warm-up (``--warmup``, default 120 s) RSS and Redis memory should stay flat (growth
< 5 %), p99 stable and errors 0. It prints the samples and the verdicts and never fails on them
(exit 0; 1 only when a server cannot start).

    .venv/bin/python bench/soak.py                         # 10 minutes
    .venv/bin/python bench/soak.py --seconds 120 --warmup 30 --rate 800
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402  (bench/ is not a package)
    ANY_PORT,
    Child,
    child_env,
    find_redis,
    open_subscribers,
    percentile,
    raise_nofile,
    redis_command,
    rss_kb,
    run_bench,
    start_redis,
    start_restmq,
    wait_subscribers,
)


class Stats:
    """Latencies and errors of the current sample window, under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.ops = 0

    def record(self, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.ops += 1

    def error(self, what: str) -> None:
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1

    def take(self) -> tuple[list[float], dict[str, int], int]:
        with self.lock:
            out = (self.latencies, self.errors, self.ops)
            self.latencies, self.errors, self.ops = [], {}, 0
            return out


def worker(port: int, rate: float, stop: threading.Event, stats: Stats, n: int) -> None:
    """add, reserve, ack on one keep-alive connection, paced to ``rate`` operations a second."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    queue = f"soak{n % 4}"
    interval = 3.0 / rate  # three operations a cycle
    next_at = time.monotonic()

    def op(method: str, path: str, body: Any = None) -> Any:
        nonlocal conn
        data = None if body is None else json.dumps(body).encode()
        began = time.monotonic()
        try:
            conn.request(method, path, data, {"content-type": "application/json"} if data else {})
            answer = conn.getresponse()
            raw = answer.read()
        except (OSError, http.client.HTTPException) as e:
            stats.error(type(e).__name__)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            return None
        stats.record(time.monotonic() - began)
        if answer.status >= 400:
            stats.error(f"{method} {answer.status}")
            return None
        return json.loads(raw) if raw.strip() else None

    while not stop.is_set():
        op("POST", f"/q/{queue}", {"value": {"n": next_at, "pad": "x" * 64}})
        got = op("GET", f"/q/{queue}?lease=30")
        if isinstance(got, dict) and "receipt" in got:
            op("POST", f"/q/{queue}/ack", {"receipt": got["receipt"]})
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -5:
            next_at = time.monotonic()  # far behind: do not try to catch up in a burst


def redis_memory(port: int) -> int:
    info = redis_command(port, "INFO", "memory").decode(errors="replace")
    for line in info.splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    return 0


async def soak(args: argparse.Namespace, port: int, redis_port: int, server: Child) -> list[dict[str, Any]]:
    subs, errors = await open_subscribers(port, "comet", "soak-broadcast", args.subscribers, None,
                                          b'"key":"soak-broadcast:', 128)
    await wait_subscribers(port, "soak-broadcast", args.subscribers, 60)
    if errors:
        print(f"{len(errors)} subscribers failed to open, e.g. {errors[0]}", file=sys.stderr)
    stats, stop = Stats(), threading.Event()
    threads = [threading.Thread(target=worker, args=(port, args.rate / args.workers, stop, stats, i), daemon=True)
               for i in range(args.workers)]
    for t in threads:
        t.start()
    samples: list[dict[str, Any]] = []
    began = time.monotonic()
    next_sample = began + args.every
    loop = asyncio.get_running_loop()
    broadcast = 0
    while time.monotonic() - began < args.seconds:
        await asyncio.sleep(1.0)
        broadcast += 1
        await loop.run_in_executor(None, _broadcast, port, broadcast)
        if time.monotonic() >= next_sample:
            next_sample += args.every
            latencies, errs, ops = stats.take()
            latencies.sort()
            samples.append({
                "t": round(time.monotonic() - began),
                "ops_s": round(ops / args.every),
                "p50_ms": round((percentile(latencies, 0.5) or 0) * 1000, 2),
                "p99_ms": round((percentile(latencies, 0.99) or 0) * 1000, 2),
                "rss_kb": rss_kb(server.pid),
                "redis_kb": redis_memory(redis_port) // 1024,
                "subscribers_alive": sum(1 for s in subs if not s.closed),
                "received_min": min((s.count for s in subs), default=0),
                "errors": errs,
            })
            print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
    stop.set()
    for t in threads:
        t.join(15)
    for s in subs:
        s.close()
    return samples


def _broadcast(port: int, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/q/soak-broadcast", json.dumps({"value": n}).encode(), {"content-type": "application/json"})
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass
    finally:
        conn.close()


def verdicts(samples: list[dict[str, Any]], warmup: float) -> list[str]:
    after = [s for s in samples if s["t"] >= warmup]
    if len(after) < 2:
        return ["not enough samples after the warm-up"]
    first, last = after[0], after[-1]
    out = []
    for name, key in (("RestMQ RSS", "rss_kb"), ("Redis memory", "redis_kb")):
        if first[key]:
            growth = 100.0 * (last[key] - first[key]) / first[key]
            out.append(f"{name}: {first[key]} KB -> {last[key]} KB after the warm-up ({growth:+.1f} %, "
                       f"target < +5 %: {'met' if growth < 5 else 'NOT met'})")
    p99 = [s["p99_ms"] for s in after]
    out.append(f"p99 after the warm-up: {min(p99)}-{max(p99)} ms (median {sorted(p99)[len(p99) // 2]} ms)")
    errors = sum(sum(s["errors"].values()) for s in samples)
    out.append(f"errors: {errors} ({'met' if errors == 0 else 'NOT met'}); subscribers alive at the end: "
               f"{samples[-1]['subscribers_alive']}; fewest broadcasts one received: {samples[-1]['received_min']}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="RestMQ soak: steady mixed load with many subscribers (never fails).")
    p.add_argument("--seconds", type=float, default=600, help="how long (default 600)")
    p.add_argument("--warmup", type=float, default=120, help="seconds before growth is measured (default 120)")
    p.add_argument("--rate", type=float, default=1500, help="operations a second in all (default 1500)")
    p.add_argument("--workers", type=int, default=6, help="client threads (default 6)")
    p.add_argument("--subscribers", type=int, default=1000, help="idle COMET subscribers (default 1000)")
    p.add_argument("--every", type=float, default=30, help="seconds between samples (default 30)")
    p.add_argument("--json", metavar="FILE", help="also write the samples as JSON")
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args(argv)
    raise_nofile(args.subscribers + 4096)

    def work(tmp: Path, children: dict[str, Any]) -> int:
        env = child_env()
        binary = find_redis(None)
        redis, redis_port, facts = start_redis(binary, tmp, env)
        children["redis"] = redis
        port = start_restmq(children, tmp, env,
                            ["--redis", f"redis://127.0.0.1:{redis_port}/0", "--http", ANY_PORT, "--line", "none",
                             "--max-connections", "0", "--max-connections-per-address", "0"], ("http",))["http"]
        server = children["restmq"]
        print(f"soak: {args.seconds:.0f} s at {args.rate:.0f} ops/s ({args.workers} workers), "
              f"{args.subscribers} COMET subscribers, redis {facts.get('redis_version')}", flush=True)
        samples = asyncio.run(soak(args, port, redis_port, server))
        print(f"{'t s':>5} {'ops/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'RSS KB':>8} {'Redis KB':>9} {'subs':>5} errors")
        for s in samples:
            print(f"{s['t']:5d} {s['ops_s']:6d} {s['p50_ms']:7.2f} {s['p99_ms']:7.2f} {s['rss_kb']:8d} "
                  f"{s['redis_kb']:9d} {s['subscribers_alive']:5d} {s['errors'] or ''}")
        for line in verdicts(samples, args.warmup):
            print(line)
        if args.json:
            Path(args.json).write_text(json.dumps(samples, indent=2))
        return 0

    return run_bench("restmq-soak-", args.keep_logs, work)


if __name__ == "__main__":
    raise SystemExit(main())
