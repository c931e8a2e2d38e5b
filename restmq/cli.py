"""The ``restmq`` command: ``restmq serve`` runs the server (the client subcommands come later).

Exit codes: 0 ok, 1 the server failed (could not bind, Redis could not start), 2 usage error.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsJSON,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python import usage
from twisted.python.failure import Failure

from restmq import __version__, tap


class ServeOptions(tap.Options):
    """``restmq serve``: the same options as ``twistd restmq``."""


class Options(usage.Options):
    synopsis = "restmq <command> [options]"
    longdesc = "RestMQ: a Redis-backed message queue that speaks HTTP. Try: restmq serve --help"
    subCommands = [["serve", None, ServeOptions, "Run the server (embedded Redis unless --redis)."]]

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"restmq {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is required")


def json_observer(stream: IO[str]) -> ILogObserver:
    """One JSON object per line (no RFC 7464 separator), for log shippers and tests."""

    def observe(event: dict[str, Any]) -> None:
        stream.write(eventAsJSON(event) + "\n")
        stream.flush()

    return observe


def start_logging(log_format: str, stream: IO[str]) -> None:
    """Send twisted.logger events to ``stream``, info and above."""
    observer = json_observer(stream) if log_format == "json" else textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    # Reconnect attempts while Redis is away are logged by the backend once, not per pool slot.
    predicate.setLogLevelForNamespace("twisted.application._client_service.ClientService", LogLevel.warn)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])], redirectStandardIO=False)


def serve(config: tap.Config) -> int:
    """Run the service tree until SIGINT/SIGTERM; Redis is stopped last."""
    from twisted.application import app, service
    from twisted.internet import reactor
    from twisted.logger import Logger

    from restmq.service import build

    log = Logger(namespace="restmq.cli")
    start_logging(config.log_format, sys.stdout)
    status = {"code": 0}

    def fatal(failure: Any) -> None:
        log.critical("restmq cannot run: {error}", error=failure.getErrorMessage())
        status["code"] = 1
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined]

    root = build(config, reactor)
    application = service.Application("restmq")
    root.setServiceParent(application)
    root.getServiceNamed("backend").whenReady().addErrback(fatal)  # type: ignore[attr-defined]

    def start() -> None:
        try:
            app.startApplication(application, False)
        except Exception:
            fatal(Failure())

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return status["code"]


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"{options}\nrestmq: {e}", file=sys.stderr)
        return 2
    if options.subCommand == "serve":
        return serve(options.subOptions["config"])
    return 2


if __name__ == "__main__":
    sys.exit(main())
