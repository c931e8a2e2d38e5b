"""The ``restmq`` command: ``restmq serve`` runs the server; the other subcommands are a client of
a running server over HTTP (through :mod:`restmq.client`).

Exit codes of ``serve``: 0 ok, 1 the server failed (could not bind, Redis could not start), 2 usage
error. Exit codes of the client commands: 0 ok, 1 empty (take/reserve/peek found nothing), 2 usage
error, 3 server error (``restmq: <code>: <message>`` on stderr).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any, Callable

from twisted.python import usage

from restmq import __version__, tap
from restmq.logs import start_logging


class ServeOptions(tap.Options):
    """``restmq serve``: the same options as ``twistd restmq``."""


# -- client commands ----------------------------------------------------------------------------

EXIT_OK, EXIT_EMPTY, EXIT_USAGE, EXIT_SERVER = 0, 1, 2, 3


def _count(value: str) -> int:
    number: int = tap.number_of(int, value)
    if number < 1:
        raise ValueError("count must be at least 1")
    return number


def _seconds(value: str) -> float:
    number: float = tap.number_of(float, value)
    if not number >= 0:
        raise ValueError("seconds must be a number >= 0")
    return number


def show(value: Any) -> str:
    """A value as the CLI prints it: strings raw, anything else as JSON text."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def as_list(answer: Any) -> list[Any]:
    return answer if isinstance(answer, list) else [answer]


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


class ClientOptions(usage.Options):
    """Options every client subcommand takes; ``run`` does the work with a :class:`RestMQ`."""

    optParameters = [
        ["url", "u", None, "Server URL (default: $RESTMQ_URL, else http://127.0.0.1:8888)."],
        ["token", None, None, "Bearer token sent with every request (default: $RESTMQ_TOKEN)."],
    ]
    optFlags = [["json", "j", "Print the server's JSON answers (for scripts)."]]

    def parseOptions(self, options: list[str] | None = None) -> None:
        """As usage.Options, but options may also follow the positional arguments
        (``restmq pull jobs --json``); ``--`` ends the options."""
        argv = list(sys.argv[1:] if options is None else options)
        flags: list[str] = []
        positional: list[str] = []
        while argv:
            token = argv.pop(0)
            if token == "--":
                positional += argv
                break
            if token.startswith("--"):
                flags.append(token)
                if "=" not in token and token[2:] + "=" in self.longOpt and argv:
                    flags.append(argv.pop(0))
            elif token.startswith("-") and len(token) > 1:
                flags.append(token)
                if len(token) == 2 and token[1] + ":" in self.shortOpt and argv:
                    flags.append(argv.pop(0))
            else:
                positional.append(token)
        super().parseOptions([*flags, "--", *positional])

    def getSynopsis(self) -> str:
        parent = getattr(self, "parent", None)
        command = parent.subCommand if parent is not None else "<command>"
        return f"Usage: restmq {command} {self.synopsis}"

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"restmq {__version__}")
        raise SystemExit(0)

    def setting(self, name: str, env: str, default: str | None) -> str | None:
        """An option from this command, else from before the command, else the environment."""
        parent = getattr(self, "parent", None)
        return self[name] or (parent[name] if parent is not None else None) or os.environ.get(env) or default

    @property
    def as_json(self) -> bool:
        parent = getattr(self, "parent", None)
        return bool(self["json"] or (parent is not None and parent["json"]))

    def client(self) -> Any:
        from restmq.client import DEFAULT_URL, RestMQ

        return RestMQ(self.setting("url", "RESTMQ_URL", DEFAULT_URL) or DEFAULT_URL,
                      token=self.setting("token", "RESTMQ_TOKEN", None))

    def out(self, answer: Any, text: str | Callable[[], str]) -> None:
        """Print ``answer`` as JSON with --json, else ``text``."""
        if self.as_json:
            print(json.dumps(answer, ensure_ascii=False))
        else:
            print(text() if callable(text) else text)

    def run(self, mq: Any) -> int:  # pragma: no cover - every command overrides it
        raise NotImplementedError


