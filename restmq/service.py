"""The service tree, built in one place for ``restmq serve``, ``twistd restmq`` and the tac.

::

    RestMQService        starts children in order, stops them in reverse, one after the other
      RedisBackend       embedded redis-server (AOF) or an external pool
      EngineService      attaches the engine once Redis is ready; ends streams on stop
      Pusher             delivers push subscriptions (restmq/push.py); idle without --push-allow
      Listener <name>    one per front end whose endpoint is set, in the registry's order
                         (restmq/frontends/registry.py): http, line, syslog, resp, memcache

Listeners bind in ``privilegedStartService`` so ``twistd --uid/--gid`` can drop privileges after
binding; until Redis is ready they answer ``backend_unavailable``. The embedded Redis's data dir is
made, handed to the ``--uid/--gid`` user, locked and its binary checked in that phase too, so what
cannot start fails before the reactor runs, in one line (:mod:`restmq.startup`).
"""

from __future__ import annotations

import gc
import signal
import sys
from dataclasses import fields
from typing import Any, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorFromThreads
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure

from restmq import logs
from restmq.acl import RECHECK, Acl
from restmq.auth import Tokens, combine, no_tokens
from restmq.backend import RedisBackend
from restmq.backend.connect import endpoint_for
from restmq.backend.redisconf import RedisTarget
from restmq.config import Config
from restmq.frontends.base import Context
from restmq.frontends.registry import frontends
from restmq.limits import LimitedFactory, Limits
from restmq.dispatch import Dispatcher
from restmq.errors import RestMQError
from restmq.engine import QueueEngine
from restmq.engine.hub import SubscriberEndpoint
from restmq.push import Pusher
from restmq.startup import StartError
from restmq.workers import WorkerSpec

log = Logger()


def subscriber_endpoint(target: RedisTarget, reactor: Any) -> SubscriberEndpoint:
    """Where the hub's pub/sub connection goes: the same server as the pool, with the same TLS
    checks; for Sentinel, the master they name at each (re)connect, so a failover is followed."""
    return SubscriberEndpoint(
        endpoint_for(target, reactor), password=target.password, username=target.username
    )


class EngineService(Service):
    """Attaches the engine to Redis when the backend is ready; on stop ends every stream."""

    def __init__(self, engine: QueueEngine, backend: RedisBackend, reactor: Any) -> None:
        self.engine, self.backend, self.reactor = engine, backend, reactor
        self._attaching: defer.Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        self._attaching = defer.ensureDeferred(self._attach())
        self._attaching.addErrback(self._failed)

    def _failed(self, failure: Failure) -> None:
        """Redis cannot be used at all (the embedded server did not start, a password was refused):
        the root decides what that means for the process."""
        if failure.check(defer.CancelledError):
            return
        if isinstance(self.parent, RestMQService):
            self.parent.fatal(failure.getErrorMessage())
        else:
            log.critical("redis backend failed to start: {error}", error=failure.getErrorMessage())

    async def _attach(self) -> None:
        client = await self.backend.whenReady()
        target = self.backend.target
        await self.engine.attach(client, subscriber_endpoint(target, self.reactor))
        log.info("engine ready redis={url}", url=target.display())

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._attaching is not None and not self._attaching.called:
            self._attaching.cancel()
        return defer.ensureDeferred(self.engine.stop())


def adopted_port(port: Any) -> None:
    """A worker's port on a socket its siblings share (``--workers``). It takes one connection each
    time it is woken (Twisted takes up to a hundred), so a burst of connections is spread between
    the workers instead of all going to whichever woke first; stopping leaves the socket to them."""
    read = port.doRead

    def doRead() -> Any:
        port.numberAccepts = 1
        return read()

    port.doRead = doRead
    # The socket is shared: a worker that stops closes its descriptor but must not shut the socket
    # down, which would stop it listening for every worker.
    port._shouldShutdown = False
    path = getattr(port, "_bindPath", None)
    if path is not None:
        # A UNIX socket's path is the parent's: a worker that stops must not remove it (Twisted's
        # port removes its path unless it names the abstract namespace).
        port._bindPath = b"\0"
        port._logConnectionLostMsg = lambda: log.info("stopped accepting on {path}", path=path)


