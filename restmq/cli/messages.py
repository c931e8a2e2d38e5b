"""The ``restmq`` subcommands that move messages: push, pull (take), reserve, ack, nack, peek.

Their limits and defaults in the help come from the command table (:mod:`restmq.commands`), so the
help says what the server enforces.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.python import usage

from restmq.cli.client import (
    EXIT_EMPTY, EXIT_OK, ClientOptions, QueueOptions, as_list, count_option, seconds_option, show,
)
from restmq.commands import COMMANDS, COUNT, MAX_COUNT, PRIORITY, SETTINGS, WAIT

#: The queue's default lease (a queue setting), for reserve's help.
DEFAULT_LEASE = next(a.default for a in SETTINGS if a.name == "lease")
#: peek's states, its default first.
PEEK_STATE = COMMANDS["peek"].by_name["state"]
OTHER_STATES = [s for s in PEEK_STATE.choices if s != PEEK_STATE.default]


#: ``restmq push set|get|rm``: the push subscription commands, by word.
SUBSCRIPTION_WORDS = {"set": ("push_set", 3), "get": ("push_get", 2), "rm": ("push_rm", 2)}
PUSH_SETTINGS = ("secret", "push-timeout", "concurrency", "backoff")


class PushOptions(ClientOptions):
    synopsis = "QUEUE VALUE|- [options]  |  set QUEUE URL [options]  |  get QUEUE  |  rm QUEUE"
    longdesc = (
        "Add VALUE to QUEUE and print its key. With '-', add each line of stdin (empty lines are "
        "skipped) with add_many in batches; on a terminal a progress line shows how many were "
        "pushed, otherwise the keys are printed, one per line. VALUE is sent as text unless "
        "--json-value is given. 'push set QUEUE URL' sets the queue's push subscription (the server "
        "POSTs each message to URL; --secret, --push-timeout, --concurrency, --backoff), 'push get "
        "QUEUE' shows it, 'push rm QUEUE' removes it (docs/push-and-schedules.md). To add to a queue named set, "
        "get or rm, use 'restmq call'."
    )
    optParameters: list[list[Any]] = [
        ["secret", None, None, "push set: key of the RestMQ-Signature HMAC (default: unsigned)."],
        ["push-timeout", None, None, "push set: seconds a delivery may take (default 10).", seconds_option],
        ["concurrency", None, None, "push set: most deliveries in flight for the queue (default 4).", int],
        ["backoff", None, None, "push set: seconds before each retry, comma-separated; the last repeats "
         "(default 1,5,30,120)."],
        ["priority", "p", None, f"{PRIORITY.doc} (default {PRIORITY.default}).", int],
        ["delay", "d", None, "Seconds before the message can be delivered.", seconds_option],
        ["ttl", "t", None, "Drop it if not taken within this many seconds.", seconds_option],
        ["dedup", None, None, "Adds with the same string within the queue's dedup window add once."],
        ["batch", None, 500, f"Lines per add_many request with '-' (1-{MAX_COUNT}).", int],
    ]
    optFlags: list[list[Any]] = [
        ["json-value", None, "Parse VALUE (or each stdin line) as JSON."],
        ["unique", "u", "Add only if the same value (added with --unique) is not already queued."],
    ]

    subscription: str | None = None
    url: str | None = None

    def parseArgs(self, *words: str) -> None:
        found = SUBSCRIPTION_WORDS.get(words[0]) if words else None
        if found is not None and len(words) == found[1]:
            self.subscription, self.queue = found[0], words[1]
            self.url = words[2] if len(words) > 2 else None
            self.value = ""
            return
        if len(words) != 2:
            raise usage.UsageError("give QUEUE VALUE (or set QUEUE URL, get QUEUE, rm QUEUE)")
        self.queue, self.value = words

    def postOptions(self) -> None:
        given = [name for name in PUSH_SETTINGS if self[name] is not None]
        if given and self.subscription != "push_set":
            raise usage.UsageError(f"--{given[0]} is an option of 'restmq push set'")
        if not 1 <= self["batch"] <= MAX_COUNT:  # add_many's most messages in one request
            raise usage.UsageError(f"--batch must be 1 to {MAX_COUNT}")
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
        if self.subscription is not None:
            return self.run_subscription(mq)
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


    def run_subscription(self, mq: Any) -> int:
        """``push set|get|rm``: one command, its answer as ``key=value`` words (or JSON)."""
        args: dict[str, Any] = {"queue": self.queue}
        if self.subscription == "push_set":
            args["url"] = self.url
            for option, name in (("secret", "secret"), ("push-timeout", "timeout"), ("concurrency", "concurrency"),
                                 ("backoff", "backoff")):
                if self[option] is not None:
                    args[name] = self[option]
        assert self.subscription is not None
        answer = mq.call(self.subscription, **args)
        self.out(answer, lambda: " ".join(f"{k}={show(v)}" for k, v in answer.items() if k != "queue"))
        return EXIT_OK


class PullOptions(QueueOptions):
    longdesc = (
        "Take (remove) the next message and print its value: text as is, anything else as JSON. "
        "With --count, up to N values, one per line. --json prints the whole message(s). Exits 1 "
        "when the queue is empty (after --wait seconds)."
    )
    optParameters: list[list[Any]] = [
        ["count", "n", None, f"Take up to N messages ({COUNT.low:g}-{COUNT.high:g}).", count_option],
        ["wait", "w", None, f"Wait up to S seconds for a message (long poll, max {WAIT.high:g}).",
         seconds_option],
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
    optParameters: list[list[Any]] = [
        ["lease", "l", None, f"Seconds the message stays hidden (default: the queue's, {DEFAULT_LEASE:g}).",
         seconds_option],
        ["count", "n", None, "Reserve up to N messages.", count_option],
        ["wait", "w", None, "Wait up to S seconds for a message.", seconds_option],
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

    def parseArgs(self, queue: str, *receipts: str) -> None:  # type: ignore[override]  # Twisted: no words
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
    optParameters: list[list[Any]] = [
        ["delay", "d", None, "Seconds before it can be delivered again.", seconds_option],
        ["error", "e", None, "Why it failed (kept with a dead message)."],
    ]

    def parseArgs(self, queue: str, receipt: str) -> None:  # type: ignore[override]  # Twisted: no words
        self.queue, self.receipt = queue, receipt

    def run(self, mq: Any) -> int:
        answer = mq.nack(self.queue, self.receipt, delay=self["delay"], error=self["error"])
        self.out(answer, f"nacked {answer.get('nacked')}")
        return EXIT_OK


class PeekOptions(QueueOptions):
    longdesc = "Print KEY<TAB>VALUE of the next message(s) without removing them. Exits 1 when none."
    optParameters: list[list[Any]] = [
        ["count", "n", None, "Up to N messages.", count_option],
        ["state", "s", None,
         f"{PEEK_STATE.default} (default), {', '.join(OTHER_STATES[:-1])} or {OTHER_STATES[-1]}."],
    ]

    def run(self, mq: Any) -> int:
        answer = mq.peek(self.queue, count=self["count"], state=self["state"])
        if answer == []:
            return EXIT_EMPTY
        self.out(answer, lambda: "\n".join(f"{m['key']}\t{show(m['value'])}" for m in as_list(answer)))
        return EXIT_OK
