"""The queue engine: Redis structures, Lua scripts, subscriptions. Only the dispatcher calls it."""

from restmq.engine.core import QueueEngine

__all__ = ["QueueEngine"]
