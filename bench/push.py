"""RestMQ push benchmark: messages pushed per second to a local receiver, by concurrency.

Rows, for each concurrency C in ``--concurrency`` (default 1, 4, 16):

* ``ceiling C`` — the receiver hit directly, without RestMQ, by the same HTTP client RestMQ pushes
  with (twisted.web's ``Agent`` over a persistent ``HTTPConnectionPool``), C requests in flight, the
  same body and headers: the most any push could do here.
* ``push C`` — RestMQ's push: ``--messages`` messages are added to a paused queue, the subscription
  is set (``concurrency`` C, no secret) and the queue resumed; pushes/s = messages / time until the
  queue is empty (acked), read from ``/stats/<q>`` every 20 ms.

What it starts (all on loopback, all stopped on exit): a private non-persistent ``redis-server``,
the receiver (this file with ``--receiver``: a twisted.web site answering 204 to every POST, on port
0) and ``restmq serve --push-allow http://127.0.0.1:`` with its embedded pusher; the ceiling runs as
this file with ``--ceiling``, in its own process like RestMQ. The servers are started and stopped by
``bench/harness.py``. Like the other benches it never fails on timing: it prints the table (and JSON
with ``--json``) and exits 0; only a setup failure exits 1.

Run::

    .venv/bin/python bench/push.py [--messages 2000] [--concurrency 1,4,16] [--json push.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402 - bench/harness.py, beside this file

BODY = json.dumps({"order": 1, "note": "x" * 40}).encode()


# -- the receiver and the ceiling (child processes of this same file) -------------------------------


def receiver() -> int:
    """A twisted.web site answering 204 to every POST; prints its port as one JSON line."""
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class Hook(Resource):
        isLeaf = True

        def render_POST(self, request: Any) -> bytes:
            request.content.read()
            request.setResponseCode(204)
            return b""

    site = Site(Hook())
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    print(json.dumps({"port": port.getHost().port}), flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


def ceiling(port: int, concurrency: int, requests: int) -> int:
    """POST ``requests`` times to the receiver with C in flight through Agent + pool (RestMQ's
    client); prints {"seconds": …, "failed": …}."""
    import io

    from twisted.internet import defer, reactor, task
    from twisted.web.client import Agent, HTTPConnectionPool, FileBodyProducer, readBody
    from twisted.web.http_headers import Headers

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 64
    agent = Agent(reactor, pool=pool)
    url = f"http://127.0.0.1:{port}/hook".encode()
    headers = Headers({b"content-type": [b"application/json"], b"restmq-queue": [b"bench"],
                       b"restmq-key": [b"bench:1"], b"restmq-attempt": [b"1"], b"restmq-timestamp": [b"0"]})
    left = [requests]
    failed = [0]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            response = await agent.request(b"POST", url, headers, FileBodyProducer(io.BytesIO(BODY)))
            await readBody(response)
            if not 200 <= response.code < 300:
                failed[0] += 1

    async def main(_: Any) -> None:
        start = time.perf_counter()
        await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(concurrency)])
        print(json.dumps({"seconds": time.perf_counter() - start, "failed": failed[0]}), flush=True)
        await pool.closeCachedConnections()

    task.react(lambda r: defer.ensureDeferred(main(r)))
    return 0


# -- the bench --------------------------------------------------------------------------------------


def call(port: int, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"content-type": "application/json", "accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"null")


def push_row(port: int, hook: str, concurrency: int, messages: int) -> dict[str, Any]:
    """Push ``messages`` through RestMQ with ``concurrency``; pushes/s until the queue is empty."""
    queue = f"push{concurrency}"
    call(port, "POST", "/queue", {"cmd": "pause", "queue": queue})
    value = json.loads(BODY)
    for start in range(0, messages, 1000):
        call(port, "POST", f"/q/{queue}", {"messages": [{"value": value}] * min(1000, messages - start)})
    call(port, "PUT", f"/q/{queue}/push", {"url": hook, "concurrency": concurrency, "backoff": [1]})
    time.sleep(1.5)  # let every pusher find the subscription (it reads the index every second)
    began = time.perf_counter()
    call(port, "POST", "/queue", {"cmd": "resume", "queue": queue})
    while True:
        stats = call(port, "GET", f"/stats/{queue}")
        if stats["len"] == 0:
            break
        time.sleep(0.02)
    seconds = time.perf_counter() - began
    push = stats["push"] or {}
    return {"row": f"push {concurrency}", "concurrency": concurrency, "messages": messages,
            "seconds": round(seconds, 3), "per_second": round(messages / seconds, 1),
            "failed": push.get("failed", 0)}


def ceiling_row(receiver_port: int, concurrency: int, messages: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(Path(__file__)), "--ceiling", str(receiver_port),
                           "--concurrency", str(concurrency), "--messages", str(messages)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise harness.SetupError(f"the ceiling client failed:\n{done.stderr[-2000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {"row": f"ceiling {concurrency}", "concurrency": concurrency, "messages": messages,
            "seconds": round(found["seconds"], 3), "per_second": round(messages / found["seconds"], 1),
            "failed": found["failed"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per row (default 2000)")
    parser.add_argument("--concurrency", default="1,4,16", help="concurrencies, comma-separated (default 1,4,16)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    parser.add_argument("--redis-server", help="redis-server binary (default: from PATH)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ceiling", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        return receiver()
    if args.ceiling is not None:
        return ceiling(args.ceiling, int(args.concurrency), args.messages)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]

    def work(tmp: Path, children: dict[str, Any]) -> int:
        env = harness.child_env()
        binary = harness.find_redis(args.redis_server)
        redis, redis_port, redis_info = harness.start_redis(binary, tmp, env)
        children["redis"] = redis
        hook = harness.Child("push receiver", [sys.executable, str(Path(__file__)), "--receiver"],
                             tmp / "receiver.log", tmp, env)
        children["bare"] = hook
        hook.start()
        events = hook.wait_json(lambda evs: any("port" in e for e in evs), 30)
        hook_port = next(int(e["port"]) for e in events if "port" in e)
        ports = harness.start_restmq(children, tmp, env, [
            "--redis", f"redis://127.0.0.1:{redis_port}/0", "--http", harness.ANY_PORT, "--line", "none",
            "--push-allow", "http://127.0.0.1:",
        ], ("http",))
        rows = []
        for c in levels:
            rows.append(ceiling_row(hook_port, c, args.messages))
            rows.append(push_row(ports["http"], f"http://127.0.0.1:{hook_port}/hook", c, args.messages))
        print(f"{'row':<12} {'messages':>8} {'seconds':>8} {'per s':>9} {'of ceiling':>10} {'failed':>6}")
        for row in rows:
            share = ""
            if row["row"].startswith("push"):
                top = next(r for r in rows if r["row"] == f"ceiling {row['concurrency']}")
                share = f"{100 * row['per_second'] / top['per_second']:.0f} %"
            print(f"{row['row']:<12} {row['messages']:>8} {row['seconds']:>8.2f} {row['per_second']:>9.0f} "
                  f"{share:>10} {row['failed']:>6}")
        facts = harness.machine_facts(redis_info, binary)
        print(harness.machine_line(facts))
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows, "machine": facts}, indent=2))
        return 0

    return harness.run_bench("restmq-bench-push-", args.keep_logs, work)


if __name__ == "__main__":
    sys.exit(main())
