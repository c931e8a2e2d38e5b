"""RestMQ streaming benchmark: broadcast fan-out to many idle subscribers, memory per idle subscriber,
and messages/s through one round-robin subscriber.

Like ``throughput.py`` (with ``harness.py``'s helpers) it starts a private non-persistent ``redis-server``
and ``python -m restmq.cli serve`` as a real process on free loopback ports, reads the server's JSON log for
its port, never fails on timing (exit 0; 1 only when a server cannot start) and stops everything on exit.

Scenarios, per stream kind (``--kinds comet,sse``) and subscriber count (``--subscribers 1000,10000``):

* **fan-out**: open N idle connections (``GET /c/<q>`` or ``GET /sse/<q>``, raw asyncio sockets, read
  until the response headers), wait until ``GET /stats/<q>`` counts N ``subscribers``, then add ONE
  message (``POST /q/<q>``) and time, from just before the add is sent, when each connection receives
  it: p50 / p99 / max arrival. Target: 10,000 reached in < 1 s.
* **memory**: the RestMQ process's RSS (``VmRSS`` of ``/proc/<pid>/status``) before opening the N
  connections and once the server counts them, divided by N. Target: < 30 KB per idle subscriber.
  After the connections close it also reports how long the server took to count 0 subscribers and
  the RSS then (a leak would show).
* **latency**: one COMET subscriber; M messages (``--latency-messages``, default 500) added one at
  a time (``POST /q/<q>``, each on its own connection, the next once the previous arrived); the time
  from just before each add is sent until the subscriber has it: p50 / p99 / max. Target: p99 < 50 ms.
* **round-robin**: ``POST /p/<q> policy=roundrobin``, one COMET subscriber; (a) *backlog*: M messages
  pre-filled with add_many (1000 per request) before it connects, drained through it; (b) *live*:
  the subscriber connected first, M messages added with add_many while it receives. Messages/s
  received.

Run::

    .venv/bin/python bench/streams.py [--subscribers 1000,10000] [--kinds comet,sse] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402  (bench/ is not a package)
    ANY_PORT,
    Child,
    Subscriber,
    child_env,
    cpu_seconds,
    find_redis,
    http_once,
    load_average_line,
    machine_facts,
    machine_line,
    open_subscribers,
    percentile,
    raise_nofile,
    rss_kb,
    run_bench,
    start_redis,
    start_restmq,
    stream_request,
    wait_subscribers,
)

TARGET_FANOUT_S = 1.0  # 10k subscribers reached in < 1 s
TARGET_KB_PER_SUB = 30.0  # < 30 KB per idle subscriber
TARGET_LATENCY_P99_MS = 50.0  # add -> subscriber, same host


# ---------------------------------------------------------------------------------------------------
# scenarios


async def fanout(port: int, server: Child, kind: str, n: int, concurrency: int) -> dict[str, Any]:
    queue = f"fan-{kind}-{n}-{uuid.uuid4().hex[:6]}"
    marker = f"mark-{uuid.uuid4().hex}".encode()
    row: dict[str, Any] = {"scenario": "fanout", "kind": kind, "subscribers": n, "queue": queue, "notes": []}
    rss_before = rss_kb(server.pid)
    t_open = time.perf_counter()
    subs, errors = await open_subscribers(port, kind, queue, n, marker, None, concurrency)
    row["open_s"] = round(time.perf_counter() - t_open, 3)
    row["open_errors"] = len(errors)
    if errors:
        row["notes"].append(f"{len(errors)} connections failed to open, e.g. {errors[0]}")
    live = [s for s in subs if s.headers_at is not None and s.status == 200 and not s.closed]
    counted, waited = await wait_subscribers(port, queue, len(live), 60)
    row["counted"] = counted
    row["count_wait_s"] = round(waited, 3)
    if counted != len(live):
        row["notes"].append(f"/stats counted {counted} subscribers, {len(live)} connections open")
    await asyncio.sleep(0.5)  # let the server settle (allocations of the last connections)
    rss_after = rss_kb(server.pid)
    row["rss_before_kb"], row["rss_after_kb"] = rss_before, rss_after
    if rss_before is not None and rss_after is not None and live:
        row["kb_per_subscriber"] = round((rss_after - rss_before) / len(live), 2)

    cpu0 = cpu_seconds(server.pid)
    t0 = time.perf_counter()
    status, body = await http_once(port, "POST", f"/q/{queue}", b"value=" + marker)
    t_added = time.perf_counter()
    row["add_status"] = status
    row["add_ms"] = round((t_added - t0) * 1000, 2)
    deadline = t0 + 30
    while time.perf_counter() < deadline:
        if all(s.arrived_at is not None or s.closed for s in live):
            break
        await asyncio.sleep(0.002)
    cpu1 = cpu_seconds(server.pid)
    arrivals = sorted(s.arrived_at - t0 for s in live if s.arrived_at is not None)
    row["reached"] = len(arrivals)
    row["missed"] = len(live) - len(arrivals)
    if row["missed"]:
        row["notes"].append(f"{row['missed']} of {len(live)} subscribers did not get the message within 30 s")
    row["p50_ms"] = None if not arrivals else round(percentile(arrivals, 0.50) * 1000, 2)  # type: ignore[operator]
    row["p99_ms"] = None if not arrivals else round(percentile(arrivals, 0.99) * 1000, 2)  # type: ignore[operator]
    row["max_ms"] = None if not arrivals else round(arrivals[-1] * 1000, 2)
    row["first_ms"] = None if not arrivals else round(arrivals[0] * 1000, 2)
    row["server_cpu_s"] = None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 3)

    # disconnect detection: abort every connection, time until /stats counts 0
    t_close = time.perf_counter()
    for s in subs:
        s.close()
    counted, waited = await wait_subscribers(port, queue, 0, 60)
    row["unsubscribe_s"] = round(waited, 3) if counted == 0 else None
    if counted != 0:
        row["notes"].append(f"60 s after closing, /stats still counted {counted} subscribers")
    await asyncio.sleep(0.5)
    row["rss_after_close_kb"] = rss_kb(server.pid)
    del t_close
    return row


class Counted(Subscriber):
    """A Subscriber that fires ``waiter`` once it has counted ``target`` messages."""

    __slots__ = ("waiter", "target")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.waiter: asyncio.Future[None] | None = None
        self.target = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.waiter is not None and not self.waiter.done() and self.count >= self.target:
            self.waiter.set_result(None)


async def latency(port: int, messages: int) -> dict[str, Any]:
    """Add messages one at a time and time each from its add to its arrival at one COMET subscriber."""
    queue = f"lat-{uuid.uuid4().hex[:6]}"
    row: dict[str, Any] = {"scenario": "latency", "kind": "comet", "subscribers": 1, "messages": messages,
                           "queue": queue, "notes": []}
    loop = asyncio.get_running_loop()
    headers: asyncio.Future[None] = loop.create_future()
    token = f'"key":"{queue}:'.encode()
    _, sub = await loop.create_connection(lambda: Counted(stream_request("comet", queue), None, token, headers),
                                          "127.0.0.1", port)
    await asyncio.wait_for(headers, 30)
    await wait_subscribers(port, queue, 1, 30)
    times = []
    for i in range(messages):
        sub.target, sub.waiter = i + 1, loop.create_future()
        start = time.perf_counter()
        status, body = await http_once(port, "POST", f"/q/{queue}", f"value=m{i}".encode())
        if not 200 <= status < 300:
            row["notes"].append(f"add answered {status}: {body[:120]!r}")
            break
        try:
            await asyncio.wait_for(sub.waiter, 5)
        except asyncio.TimeoutError:
            row["notes"].append(f"message {i} did not arrive within 5 s")
            break
        times.append((time.perf_counter() - start) * 1000)
    sub.close()
    times.sort()
    row["received"] = len(times)
    for name, q in (("p50_ms", 0.50), ("p99_ms", 0.99)):
        row[name] = round(percentile(times, q), 2) if times else None
    row["max_ms"] = round(times[-1], 2) if times else None
    return row


async def roundrobin(port: int, server: Child, messages: int, batch: int, variant: str) -> dict[str, Any]:
    queue = f"rr-{variant}-{uuid.uuid4().hex[:6]}"
    row: dict[str, Any] = {"scenario": f"roundrobin-{variant}", "kind": "comet", "subscribers": 1,
                           "messages": messages, "queue": queue, "notes": []}
    status, body = await http_once(port, "POST", f"/p/{queue}", b"policy=roundrobin")
    if not 200 <= status < 300:
        row["notes"].append(f"POST /p/{queue} answered {status}: {body[:200]!r}")
    token = f'"key":"{queue}:'.encode()
    value = "x" * 64
    bodies = []
    left = messages
    while left > 0:
        k = min(batch, left)
        bodies.append(json.dumps({"messages": [value] * k}).encode())
        left -= k

    async def add_all() -> list[str]:
        errs = []
        for b in bodies:
            st, answer = await http_once(port, "POST", f"/q/{queue}", b, "application/json")
            if not 200 <= st < 300:
                errs.append(f"{st} {answer[:120]!r}")
        return errs

    cpu_redis0 = None
    if variant == "backlog":
        errs = await add_all()
        if errs:
            row["notes"].append(f"{len(errs)} add_many requests failed, e.g. {errs[0]}")
        cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
        subs, errors = await open_subscribers(port, "comet", queue, 1, None, token, 1)
    else:
        subs, errors = await open_subscribers(port, "comet", queue, 1, None, token, 1)
        await wait_subscribers(port, queue, 1, 30)
        cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
        adder = asyncio.ensure_future(add_all())
    del cpu_redis0
    if errors:
        row["notes"].append(f"subscriber failed: {errors[0]}")
    sub = subs[0] if subs else None
    deadline = t0 + max(60.0, messages / 2000)
    last_count, last_change = -1, time.perf_counter()
    while sub is not None and time.perf_counter() < deadline and sub.count < messages and not sub.closed:
        await asyncio.sleep(0.01)
        if sub.count != last_count:
            last_count, last_change = sub.count, time.perf_counter()
        elif time.perf_counter() - last_change > 10:
            row["notes"].append(f"no progress for 10 s at {sub.count} messages")
            break
    elapsed = time.perf_counter() - t0
    cpu1 = cpu_seconds(server.pid)
    if variant == "live":
        errs = await adder
        if errs:
            row["notes"].append(f"{len(errs)} add_many requests failed, e.g. {errs[0]}")
    got = sub.count if sub else 0
    row["received"] = got
    row["seconds"] = round(elapsed, 3)
    row["msg_s"] = round(got / elapsed, 1) if elapsed > 0 else None
    row["server_cpu_pct"] = None if cpu0 is None or cpu1 is None else round(100 * (cpu1 - cpu0) / elapsed, 1)
    if got < messages:
        row["notes"].append(f"received {got} of {messages}")
    if sub:
        sub.close()
    return row


# ---------------------------------------------------------------------------------------------------
# the run


def server_problems(server: Child) -> list[str]:
    """Error/critical lines of the server's JSON log, and any traceback text."""
    out = []
    try:
        text = server.log_path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            if "Traceback" in line or "Error" in line:
                out.append(line[:300])
            continue
        level = str(event.get("level", ""))
        if "persistence is off" in str(event.get("warning", "")):
            continue  # the bench's Redis is non-persistent on purpose
        if level in ("error", "critical", "warn") or "traceback" in event:
            out.append(json.dumps({k: event[k] for k in event if k in ("level", "namespace", "message",
                                                                        "traceback")})[:400])
    return out