class Listener(StreamServerEndpointService):
    """A front end on an endpoint string; logs ``listening`` with the real address (port 0 too).

    ``adopt`` (a ``--workers`` worker): the (descriptor, family) of the socket the parent bound for
    this endpoint, accepted on here instead of binding; an ``ssl:`` endpoint's TLS is done here."""

    def __init__(
        self, name: str, description: str, factory: IProtocolFactory, reactor: Any,
        adopt: tuple[int, int] | None = None,
    ) -> None:
        endpoint: Any = serverFromString(reactor, description)
        if adopt is not None:
            if isinstance(endpoint, SSL4ServerEndpoint):
                from twisted.protocols.tls import TLSMemoryBIOFactory

                factory = TLSMemoryBIOFactory(endpoint._sslContextFactory, False, factory)
            endpoint = AdoptedStreamServerEndpoint(reactor, *adopt)
        super().__init__(endpoint, factory)
        self.adopted = adopt is not None
        self.setName(name)
        self.description = description
        self._raiseSynchronously = True
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as e:  # whatever keeps it from listening: the port, the socket path, TLS files
            reason = getattr(e, "socketError", None) or e
            raise StartError(f"--{self.name} {self.description}: cannot listen: {reason}") from None
        assert self._waitingForPort is not None  # set by privilegedStartService when it returns
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        if self.adopted:
            adopted_port(port)
        host = port.getHost()
        if isinstance(host, (IPv4Address, IPv6Address)):
            address = f"{host.host}:{host.port}"
        else:  # a UNIX socket: its path
            name = getattr(host, "name", None)
            address = name.decode() if isinstance(name, bytes) else str(name)
        log.info(
            "{frontend} listening on {address}",
            frontend=self.name,
            address=address,
            host=getattr(host, "host", None),
            port=getattr(host, "port", None),
        )
        return port


class RestMQService(MultiService):
    """The root: children start in order and stop in reverse, each waiting for the one before."""

    def __init__(
        self, config: Config, dispatcher: Dispatcher, tokens: Tokens | None = None, acl: Acl | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.dispatcher = dispatcher
        self.tokens = tokens
        self.acl = acl
        self._acl_watch: LoopingCall | None = None
        #: called with the reason when Redis cannot be used at all once running; the entry points
        #: set it (``restmq serve``: stop and exit 1; twistd: :func:`restmq.startup.stop_and_exit`)
        self.on_fatal: Any = None

    def setServiceParent(self, parent: Any) -> None:
        """Under twistd (plugin or tac) the application's ILogObserver component is the log
        observer twistd starts: that is how ``--log-format json`` reaches twistd's output."""
        super().setServiceParent(parent)
        if (
            self.config.log_format == "json"
            and hasattr(parent, "setComponent")
            and parent.getComponent(ILogObserver, None) is None
        ):
            parent.setComponent(ILogObserver, logs.observer("json", sys.stdout))

    def privilegedStartService(self) -> None:
        """Bind, prepare the data dir; a part that cannot start is logged in one line and ends the
        start (:class:`StartError`), before anything answers."""
        try:
            super().privilegedStartService()
        except StartError as e:
            log.critical("restmq cannot start: {error}", error=e.message)
            raise

    def fatal(self, reason: str) -> None:
        """Redis cannot be used at all once running: one line, then the entry point's ``on_fatal``."""
        log.critical("restmq cannot run: {error}", error=reason)
        if self.on_fatal is not None:
            self.on_fatal(reason)

    def startService(self) -> None:
        super().startService()
        # Everything imported and built so far lives as long as the process: moved out of the
        # cyclic GC's sight, it is no longer rescanned on every collection (measured: +10-35 %
        # pipelined line adds per CPU-second, bench/RESULTS.md).
        gc.collect()
        gc.freeze()
        if self.tokens is not None or self.acl is not None:
            signal.signal(signal.SIGHUP, self._sighup)
        if self.acl is not None:
            self._acl_watch = LoopingCall(self.refresh_acl)
            self._acl_watch.start(RECHECK, now=False)

    def _sighup(self, signum: int, frame: Any) -> None:
        from twisted.internet import reactor

        # The reactor module is typed as the base reactor; every real reactor runs calls from threads.
        cast(IReactorFromThreads, reactor).callFromThread(self.reload_auth)

    def reload_auth(self) -> None:
        """SIGHUP: read the auth and ACL files again; a broken file keeps what was loaded."""
        for name, source in (("auth", self.tokens), ("acl", self.acl)):
            if source is None:
                continue
            try:
                count = source.reload()
            except RestMQError as e:
                log.error("{kind} file not reloaded, the old rules stay: {error}", kind=name, error=e.message)
            else:
                log.info("{kind} file reloaded entries={count}", kind=name, count=count)

    def refresh_acl(self) -> None:
        """Every second: reload the ACL file when it changed (the original's reload on change)."""
        assert self.acl is not None
        try:
            if self.acl.refresh():
                log.info("acl file reloaded entries={count}", count=len(self.acl.rules))
        except RestMQError as e:
            log.error("acl file not reloaded, the old rules stay: {error}", error=e.message)

    def stopService(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)
        if self._acl_watch is not None and self._acl_watch.running:
            self._acl_watch.stop()
        for child in reversed(list(self)):
            try:
                await defer.maybeDeferred(child.stopService)
            except Exception:
                log.failure("error stopping {name}", name=child.name)
        log.info("restmq stopped")

    def listener(self, name: str) -> Listener:
        """The listener of front end ``name`` (tests read its real port)."""
        found = self.getServiceNamed(name)
        assert isinstance(found, Listener)
        return found


def asdict_shallow(config: Config) -> dict[str, Any]:
    """The core options of ``config`` by attribute name (no deep copy, unlike ``asdict``)."""
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name != "frontend"}


