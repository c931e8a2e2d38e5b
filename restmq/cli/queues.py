"""The ``restmq`` subcommands that look at and manage queues: len, stats, tail, purge, pause,
resume, redrive, and call (any command of the JSON protocol)."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

from twisted.python import usage

from restmq.cli.client import EXIT_EMPTY, EXIT_OK, ClientOptions, QueueOptions, count_option, show
from restmq.commands import COMMANDS

#: A message's states, in the command table's order (peek's choices).
STATES = COMMANDS["peek"].by_name["state"].choices


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain text table: columns padded, numbers right-aligned."""
    cells = [header] + [[show(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows)
               for i in range(len(header))]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


class LenOptions(QueueOptions):
    longdesc = "Print the queue's message counts by state."

    def run(self, mq: Any) -> int:
        answer = mq.len(self.queue)
        self.out(answer, " ".join(f"{k}={answer.get(k, 0)}" for k in STATES))
        return EXIT_OK


class StatsOptions(ClientOptions):
    synopsis = "[QUEUE] [options]"
    longdesc = "Server statistics as a table (every queue), or one queue's counters; --json for the JSON."

    def parseArgs(self, queue: str | None = None) -> None:
        self.queue = queue

    def run(self, mq: Any) -> int:
        answer = mq.stats(self.queue)
        if self.as_json:
            self.out(answer, "")
            return EXIT_OK
        if self.queue is not None:
            print(f"queue {answer.get('queue')}: {answer.get('state')}, policy {answer.get('policy')}, "
                  f"{answer.get('subscribers', 0)} subscriber(s)")
            length = answer.get("length") or {}
            counters = answer.get("counters") or {}
            print(table(["now", *length], [["messages", *length.values()]]))
            print(table(["since start", *counters], [["counted", *counters.values()]]))
            return EXIT_OK
        lengths = mq.list().get("queues", {})
        queues = answer.get("queues", {})
        print(f"{answer.get('redis', '')}  uptime {answer.get('uptime', 0):.0f}s  queues {answer.get('count', len(queues))}")
        rows = []
        for name in sorted(queues):
            q, n = queues[name], lengths.get(name, {})
            rows.append([name, n.get("ready", q.get("len", 0)), n.get("reserved", 0), n.get("delayed", 0),
                         n.get("dead", 0), q.get("state", ""), q.get("policy_name", ""), q.get("subscribers", 0)])
        print(table(["queue", "ready", "reserved", "delayed", "dead", "state", "policy", "subscribers"], rows))
        return EXIT_OK


class TailOptions(QueueOptions):
    longdesc = (
        "Follow the queue's COMET stream: print each message's value as it arrives (--json: the "
        "whole message, one JSON per line) until the queue is purged or Ctrl-C. Messages a tail "
        "receives are taken from the queue (unless the queue's policy shares them elsewhere)."
    )
    optParameters: list[list[Any]] = [["mode", "m", None, "take (default) or reserve."]]

    def run(self, mq: Any) -> int:
        signal.signal(signal.SIGTERM, _interrupt)
        subscription = mq.subscribe(self.queue, mode=self["mode"])
        try:
            for message in subscription:
                self.out(message, lambda: show(message.get("value")))
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        finally:
            subscription.close()
        return EXIT_OK


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class PurgeOptions(QueueOptions):
    longdesc = "Empty the queue and end its streams (its subscribers' tails end)."

    def run(self, mq: Any) -> int:
        answer = mq.purge(self.queue)
        self.out(answer, f"purged {answer.get('purged')}")
        return EXIT_OK


class PauseOptions(QueueOptions):
    longdesc = "Stop delivering from the queue; adds are still accepted."

    def run(self, mq: Any) -> int:
        answer = mq.pause(self.queue)
        self.out(answer, f"{self.queue} {answer.get('state')}")
        return EXIT_OK


class ResumeOptions(QueueOptions):
    longdesc = "Deliver from the queue again."

    def run(self, mq: Any) -> int:
        answer = mq.resume(self.queue)
        self.out(answer, f"{self.queue} {answer.get('state')}")
        return EXIT_OK


class RedriveOptions(QueueOptions):
    longdesc = "Move dead-letter messages (QUEUE.dead) back to the queue: all, or --count."
    optParameters: list[list[Any]] = [["count", "n", None, "Move at most N.", count_option]]

    def run(self, mq: Any) -> int:
        answer = mq.redrive(self.queue, count=self["count"])
        self.out(answer, f"moved {answer.get('moved')}")
        return EXIT_OK


class CallOptions(ClientOptions):
    synopsis = "JSON [options]"
    longdesc = (
        'Run any command of the JSON protocol and print its JSON answer, e.g. '
        'restmq call \'{"cmd": "add", "queue": "jobs", "value": {"n": 1}}\'.'
    )

    def parseArgs(self, command: str) -> None:  # type: ignore[override]  # Twisted: no words
        try:
            data = json.loads(command)
        except ValueError as e:
            raise usage.UsageError(f"not JSON: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("cmd"), str):
            raise usage.UsageError('give a JSON object with a "cmd" string')
        self.command = data

    def run(self, mq: Any) -> int:
        args = dict(self.command)
        answer = mq.call(args.pop("cmd"), **args)
        print(json.dumps(answer, ensure_ascii=False))
        return EXIT_EMPTY if answer == [] else EXIT_OK
