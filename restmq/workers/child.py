"""One ``--workers`` worker: ``python -m restmq.workers.child``, spawned by the parent only.

It runs the usual service tree (restmq/service.py) on the sockets the parent bound, against the
parent's Redis, logging JSON lines to the pipe the parent reads. SIGTERM stops it gracefully
(stop accepting, end streams, exit 0); SIGHUP reloads its tokens and ACL; it stops by itself
when its parent is gone. Exit codes: 0 stopped, 1 could not start or lost Redis for good.
"""

from __future__ import annotations

import os
import sys

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def main() -> int:
    from twisted.application import app, service
    from twisted.internet import reactor

    from restmq.logs import start_logging
    from restmq.service import build
    from restmq.startup import StartError
    from restmq.workers import ENV, decode

    config, spec = decode(os.environ.pop(ENV))
    start_logging("json", sys.stdout)
    status = {"code": 0}

    def fatal(reason: str) -> None:
        status["code"] = 1
        if reactor.running:
            reactor.stop()

    root = build(config, reactor, on_fatal=fatal, worker=spec)
    application = service.Application("restmq-worker")
    root.setServiceParent(application)
    try:
        root.privilegedStartService()
    except StartError:
        return 1

    def orphaned() -> None:
        if os.getppid() != spec.parent:
            log.warn("parent {pid} is gone; worker {worker} stops", pid=spec.parent, worker=spec.index)
            watch.stop()
            reactor.stop()

    watch = LoopingCall(orphaned)
    reactor.callWhenRunning(app.startApplication, application, False)
    reactor.callWhenRunning(watch.start, 1.0, False)
    reactor.run()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
