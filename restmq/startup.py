"""Failing to start: one clear line, no traceback, a non-zero exit, under every way of running RestMQ.

Two moments can fail:

- Before the reactor runs (``privilegedStartService``: listeners, the data dir, its lock, the Redis
  binary). A part that cannot start raises :class:`StartError`; the root service logs its one line
  and lets it through. ``restmq serve`` catches it and exits 1; under twistd it ends the process
  with exit code 1 and no traceback, and a daemonizing twistd's parent prints it too.
- Once running (the embedded Redis does not come up): the root service logs one line and calls the
  ``on_fatal`` hook its entry point gave it: :func:`stop_and_exit` under twistd, which otherwise
  would keep the process answering 503 forever and exit 0.

An external Redis that is down is neither: RestMQ serves ``backend_unavailable`` until it is back.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any


class StartError(SystemExit, Exception):
    """RestMQ cannot start; ``str()`` is the one line that says why.

    An ``Exception``, so twistd's daemon mode reports it through its status pipe and removes its pid
    file; a ``SystemExit`` with code 1, so the interpreter exits with 1 without printing a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = 1
        self.message = message

    def __str__(self) -> str:
        return self.message


def stop_and_exit(code: int = 1, reactor: Any = None) -> None:
    """Under twistd: stop the reactor (services stop cleanly, twistd removes its pid file), then
    end the process with ``code`` (twistd itself would exit 0)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor

    def exit_with_code() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed or broken stream must not keep the code from being set
                pass
        os._exit(code)

    atexit.register(exit_with_code)
    if reactor.running:
        reactor.stop()
