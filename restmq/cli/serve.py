"""``restmq serve``: parse the server's options and run the service tree in this process.

Everything the server does is :mod:`restmq.service`'s; this only starts it. Exit codes: 0 ok, 1 the
server failed (could not bind, Redis could not start: see :mod:`restmq.startup`), 2 usage error
(printed by :func:`restmq.cli.main`).
"""

from __future__ import annotations

import sys

from restmq import tap
from restmq.logs import start_logging


class ServeOptions(tap.Options):
    """``restmq serve``: the same options as ``twistd restmq``."""


def serve(config: tap.Config) -> int:
    """Run the service tree until SIGINT/SIGTERM; Redis is stopped last.

    What cannot start (a port, the data dir, the Redis binary) fails before the reactor runs: one
    line in the log, exit code 1 (see :mod:`restmq.startup`)."""
    from twisted.application import app, service
    from twisted.internet import reactor

    from restmq.server import build_server as build
    from restmq.startup import StartError

    start_logging(config.log_format, sys.stdout)
    status = {"code": 0}

    def fatal(reason: str) -> None:
        status["code"] = 1
        if reactor.running:
            reactor.stop()

    root = build(config, reactor, on_fatal=fatal)
    application = service.Application("restmq")
    root.setServiceParent(application)
    try:
        root.privilegedStartService()
    except StartError:
        return 1  # the root logged why
    reactor.callWhenRunning(app.startApplication, application, False)
    reactor.run()
    return status["code"]