def print_table(rows: list[dict[str, Any]], facts: dict[str, Any], args: argparse.Namespace) -> None:
    print("Broadcast fan-out: one message to N idle subscribers (times from just before the add is sent)")
    head = (f"{'kind':6} {'N':>6} {'open s':>7} {'reached':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
            f"{'target':>12} {'KB/sub':>7} {'target':>9} {'unsub s':>8} {'srv cpu s':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["scenario"] != "fanout":
            continue
        met = "-" if r.get("max_ms") is None or r["missed"] else (
            "met" if r["max_ms"] < TARGET_FANOUT_S * 1000 else "NOT met")
        kb = r.get("kb_per_subscriber")
        kb_met = "-" if kb is None else ("met" if kb < TARGET_KB_PER_SUB else "NOT met")
        fan_target = f"<1000 {met}" if r["subscribers"] >= 10000 else f"({met})"
        print(f"{r['kind']:6} {r['subscribers']:6d} {r['open_s']:7.2f} {r['reached']:8d} "
              f"{r['p50_ms'] if r['p50_ms'] is not None else '-':>8} {r['p99_ms'] if r['p99_ms'] is not None else '-':>8} "
              f"{r['max_ms'] if r['max_ms'] is not None else '-':>8} {fan_target:>12} "
              f"{kb if kb is not None else '-':>7} {'<30 ' + kb_met:>9} "
              f"{r['unsubscribe_s'] if r.get('unsubscribe_s') is not None else '-':>8} "
              f"{r['server_cpu_s'] if r.get('server_cpu_s') is not None else '-':>9}")
    for r in rows:
        if r["scenario"] == "latency":
            met = "-" if r["p99_ms"] is None else ("met" if r["p99_ms"] < TARGET_LATENCY_P99_MS else "NOT met")
            print()
            print("Latency: add (HTTP POST) -> one COMET subscriber, one message at a time")
            head = f"{'messages':>9} {'received':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'target':>14}"
            print(head)
            print("-" * len(head))
            print(f"{r['messages']:9d} {r['received']:9d} {r['p50_ms'] if r['p50_ms'] is not None else '-':>8} "
                  f"{r['p99_ms'] if r['p99_ms'] is not None else '-':>8} "
                  f"{r['max_ms'] if r['max_ms'] is not None else '-':>8} {'p99<50 ' + met:>14}")
    rr = [r for r in rows if r["scenario"].startswith("roundrobin")]
    if rr:
        print()
        print("Round-robin: messages/s through one COMET subscriber (64-byte values, add_many batches)")
        head = f"{'variant':22} {'messages':>9} {'received':>9} {'seconds':>8} {'msg/s':>9} {'srv cpu%':>9}"
        print(head)
        print("-" * len(head))
        for r in rr:
            print(f"{r['scenario']:22} {r['messages']:9d} {r['received']:9d} {r['seconds']:8.2f} "
                  f"{r['msg_s'] if r['msg_s'] is not None else '-':>9} "
                  f"{r['server_cpu_pct'] if r['server_cpu_pct'] is not None else '-':>9}")
    notes = [(f"{r['scenario']} {r['kind']} {r['subscribers']}", n) for r in rows for n in r.get("notes", [])]
    extra = []
    for r in rows:
        if r["scenario"] == "fanout":
            extra.append(f"fanout {r['kind']} {r['subscribers']}: RSS {r['rss_before_kb']} -> {r['rss_after_kb']} KB "
                         f"open, {r.get('rss_after_close_kb')} KB after close; add answered in {r['add_ms']} ms; "
                         f"first arrival {r['first_ms']} ms; /stats counted them {r['count_wait_s']} s after open")
    extra.append("KB/sub = RSS growth / N; RSS does not shrink when connections close (CPython keeps freed "
                 "memory for reuse), so a row whose N is below an earlier row's peak reuses that memory and reads "
                 "low: the first row to reach a given N is the honest figure")
    if notes or extra:
        print()
        for key, n in notes:
            print(f"{key}: {n}")
        for line in extra:
            print(line)
    print()
    print(machine_line(facts))
    print(f"open files limit (bench and servers): {args.nofile}; client: one asyncio process "
          f"({args.concurrency} handshakes at a time)")
    load = load_average_line(facts)
    if load:
        print(load)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="RestMQ streams: broadcast fan-out, memory per idle subscriber, "
                                            "round-robin messages/s (never fails on timing).")
    p.add_argument("--subscribers", default="1000,10000", help="comma-separated N (default 1000,10000)")
    p.add_argument("--kinds", default="comet,sse", help="stream kinds for fan-out: comet,sse (default both)")
    p.add_argument("--messages", type=int, default=50000, help="messages for the round-robin rows (default 50000)")
    p.add_argument("--batch", type=int, default=1000, help="messages per add_many request (default 1000)")
    p.add_argument("--concurrency", type=int, default=256, help="connection handshakes in flight (default 256)")
    p.add_argument("--no-roundrobin", action="store_true", help="skip the round-robin rows")
    p.add_argument("--latency-messages", type=int, default=500,
                   help="messages for the add->subscriber latency row (default 500, 0 skips it)")
    p.add_argument("--redis-server", help="redis-server/valkey-server binary")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the servers' output")
    args = p.parse_args(argv)
    try:
        args.counts = [int(x) for x in args.subscribers.split(",") if x.strip()]
    except ValueError:
        p.error("--subscribers: comma-separated integers")
    args.kind_list = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if any(k not in ("comet", "sse") for k in args.kind_list):
        p.error("--kinds: comet and/or sse")
    return args


