"""A quick load test against a running RestMQ server, with the blocking client (``restmq.client``).

It adds messages for ``--seconds``, then takes them for at most ``--seconds``, and prints messages
per second; the queue it uses is purged before and after. Unlike the other benches it starts
nothing: point it at a server (``--url``, default ``$RESTMQ_URL`` or ``http://127.0.0.1:8888``;
``--token`` or ``$RESTMQ_TOKEN``). It was ``restmq bench``; the options, output and exit codes are
the ``restmq`` client commands' (0 ok, 2 usage error, 3 server error).

Run::

    .venv/bin/python bench/load.py --seconds 5 [--queue restmq-bench] [--size 100] [--json]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # this checkout's restmq, as the other benches use it

from twisted.python import usage  # noqa: E402

from restmq.cli.client import EXIT_OK, EXIT_USAGE, ClientOptions, run_client, seconds_option  # noqa: E402
from restmq.errors import Empty  # noqa: E402


class LoadOptions(ClientOptions):
    synopsis = "[options]"
    longdesc = (
        "A quick load test against a running server with the blocking client: adds messages for "
        "--seconds, then takes them for at most --seconds, and prints messages per second. The "
        "queue is purged before and after."
    )
    optParameters = [
        ["seconds", "s", 3.0, "How long each phase runs.", seconds_option],
        ["queue", "q", "restmq-bench", "The queue to use (it is emptied)."],
        ["size", None, 100, "Bytes per message.", int],
    ]

    def getSynopsis(self) -> str:
        return f"Usage: python bench/load.py {self.synopsis}"

    def run(self, mq: Any) -> int:
        queue, seconds = self["queue"], self["seconds"]
        value = "x" * max(self["size"], 0)
        mq.purge(queue)
        added, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            mq.add(queue, value)
            added += 1
        add_time = time.monotonic() - start
        taken, start = 0, time.monotonic()
        while taken < added and time.monotonic() - start < seconds:
            try:
                mq.take(queue)
            except Empty:
                break
            taken += 1
        take_time = time.monotonic() - start
        mq.purge(queue)
        result = {
            "queue": queue, "added": added, "add_seconds": round(add_time, 3),
            "add_rate": round(added / add_time, 1) if add_time else 0.0,
            "taken": taken, "take_seconds": round(take_time, 3),
            "take_rate": round(taken / take_time, 1) if take_time else 0.0,
        }
        self.out(result, lambda: (
            f"add:  {added} msgs in {add_time:.2f} s = {result['add_rate']:.0f} msgs/s\n"
            f"take: {taken} msgs in {take_time:.2f} s = {result['take_rate']:.0f} msgs/s"
        ))
        return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Parse the options as ``restmq`` does (usage errors exit 2), then run the load test."""
    options = LoadOptions()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"{options}\nload.py: {e}", file=sys.stderr)
        return EXIT_USAGE
    return run_client(options)


if __name__ == "__main__":
    sys.exit(main())
