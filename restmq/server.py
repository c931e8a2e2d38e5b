"""The entry points' one call: the service tree of one process, or of the parent of ``--workers``.

``restmq serve``, ``twistd restmq`` and the tac build through :func:`build_server`; with
``--workers`` above 1 the parent's tree (restmq/workers/supervisor.py) runs the workers, each of
which builds the one-process tree of restmq/service.py on the parent's sockets.
"""

from __future__ import annotations

from typing import Any

from restmq.config import Config
from restmq.service import RestMQService, build


def build_server(
    config: Config, reactor: Any = None, *, run_as: tuple[int, int] | None = None, on_fatal: Any = None
) -> RestMQService:
    """:func:`restmq.service.build`, or the workers' parent when ``config.workers`` > 1."""
    if config.workers > 1:
        from restmq.workers.supervisor import build_parent

        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        return build_parent(config, reactor, run_as=run_as, on_fatal=on_fatal)
    return build(config, reactor, run_as=run_as, on_fatal=on_fatal)