def start_servers(args: argparse.Namespace, tmp: Path, children: dict[str, Child]) -> tuple[int, dict[str, str], str]:
    """Redis and ``restmq serve`` (HTTP only, no connection limits: the rows open thousands)."""
    env = child_env()
    binary = find_redis(args.redis_server)
    redis, redis_port, redis_info = start_redis(binary, tmp, env)
    children["redis"] = redis
    ports = start_restmq(children, tmp, env,
                         ["--redis", f"redis://127.0.0.1:{redis_port}/0", "--http", ANY_PORT, "--line", "none",
                          "--max-connections", "0", "--max-connections-per-address", "0"], ("http",))
    return ports["http"], redis_info, binary


async def run_all(args: argparse.Namespace, port: int, server: Child) -> list[dict[str, Any]]:
    rows = []
    for n in args.counts:
        for kind in args.kind_list:
            print(f"fan-out: {kind}, {n} subscribers ...", file=sys.stderr, flush=True)
            rows.append(await fanout(port, server, kind, n, args.concurrency))
    if args.latency_messages > 0:
        print(f"latency: {args.latency_messages} messages ...", file=sys.stderr, flush=True)
        rows.append(await latency(port, args.latency_messages))
    if not args.no_roundrobin:
        for variant in ("backlog", "live"):
            print(f"round-robin: {variant}, {args.messages} messages ...", file=sys.stderr, flush=True)
            rows.append(await roundrobin(port, server, args.messages, args.batch, variant))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    want = 2 * max(args.counts, default=0) + 4096
    soft, hard = raise_nofile(want)
    args.nofile = soft
    if soft < max(args.counts, default=0) + 256:
        print(f"open-file limit {soft} (hard {hard}) is below {max(args.counts)} connections + margin: "
              "the largest runs will fail to open some connections", file=sys.stderr)

    def work(tmp: Path, children: dict[str, Any]) -> int:
        port, redis_info, binary = start_servers(args, tmp, children)
        facts = machine_facts(redis_info, binary)
        print(f"RestMQ streams: restmq http :{port}, private {facts['redis']} without persistence")
        print()
        rows = asyncio.run(run_all(args, port, children["restmq"]))
        problems = server_problems(children["restmq"])
        print_table(rows, facts, args)
        if problems:
            print()
            print(f"server log: {len(problems)} warning/error lines, e.g.:")
            for line in problems[:5]:
                print("  " + line)
        if args.json:
            document = {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": facts,
                "settings": {"subscribers": args.counts, "kinds": args.kind_list, "messages": args.messages,
                             "batch": args.batch, "concurrency": args.concurrency, "nofile": args.nofile},
                "targets": {"fanout_10k_s": TARGET_FANOUT_S, "kb_per_idle_subscriber": TARGET_KB_PER_SUB},
                "results": rows,
                "server_problems": problems[:50],
            }
            Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
            print(f"results written to {args.json}")
        return 0

    return run_bench("restmq-bench-streams-", args.keep_logs, work)


if __name__ == "__main__":
    sys.exit(main())
