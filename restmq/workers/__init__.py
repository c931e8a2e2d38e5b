"""``--workers N``: one parent process and N workers sharing its listening sockets.

::

    parent (restmq serve / twistd restmq)    binds every listener once (before twistd drops
      EmbeddedRedis                          privileges), runs the one embedded Redis, spawns the
      BoundListener <name>                   workers, restarts one that dies (with backoff) and
      Supervisor                             forwards SIGTERM and SIGHUP to all of them
    worker i (python -m restmq.workers.child)
      the usual service tree (restmq/service.py) on the adopted sockets, Redis at the parent's URL,
      its share of every limit (:mod:`restmq.workers.shares`) and its line in the process table
      (:mod:`restmq.workers.table`), which /stats and /metrics merge.

A worker learns what it is from one environment variable (:data:`ENV`): its :class:`WorkerSpec` and
its Config, written by the parent. With ``--workers 1`` (the default) none of this runs.
"""

from __future__ import annotations

import base64
import pickle
from dataclasses import dataclass, field
from typing import Any

#: The environment variable that carries a worker's spec and config from the parent.
ENV = "RESTMQ_WORKER_SPEC"


@dataclass(frozen=True)
class WorkerSpec:
    """What the parent tells one worker."""

    index: int
    count: int
    #: front end name -> (descriptor in the worker, address family) of the socket to adopt
    sockets: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: when the parent started (epoch seconds): the server's uptime in /stats
    started: float = 0.0
    #: the parent's pid: a worker whose parent is gone stops
    parent: int = 0


def encode(config: Any, spec: WorkerSpec) -> str:
    """The value of :data:`ENV` for a worker (the parent wrote it; nobody else reads it)."""
    return base64.b64encode(pickle.dumps((config, spec))).decode("ascii")


def decode(text: str) -> tuple[Any, WorkerSpec]:
    config, spec = pickle.loads(base64.b64decode(text))
    return config, spec
