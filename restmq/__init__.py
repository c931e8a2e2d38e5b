"""RestMQ: a Redis-backed message queue that speaks HTTP."""

__version__ = "2.0.0.dev0"
