"""The parent of ``--workers N``: binds the listeners, runs the embedded Redis, supervises workers.

The parent never accepts a connection: it binds every listener in ``privilegedStartService`` (so
``twistd --uid/--gid`` still binds as root), stops reading from the sockets and hands them to the
workers through ``spawnProcess(childFDs=…)``; the kernel spreads connections between the workers
that accept on one socket. With ``--reuse-port`` each worker gets its own SO_REUSEPORT socket on a
TCP listener instead (kept by the parent, so a replacement worker takes over its predecessor's).

Workers are spawned once Redis is ready (after the privilege drop: they run as the service user).
One that ends unasked is logged with why and restarted after a backoff (0.5 s doubling to 30 s,
back to 0.5 s once a worker has lived 10 s). SIGTERM stops the workers gracefully (each stops
accepting, ends its streams and exits) before the sockets close and Redis stops; SIGHUP is passed
to every worker (tokens and ACL reload there). Workers log JSON lines to a pipe; the parent logs
each through its own observer, with ``worker`` and ``worker_pid`` added.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, SSL4ServerEndpoint, _TCPServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorFromThreads
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from restmq.backend.embedded import EmbeddedRedis, _exit_status
from restmq.service import Listener, RestMQService
from restmq.startup import StartError
from restmq.workers import ENV, WorkerSpec, encode
from restmq.workers.shares import worker_config

log = Logger()

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: A worker that lived this long is healthy: the next restart waits BACKOFF_INITIAL again.
HEALTHY_AFTER = 10.0
#: Seconds the workers have to stop after SIGTERM before they are killed.
STOP_TIMEOUT = 30.0


def reuse_port_sockets(endpoint: Any, count: int) -> list[socket.socket]:
    """``count`` SO_REUSEPORT sockets listening on a TCP endpoint's address (port 0: the first
    socket's port for all of them)."""
    interface = endpoint._interface or ""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    found: list[socket.socket] = []
    port = endpoint._port
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            found.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((interface, port))
            s.listen(endpoint._backlog)
            port = s.getsockname()[1]
    except OSError:
        for s in found:
            s.close()
        raise
    return found


class _Idle(Protocol):
    """Never built: the parent does not read from its listening sockets."""


class _IdleFactory(Factory):
    noisy = False
    protocol = _Idle


class BoundListener(Listener):
    """A listener the parent binds and never reads from; its workers accept on it."""

    def __init__(self, name: str, description: str, reactor: Any, count: int, reuse_port: bool) -> None:
        super().__init__(name, description, _IdleFactory(), reactor)
        self.count, self.reactor = count, reactor
        self.own: list[socket.socket] = []
        self.reuse_port = reuse_port and isinstance(self.endpoint, (_TCPServerEndpoint, SSL4ServerEndpoint))

    def privilegedStartService(self) -> None:
        if self.reuse_port:
            try:
                self.own = reuse_port_sockets(self.endpoint, self.count)
            except OSError as e:
                raise StartError(f"--{self.name} {self.description}: cannot listen: {e}") from None
            self.endpoint = AdoptedStreamServerEndpoint(
                self.reactor, os.dup(self.own[0].fileno()), self.own[0].family
            )
        super().privilegedStartService()

    def _listening(self, port: IListeningPort) -> IListeningPort:
        cast(Any, port).stopReading()  # the workers accept; the parent only holds the socket
        return super()._listening(port)

    def socket_for(self, index: int) -> tuple[int, int]:
        """(descriptor, address family) that worker ``index`` adopts."""
        if self.own:
            chosen = self.own[index % len(self.own)]
            return chosen.fileno(), int(chosen.family)
        assert self.port is not None, "bound in privilegedStartService"
        port = cast(Any, self.port)
        return port.fileno(), int(getattr(port, "addressFamily", socket.AF_INET))

    def stopService(self) -> defer.Deferred[None]:
        for s in self.own:
            s.close()
        self.own = []
        return cast("defer.Deferred[None]", super().stopService())