class QueueOptions(ClientOptions):
    """A command on one queue: ``restmq CMD QUEUE``."""

    synopsis = "QUEUE [options]"
    queue: str

    def parseArgs(self, queue: str) -> None:
        self.queue = queue


class PushOptions(ClientOptions):
    synopsis = "QUEUE VALUE|- [options]"
    longdesc = (
        "Add VALUE to QUEUE and print its key. With '-', add each line of stdin (empty lines are "
        "skipped) with add_many in batches; on a terminal a progress line shows how many were "
        "pushed, otherwise the keys are printed, one per line. VALUE is sent as text unless "
        "--json-value is given."
    )
    optParameters = [
        ["priority", "p", None, "0-9, lower is served first (default 5).", int],
        ["delay", "d", None, "Seconds before the message can be delivered.", _seconds],
        ["ttl", "t", None, "Drop it if not taken within this many seconds.", _seconds],
        ["dedup", None, None, "Adds with the same string within the queue's dedup window add once."],
        ["batch", None, 500, "Lines per add_many request with '-' (1-1000).", int],
    ]
    optFlags = [
        ["json-value", None, "Parse VALUE (or each stdin line) as JSON."],
        ["unique", "u", "Add only if the same value (added with --unique) is not already queued."],
    ]

    def parseArgs(self, queue: str, value: str) -> None:
        self.queue, self.value = queue, value

    def postOptions(self) -> None:
        if not 1 <= self["batch"] <= 1000:
            raise usage.UsageError("--batch must be 1 to 1000")
        if self.value == "-" and self["dedup"]:
            raise usage.UsageError("--dedup makes no sense for many lines: it would add only the first")

    def parse(self, text: str) -> Any:
        if not self["json-value"]:
            return text
        try:
            return json.loads(text)
        except ValueError as e:
            raise usage.UsageError(f"not JSON: {text[:60]!r}: {e}") from None

    def run(self, mq: Any) -> int:
        extra = {k: self[k] for k in ("priority", "delay", "ttl") if self[k] is not None}
        if self["unique"]:
            extra["unique"] = True
        if self.value != "-":
            answer = mq.add(self.queue, self.parse(self.value), dedup=self["dedup"], **extra)
            self.out(answer, answer["key"] + (" (already queued)" if answer.get("duplicate") else ""))
            return EXIT_OK
        progress = sys.stderr.isatty() and not self.as_json
        pushed = 0
        batch: list[Any] = []

        def flush() -> None:
            nonlocal pushed
            if not batch:
                return
            messages = [dict(extra, value=v) for v in batch] if extra else list(batch)
            answer = mq.add_many(self.queue, messages)
            pushed += len(answer["keys"]) - len(answer.get("duplicates", ()))
            batch.clear()
            if progress:
                sys.stderr.write(f"\rpushed {pushed}")
                sys.stderr.flush()
            else:
                self.out(answer, lambda: "\n".join(answer["keys"]))
                sys.stdout.flush()

        for line in sys.stdin:
            line = line.rstrip("\r\n")
            if line:
                batch.append(self.parse(line))
                if len(batch) >= self["batch"]:
                    flush()
        flush()
        if progress:
            sys.stderr.write(f"\rpushed {pushed}\n")
        return EXIT_OK


class PullOptions(QueueOptions):
    longdesc = (
        "Take (remove) the next message and print its value: text as is, anything else as JSON. "
        "With --count, up to N values, one per line. --json prints the whole message(s). Exits 1 "
        "when the queue is empty (after --wait seconds)."
    )
    optParameters = [
        ["count", "n", None, "Take up to N messages (1-1000).", _count],
        ["wait", "w", None, "Wait up to S seconds for a message (long poll, max 60).", _seconds],
    ]

    def run(self, mq: Any) -> int:
        answer = mq.take(self.queue, count=self["count"], wait=self["wait"])
        if answer == []:
            return EXIT_EMPTY
        self.out(answer, lambda: "\n".join(show(m["value"]) for m in as_list(answer)))
        return EXIT_OK