def build(
    config: Config, reactor: Any = None, *, run_as: tuple[int, int] | None = None, on_fatal: Any = None,
    worker: WorkerSpec | None = None,
) -> RestMQService:
    """Build the whole service tree for ``config``; nothing starts until the tree is started.

    ``run_as``: the (uid, gid) ``twistd --uid/--gid`` switches to, to whom the privileged start hands
    the embedded Redis's data dir. ``on_fatal``: see :attr:`RestMQService.on_fatal`. One process
    (``--workers`` is restmq/server.py's); ``worker``: this is one ``--workers`` worker's tree, on
    the parent's sockets (restmq/workers/child.py)."""
    # Load now what later work imports lazily: twistd --uid/--gid drops privileges after this, and
    # the service user may not be able to read Python's library (e.g. a Python under /root).
    import encodings.idna  # noqa: F401  (host name resolution)

    import txredisapi  # noqa: F401

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    from restmq.frontends.nothttp import NotHttpFactory

    backend = RedisBackend(
        config.redis,
        data_dir=config.data,
        binary=config.redis_server,
        durability=config.durability,
        poolsize=config.redis_pool,
        timeout=config.redis_timeout,
        reactor=reactor,
    )
    engine = QueueEngine(
        clock=reactor,
        timeout=config.redis_timeout,
        default_policy=config.default_policy,
        replay=config.replay,
        max_queues=config.max_queues,
        replicas=config.replicas,
    )
    tokens = Tokens(config.auth_file) if config.auth_file else None
    acl = Acl(config.acl) if config.acl else None
    dispatcher = Dispatcher(
        engine,
        max_message_size=config.max_message_size,
        authorize=combine(tokens, acl),
        check_token=tokens.check if tokens is not None else no_tokens,
        max_subscribers=config.max_subscribers,
        push_allow=config.push_allow,
    )
    root = RestMQService(config, dispatcher, tokens, acl)
    root.on_fatal = on_fatal
    if backend.server is not None:
        backend.server.run_as = run_as
    backend.setName("backend")
    backend.setServiceParent(root)
    engine_service = EngineService(engine, backend, reactor)
    engine_service.setName("engine")
    engine_service.setServiceParent(root)
    # After the engine: stopped first, it lets its deliveries in flight end while Redis is there.
    Pusher(engine, reactor, config.push_allow, dispatcher.push_metrics).setServiceParent(root)
    limits = Limits(config.max_connections, config.max_connections_per_address)
    if worker is not None:
        from restmq.workers.table import ProcessTable

        table = ProcessTable(engine, dispatcher, limits, worker.index, worker.started, backend)
        table.setName("processes")
        table.setServiceParent(root)
        dispatcher.server_view = table.server_stats
    context = Context(dispatcher, reactor, limits, {**asdict_shallow(config), **config.frontend})
    for frontend in frontends():
        endpoint = config.endpoints.get(frontend.name)
        if endpoint is None:
            continue
        factory = frontend.build(context)
        # Listeners that do not speak HTTP refuse it: a web page could post commands to them.
        counted = LimitedFactory(factory, limits) if frontend.speaks_http else NotHttpFactory(
            factory, limits, frontend.name)
        adopt = worker.sockets.get(frontend.name) if worker is not None else None
        Listener(frontend.name, endpoint, counted, reactor, adopt).setServiceParent(root)
    return root
