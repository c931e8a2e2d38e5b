"""The ``restmq`` command: ``restmq serve`` runs the server (:mod:`restmq.cli.serve`); the other
subcommands are a client of a running server over HTTP (:mod:`restmq.cli.messages` and
:mod:`restmq.cli.queues`, through :mod:`restmq.client`).

Exit codes of ``serve``: 0 ok, 1 the server failed (could not bind, Redis could not start), 2 usage
error. Exit codes of the client commands: 0 ok, 1 empty (take/reserve/peek found nothing), 2 usage
error, 3 server error (``restmq: <code>: <message>`` on stderr).
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

from twisted.python import usage

from restmq import __version__
from restmq.cli.client import EXIT_USAGE, ClientOptions, run_client
from restmq.cli.messages import AckOptions, NackOptions, PeekOptions, PullOptions, PushOptions, ReserveOptions
from restmq.cli.queues import (
    CallOptions, LenOptions, PauseOptions, PurgeOptions, RedriveOptions, ResumeOptions, StatsOptions, TailOptions,
)
from restmq.cli.schedules import ScheduleOptions
from restmq.cli.serve import ServeOptions, serve

#: Where the load test went, and how to run it (from a checkout: it is not part of the package).
BENCH_SCRIPT = "bench/load.py"


class BenchMovedOptions(usage.Options):
    """``restmq bench``, kept so that the old command says where the load test went
    (``bench/load.py``, a script of the source tree) instead of "unknown command"."""

    synopsis = "[options]"
    longdesc = (
        f"The quick load test moved out of the restmq command: it is {BENCH_SCRIPT} in RestMQ's source "
        f"tree, with the same options (--seconds, --queue, --size, --url, --token, --json). Run "
        f"python {BENCH_SCRIPT} --help from a checkout."
    )
    args: list[str] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Take any arguments (the old command's), to show them in the new command line."""
        self.args = list(options or [])
        own = self.args[:self.args.index("--") if "--" in self.args else None]
        for flag in ("--help", "--version"):
            if flag in own:
                super().parseOptions([flag])

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"restmq {__version__}")
        raise SystemExit(0)

    def getSynopsis(self) -> str:
        return "Usage: restmq bench [options]"


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
    # -- recurring schedules --
    ["schedule", None, ScheduleOptions, "Recurring schedules: set, get, ls, rm."],
]


class Options(usage.Options):
    synopsis = "restmq <command> [options]"
    longdesc = (
        "RestMQ: a Redis-backed message queue that speaks HTTP. 'restmq serve' runs a server; the "
        "other commands talk to one (--url, default $RESTMQ_URL or http://127.0.0.1:8888). "
        "Exit codes: 0 ok, 1 empty, 2 usage error, 3 server error. Try: restmq <command> --help"
    )
    subCommands = [
        ["serve", None, ServeOptions, "Run the server (embedded Redis unless --redis)."],
        *CLIENT_COMMANDS,
        ["bench", None, BenchMovedOptions, f"Moved: the load test is {BENCH_SCRIPT} in the source tree."],
    ]
    optParameters = ClientOptions.optParameters
    optFlags = ClientOptions.optFlags

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"restmq {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is required")


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
    if isinstance(options.subOptions, BenchMovedOptions):
        command = shlex.join(["python", BENCH_SCRIPT, *options.subOptions.args])
        print(f"restmq: bench moved out of the restmq command; from a RestMQ checkout run: {command}",
              file=sys.stderr)
        return EXIT_USAGE
    if isinstance(options.subOptions, ClientOptions):
        return run_client(options.subOptions)
    return 2