class ReserveOptions(QueueOptions):
    longdesc = (
        "Reserve the next message for a lease (at-least-once) and print RECEIPT<TAB>VALUE; ack it "
        "with 'restmq ack QUEUE RECEIPT' or it comes back after the lease. Exits 1 when empty."
    )
    optParameters = [
        ["lease", "l", None, "Seconds the message stays hidden (default: the queue's, 30).", _seconds],
        ["count", "n", None, "Reserve up to N messages.", _count],
        ["wait", "w", None, "Wait up to S seconds for a message.", _seconds],
    ]

    def run(self, mq: Any) -> int:
        answer = mq.reserve(self.queue, count=self["count"], lease=self["lease"], wait=self["wait"])
        if answer == []:
            return EXIT_EMPTY
        self.out(answer, lambda: "\n".join(f"{m['receipt']}\t{show(m['value'])}" for m in as_list(answer)))
        return EXIT_OK


class AckOptions(ClientOptions):
    synopsis = "QUEUE RECEIPT [RECEIPT...] [options]"
    longdesc = "Acknowledge reserved messages (they are done and deleted); prints how many."

    def parseArgs(self, queue: str, *receipts: str) -> None:
        if not receipts:
            raise usage.UsageError("give at least one RECEIPT")
        self.queue, self.receipts = queue, list(receipts)

    def run(self, mq: Any) -> int:
        receipt = self.receipts[0] if len(self.receipts) == 1 else self.receipts
        answer = mq.ack(self.queue, receipt)
        self.out(answer, f"acked {answer.get('acked')}")
        return EXIT_OK


class NackOptions(ClientOptions):
    synopsis = "QUEUE RECEIPT [options]"
    longdesc = "Give a reserved message back now (or after --delay); dead after max_attempts deliveries."
    optParameters = [
        ["delay", "d", None, "Seconds before it can be delivered again.", _seconds],
        ["error", "e", None, "Why it failed (kept with a dead message)."],
    ]

    def parseArgs(self, queue: str, receipt: str) -> None:
        self.queue, self.receipt = queue, receipt

    def run(self, mq: Any) -> int:
        answer = mq.nack(self.queue, self.receipt, delay=self["delay"], error=self["error"])
        self.out(answer, f"nacked {answer.get('nacked')}")
        return EXIT_OK


class PeekOptions(QueueOptions):
    longdesc = "Print KEY<TAB>VALUE of the next message(s) without removing them. Exits 1 when none."
    optParameters = [
        ["count", "n", None, "Up to N messages.", _count],
        ["state", "s", None, "ready (default), reserved, delayed or dead."],
    ]

    def run(self, mq: Any) -> int:
        answer = mq.peek(self.queue, count=self["count"], state=self["state"])
        if answer == []:
            return EXIT_EMPTY
        self.out(answer, lambda: "\n".join(f"{m['key']}\t{show(m['value'])}" for m in as_list(answer)))
        return EXIT_OK


class LenOptions(QueueOptions):
    longdesc = "Print the queue's message counts by state."

    def run(self, mq: Any) -> int:
        answer = mq.len(self.queue)
        self.out(answer, " ".join(f"{k}={answer.get(k, 0)}" for k in ("ready", "reserved", "delayed", "dead")))
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
    optParameters = [["mode", "m", None, "take (default) or reserve."]]

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
    optParameters = [["count", "n", None, "Move at most N.", _count]]

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

    def parseArgs(self, command: str) -> None:
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


class BenchOptions(ClientOptions):
    synopsis = "[options]"
    longdesc = (
        "A quick load test against a running server with the blocking client: adds messages for "
        "--seconds, then takes them for at most --seconds, and prints messages per second. The "
        "queue is purged before and after."
    )
    optParameters = [
        ["seconds", "s", 3.0, "How long each phase runs.", _seconds],
        ["queue", "q", "restmq-bench", "The queue to use (it is emptied)."],
        ["size", None, 100, "Bytes per message.", int],
    ]

    def run(self, mq: Any) -> int:
        from restmq.errors import Empty

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


