"""What every ``restmq`` client subcommand shares: its options (``--url``, ``--token``, ``--json``),
how it prints an answer, its exit codes, and :func:`run_client`, which turns errors into them.

The commands themselves are :mod:`restmq.cli.messages` and :mod:`restmq.cli.queues`; they call a
running server through :class:`restmq.client.RestMQ`. Limits (how many, how long) are the command
table's (:mod:`restmq.commands`): the CLI checks only that a number is a number of the right sign,
and the server refuses what is out of bounds.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

from twisted.python import usage

from restmq import __version__
from restmq.commands import COUNT
from restmq.options import number_of

EXIT_OK, EXIT_EMPTY, EXIT_USAGE, EXIT_SERVER = 0, 1, 2, 3


def count_option(value: str) -> int:
    """A ``--count``: an integer, at least the command table's lowest count."""
    number: int = number_of(int, value)
    if COUNT.low is not None and number < COUNT.low:
        raise ValueError(f"count must be at least {COUNT.low:g}")
    return number


def seconds_option(value: str) -> float:
    """A number of seconds: finite and not negative (its upper bounds are the server's to check)."""
    number: float = number_of(float, value)
    if not number >= 0:
        raise ValueError("seconds must be a number >= 0")
    return number


def show(value: Any) -> str:
    """A value as the CLI prints it: strings raw, anything else as JSON text."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def as_list(answer: Any) -> list[Any]:
    return answer if isinstance(answer, list) else [answer]


class ClientOptions(usage.Options):
    """Options every client subcommand takes; ``run`` does the work with a :class:`RestMQ`."""

    #: What follows the subcommand in its usage line (each subcommand says).
    synopsis = ""
    optParameters: list[list[Any]] = [
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

    def parseArgs(self, queue: str) -> None:  # type: ignore[override]  # Twisted: no words
        self.queue = queue


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