class _WorkerProtocol(ProcessProtocol):
    """One worker process: relays its JSON log lines, reports its end to the supervisor."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor, self.index = supervisor, index
        self.started = time.monotonic()
        self.pid: int | None = None
        self._buffers: dict[int, bytes] = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self.transport.closeStdin()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        buffered = self._buffers.get(fd, b"") + data
        *lines, rest = buffered.split(b"\n")
        self._buffers[fd] = rest
        for line in lines:
            if line.strip():
                self.relay(line.decode("utf-8", "replace"))

    def relay(self, line: str) -> None:
        """A worker's log line, logged by the parent's observer (text or JSON, file or stdout)."""
        try:
            event = json.loads(line)
            if not isinstance(event, dict):
                raise ValueError
        except ValueError:
            log.info("[worker {worker}] {worker_text}", worker_text=line, worker=self.index, worker_pid=self.pid)
            return
        text = str(event.pop("message", ""))
        if "traceback" in event:
            text += "\n" + str(event.pop("traceback"))
        level = LogLevel.levelWithName(str(event.pop("level", "info")))
        namespace = str(event.pop("namespace", "restmq.worker"))
        stamp = event.pop("time", None)
        try:
            when = datetime.fromisoformat(str(stamp)).timestamp()
        except ValueError:
            when = time.time()
        template = event.pop("log_format", None)
        event.update(
            worker_text=text, log_level=level, log_namespace=namespace, log_time=when, log_source=None,
            log_logger=log, worker=self.index, worker_pid=self.pid,
        )
        # The worker's own template when its fields survived the trip (log readers group by it).
        event["log_format"] = template if isinstance(template, str) else "{worker_text}"
        if event["log_format"] != "{worker_text}" and formatEvent(event) != text:
            event["log_format"] = "{worker_text}"
        if event["log_format"] != "{worker_text}":
            del event["worker_text"]
        event["log_format"] = "[worker {worker}] " + event["log_format"]
        globalLogPublisher(event)

    def processEnded(self, reason: Failure) -> None:
        self.supervisor.ended(self, reason)


class Supervisor(Service):
    """Spawns the workers once Redis is ready, restarts those that die, forwards signals."""

    def __init__(
        self, config: Any, listeners: list[BoundListener], redis: EmbeddedRedis | None, reactor: Any,
        on_fatal: Any = None, run_as: tuple[int, int] | None = None,
    ) -> None:
        self.config, self.listeners, self.redis, self.reactor = config, listeners, redis, reactor
        self.run_as = run_as
        self.count: int = config.workers
        self.on_fatal = on_fatal
        self.started = time.time()
        self.workers: dict[int, _WorkerProtocol] = {}
        self.backoff: dict[int, float] = {}
        self.pending: dict[int, Any] = {}
        self.stopping = False
        self.restarts = 0
        self._all_ended: defer.Deferred[None] | None = None
        self._waiting: defer.Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        signal.signal(signal.SIGHUP, self._sighup)
        if self.redis is not None:
            self._waiting = self.redis.whenReady()
        else:
            self._waiting = defer.succeed(self.config.redis)
        self._waiting.addCallbacks(self._spawn_all, self._redis_failed)
        self._waiting.addErrback(lambda failure: self._redis_failed(failure, "cannot start the workers: "))

    def privilegedStartService(self) -> None:
        """Under ``twistd --uid/--gid`` the workers run as that user: check now, while a failure is
        one line before anything starts, that it can run this Python and import RestMQ."""
        super().privilegedStartService()
        if self.run_as is None or os.geteuid() != 0:
            return
        uid, gid = self.run_as
        try:
            probe = subprocess.run(
                [sys.executable, "-c", "import restmq.workers.child"], user=uid, group=gid, extra_groups=[],
                capture_output=True, text=True, timeout=30, cwd="/",
            )
            problem = probe.stderr.strip().splitlines()[-1:] if probe.returncode else None
        except OSError as e:
            problem = [str(e)]
        if problem is not None:
            raise StartError(
                f"--workers: user {uid}:{gid} cannot run {sys.executable} with RestMQ "
                f"({problem[0] if problem else 'exit code ' + str(probe.returncode)}); install RestMQ "
                "where that user can read it, or run one process (--workers 1)"
            )

    def _redis_failed(self, failure: Failure, why: str = "") -> None:
        if failure.check(defer.CancelledError):
            return
        if self.on_fatal is not None:
            self.on_fatal(why + failure.getErrorMessage())

    def _spawn_all(self, url: str) -> None:
        self.url = url
        for index in range(self.count):
            self.spawn(index)

    def spawn(self, index: int) -> None:
        """Start worker ``index`` with the sockets and its share of the limits."""
        self.pending.pop(index, None)
        if self.stopping:
            return
        sockets = {str(listener.name): listener.socket_for(index) for listener in self.listeners}
        spec = WorkerSpec(index, self.count, sockets, self.started, os.getpid())
        config = worker_config(self.config, index, self.count, self.url)
        env = {**os.environ, ENV: encode(config, spec)}
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        for fd, _ in sockets.values():
            child_fds[fd] = fd
        protocol = _WorkerProtocol(self, index)
        try:
            self.reactor.spawnProcess(
                protocol, sys.executable, [sys.executable, "-m", "restmq.workers.child"], env=env,
                childFDs=child_fds,
            )
        except OSError as e:
            if not self.workers and not self.restarts:
                raise  # the first start: fatal
            self._retry(index, f"cannot spawn: {e}", protocol.pid, 0.0)
            return
        self.workers[index] = protocol
        log.info("worker {worker} started pid={pid}", worker=index, pid=protocol.pid)

    def ended(self, protocol: _WorkerProtocol, reason: Failure) -> None:
        index = protocol.index
        if self.workers.get(index) is protocol:
            del self.workers[index]
        why = _exit_status(reason)
        if self.stopping:
            log.info("worker {worker} pid={pid} stopped: {why}", worker=index, pid=protocol.pid, why=why)
            if not self.workers and self._all_ended is not None and not self._all_ended.called:
                self._all_ended.callback(None)
            return
        self._retry(index, why, protocol.pid, time.monotonic() - protocol.started)

    def _retry(self, index: int, why: str, pid: int | None, lived: float) -> None:
        """Log why worker ``index`` is gone and start another after its backoff."""
        delay = BACKOFF_INITIAL if lived >= HEALTHY_AFTER else self.backoff.get(index, BACKOFF_INITIAL)
        self.backoff[index] = min(delay * 2, BACKOFF_MAX)
        self.restarts += 1
        log.warn(
            "worker {worker} pid={pid} ended ({why}) after {lived:.1f} s; restarting in {delay} s",
            worker=index, pid=pid, why=why, lived=lived, delay=delay,
        )
        self.pending[index] = self.reactor.callLater(delay, self.spawn, index)

    def _sighup(self, signum: int, frame: Any) -> None:
        cast(IReactorFromThreads, self.reactor).callFromThread(self._reload)

    def _reload(self) -> None:
        """SIGHUP: the workers reload their tokens and ACL; without either there is nothing to
        reload (and a worker, which then has no SIGHUP handler, must not get one)."""
        if self.config.auth_file or self.config.acl:
            self.forward(signal.SIGHUP)
        else:
            log.info("SIGHUP: no --auth-file or --acl to reload")

    def forward(self, sig: int) -> None:
        """Send ``sig`` to every live worker (SIGHUP: each reloads its tokens and ACL)."""
        log.info("forwarding {signal} to {count} workers", signal=signal.Signals(sig).name, count=len(self.workers))
        for protocol in list(self.workers.values()):
            if protocol.pid is not None:
                try:
                    os.kill(protocol.pid, sig)
                except ProcessLookupError:
                    pass

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self.stopping = True
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        for call in self.pending.values():
            if call.active():
                call.cancel()
        self.pending.clear()
        if not self.workers:
            return
        self._all_ended = defer.Deferred()
        self.forward(signal.SIGTERM)
        timer = self.reactor.callLater(STOP_TIMEOUT, self.forward, signal.SIGKILL)
        try:
            await self._all_ended
        finally:
            if timer.active():
                timer.cancel()


class ParentService(RestMQService):
    """The parent's root: Redis, the bound listeners, then the supervisor (stopped first)."""

    supervisor: Supervisor


def build_parent(
    config: Any, reactor: Any, *, run_as: tuple[int, int] | None = None, on_fatal: Any = None
) -> ParentService:
    """The parent's service tree for ``config.workers`` workers."""
    from restmq.frontends.registry import frontends

    root = ParentService(config, cast(Any, None))
    root.on_fatal = on_fatal
    redis: EmbeddedRedis | None = None
    if config.redis is None:
        redis = EmbeddedRedis(config.data, binary=config.redis_server, durability=config.durability, reactor=reactor)
        redis.run_as = run_as
        redis.setName("backend")
        redis.setServiceParent(root)
    listeners = []
    for frontend in frontends():
        endpoint = config.endpoints.get(frontend.name)
        if endpoint is not None:
            listener = BoundListener(frontend.name, endpoint, reactor, config.workers, config.reuse_port)
            listener.setServiceParent(root)
            listeners.append(listener)
    supervisor = Supervisor(config, listeners, redis, reactor, on_fatal=root.fatal, run_as=run_as)
    supervisor.setName("supervisor")
    supervisor.setServiceParent(root)
    root.supervisor = supervisor
    return root
