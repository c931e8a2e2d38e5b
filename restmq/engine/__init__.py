"""The queue engine: Redis structures, Lua scripts, subscriptions. Only the dispatcher calls it.

``QueueEngine`` is imported on first use, so that importing a leaf of the package (``keys``,
``records``) never pulls in the rest of it.
"""

from typing import Any

__all__ = ["QueueEngine"]


def __getattr__(name: str) -> Any:
    if name == "QueueEngine":
        from restmq.engine.core import QueueEngine

        return QueueEngine
    raise AttributeError(name)