CLIENT_COMMANDS: list[list[Any]] = [
    ["push", None, PushOptions, "Add a message, or each line of stdin with '-'."],
    ["pull", None, PullOptions, "Take the next message(s) and print the value (exit 1 when empty)."],
    ["take", None, PullOptions, "Same as pull."],
    ["reserve", None, ReserveOptions, "Reserve message(s) for a lease; prints RECEIPT<TAB>VALUE."],
    ["ack", None, AckOptions, "Acknowledge reserved messages by receipt."],
    ["nack", None, NackOptions, "Give a reserved message back."],
    ["peek", None, PeekOptions, "Look at messages without removing them."],
    ["len", None, LenOptions, "Count a queue's messages by state."],
    ["stats", None, StatsOptions, "Server or queue statistics as a table (--json for JSON)."],
    ["tail", None, TailOptions, "Follow a queue's stream, one line per message (Ctrl-C ends)."],
    ["purge", None, PurgeOptions, "Empty a queue."],
    ["pause", None, PauseOptions, "Stop delivering from a queue."],
    ["resume", None, ResumeOptions, "Deliver from a queue again."],
    ["redrive", None, RedriveOptions, "Move dead letters back to their queue."],
    ["call", None, CallOptions, "Run any JSON command and print the answer."],
    ["bench", None, BenchOptions, "Quick load test against a running server."],
]


def run_client(options: ClientOptions) -> int:
    """Run a client subcommand: its exit code, errors printed as ``restmq: <code>: <message>``."""
    from restmq.errors import RestMQError

    mq = options.client()
    try:
        return options.run(mq)
    except usage.UsageError as e:
        print(f"restmq: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RestMQError as e:
        if e.code == "empty":
            return EXIT_EMPTY
        print(f"restmq: {e.code}: {e.message}", file=sys.stderr)
        return EXIT_SERVER
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``restmq tail q | head -1``): not an error; keep Python quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    finally:
        mq.close()


class Options(usage.Options):
    synopsis = "restmq <command> [options]"
    longdesc = (
        "RestMQ: a Redis-backed message queue that speaks HTTP. 'restmq serve' runs a server; the "
        "other commands talk to one (--url, default $RESTMQ_URL or http://127.0.0.1:8888). "
        "Exit codes: 0 ok, 1 empty, 2 usage error, 3 server error. Try: restmq <command> --help"
    )
    subCommands = [["serve", None, ServeOptions, "Run the server (embedded Redis unless --redis)."], *CLIENT_COMMANDS]
    optParameters = ClientOptions.optParameters
    optFlags = ClientOptions.optFlags

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"restmq {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is required")


def serve(config: tap.Config) -> int:
    """Run the service tree until SIGINT/SIGTERM; Redis is stopped last.

    What cannot start (a port, the data dir, the Redis binary) fails before the reactor runs: one
    line in the log, exit code 1 (see :mod:`restmq.startup`)."""
    from twisted.application import app, service
    from twisted.internet import reactor

    from restmq.service import build
    from restmq.startup import StartError

    start_logging(config.log_format, sys.stdout)
    status = {"code": 0}

    def fatal(reason: str) -> None:
        status["code"] = 1
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined]

    root = build(config, reactor, on_fatal=fatal)
    application = service.Application("restmq")
    root.setServiceParent(application)
    try:
        root.privilegedStartService()
    except StartError:
        return 1  # the root logged why
    reactor.callWhenRunning(app.startApplication, application, False)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return status["code"]


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sub = getattr(options, "subOptions", None)
        if isinstance(sub, ServeOptions):  # one line: the server's help is long
            print(f"restmq serve: {e} (restmq serve --help lists the options)", file=sys.stderr)
            return 2
        shown = sub if isinstance(sub, ClientOptions) else options
        print(f"{shown}\nrestmq: {e}", file=sys.stderr)
        return 2
    if options.subCommand == "serve":
        return serve(options.subOptions["config"])
    if isinstance(options.subOptions, ClientOptions):
        return run_client(options.subOptions)
    return 2


if __name__ == "__main__":
    sys.exit(main())
