"""Add/take through the engine on one Redis and on a 3-master Redis Cluster, in the same run.

    .venv/bin/python bench/cluster.py --seconds 5 --workers 16 --queues 12

Both backends are private, non-persistent servers on loopback started by this script (the cluster by
restmq.backend.localcluster, without replicas). Each worker adds one message and takes one, over
``--queues`` queues (spread over the masters by their names). It prints operations per second and
the client's CPU per operation (this process: the engine, the slot router, txredisapi).

On a shared 2-core machine this is a correctness and overhead figure, not a scaling claim: three
masters on the same two cores cannot go faster than one; what it shows is what routing costs the
client per call. It never fails on timing; exit 1 only when a server cannot start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, task


def start_single(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    from restmq.backend.local import free_port, redis_server_binary
    from restmq.backend.localcluster import command

    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            if command(port, "PING").startswith(b"+PONG"):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


async def measure(url: str, seconds: float, workers: int, queues: int) -> dict[str, Any]:
    from twisted.internet import reactor

    from restmq.backend.connect import connect
    from restmq.backend.redisconf import parse_redis_url
    from restmq.engine import QueueEngine
    from restmq.service import subscriber_endpoint

    target = parse_redis_url(url)
    client = await connect(target, poolsize=4, timeout=2.0)
    engine = QueueEngine(clock=reactor, timeout=2.0)
    await engine.attach(client, subscriber_endpoint(target, reactor))
    names = [f"bench{i}" for i in range(queues)]
    done = [0]
    stop_at = [0.0]

    async def worker(i: int) -> None:
        queue = names[i % len(names)]
        while time.monotonic() < stop_at[0]:
            await engine.add(queue, [(b'"x"', 0, 0, 0, None, False)])
            await engine.take(queue, 1)
            done[0] += 2

    stop_at[0] = time.monotonic() + 0.5  # warm-up
    await defer.gatherResults([defer.ensureDeferred(worker(i)) for i in range(workers)])
    done[0] = 0
    cpu, start = time.process_time(), time.monotonic()
    stop_at[0] = start + seconds
    await defer.gatherResults([defer.ensureDeferred(worker(i)) for i in range(workers)])
    elapsed, used = time.monotonic() - start, time.process_time() - cpu
    await engine.stop()
    await engine.redis.disconnect()
    return {
        "ops_per_s": round(done[0] / elapsed),
        "client_cpu_us_per_op": round(used / max(done[0], 1) * 1e6, 1),
        "ops": done[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--queues", type=int, default=12)
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args()
    from restmq.backend.localcluster import ClusterStartError, start_cluster

    directory = tempfile.mkdtemp(prefix="restmq-bench-cluster-")
    single, url = start_single(directory)
    try:
        cluster = start_cluster(3, 0, node_timeout=5000)
    except ClusterStartError as e:
        single.kill()
        print(f"cannot start the cluster: {e}", file=sys.stderr)
        return 1
    results: dict[str, Any] = {"cores": os.cpu_count(), "workers": options.workers, "queues": options.queues}

    async def run(reactor: Any) -> None:
        results["single"] = await measure(url, options.seconds, options.workers, options.queues)
        results["cluster_3_masters"] = await measure(cluster.url, options.seconds, options.workers, options.queues)

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit:
        pass
    finally:
        cluster.stop()
        single.terminate()
        single.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(results, indent=1))
    if options.json:
        with open(options.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
