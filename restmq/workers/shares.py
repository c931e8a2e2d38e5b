"""How the server's totals are split between workers, so a limit means the whole server.

Each worker enforces its share of ``--max-connections``, ``--max-connections-per-address``,
``--max-subscribers`` and ``--redis-pool`` locally (no round trip per accept): the server never
holds more than the total. Shares are as even as integers allow (worker 0 takes the remainder
first) and at least 1, so a total smaller than the number of workers is exceeded by at most one
per worker. 0 (no limit) stays 0. Pure: no Twisted.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

#: The Config fields that are totals for the whole server.
SHARED = ("max_connections", "max_connections_per_address", "max_subscribers", "redis_pool")


def share(total: int, index: int, count: int) -> int:
    """Worker ``index``'s part of ``total`` among ``count`` workers."""
    if total == 0 or count <= 1:
        return total
    return max(1, total // count + (1 if index < total % count else 0))


def worker_config(config: Any, index: int, count: int, redis: str) -> Any:
    """Worker ``index``'s Config: the parent's, with Redis at ``redis``, one worker, its shares."""
    values = {f.name: getattr(config, f.name) for f in fields(config) if f.name != "frontend"}
    values.update({name: share(int(values[name]), index, count) for name in SHARED})
    values.update(redis=redis, workers=1)
    return type(config)(**values, frontend=dict(config.frontend))
