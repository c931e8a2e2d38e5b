"""Turn a :class:`RedisTarget` into a txredisapi connection pool, and describe the server behind it.

txredisapi is imported inside the functions: it imports the global reactor at import time, and
importing this module must not choose a reactor (``twistd --reactor``, pytest-twisted).

Behaviour while Redis is down (measured with txredisapi 1.6, see tests/test_backend.py):

- The pool is always *lazy*: :func:`connect` hands out the handler even when no connection could be
  made, and every pool slot keeps reconnecting on its own (backoff from 0.1 s up to
  ``RECONNECT_MAX_DELAY``), so a RestMQ started before its Redis works once Redis comes up.
- A command issued while no connection is up does **not** fail: it waits (forever, there is no
  reply timeout) for a connection and is sent once the pool has reconnected. Callers must put their
  own timeout on every call (``Deferred.addTimeout``); cancelling the Deferred is safe and
  withdraws the waiting command, it is never sent later.
- A command already sent when the connection drops fails with ``txredisapi.ConnectionError``
  ("Lost connection"). It may or may not have been executed by the server.
- Errors the server returns arrive as ``txredisapi.ResponseError`` (``NOSCRIPT`` as
  ``txredisapi.ScriptDoesNotExist``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq.backend.redisconf import (
    MINIMUM_VERSIONS,
    RedisTarget,
    parse_flavour,
    parse_version,
)
from restmq.errors import BackendUnavailable
from zope.interface import implementer

if TYPE_CHECKING:
    import txredisapi
    from twisted.internet.interfaces import IReactorTime

log = Logger()

#: Longest wait between two reconnection attempts of a pool slot. txredisapi's default (10 s) would
#: leave RestMQ answering ``backend_unavailable`` for up to 10 s after Redis came back.
RECONNECT_MAX_DELAY = 2.0
RECONNECT_INITIAL_DELAY = 0.1


def _reactor(reactor: Any) -> Any:
    """The given reactor, else the global one (imported only now, never at module import)."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        return global_reactor
    return reactor


def build_command(encode_other: Any, args: tuple[Any, ...]) -> bytes:
    """One RESP command from ``args``: bytes as they are, str as UTF-8, int in decimal.

    txredisapi's own builder encodes every argument and every length through a generic converter
    and was a third of the cost of a queue add; this does the common types directly and leaves the
    rest (floats, bools, bytearrays) to ``encode_other``, txredisapi's converter.
    """
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            data = arg
        elif kind is str:
            data = arg.encode()
        elif kind is int:
            data = b"%d" % arg
        else:
            data = encode_other(arg)
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def pack_command(encode_other: Any, args: tuple[Any, ...]) -> bytes:
    """:func:`build_command`, done by hiredis's C packer when every argument is bytes, str or int
    (a script call's 20-odd arguments: a tenth of a request's cost in Python); floats, bools and
    the rest keep txredisapi's spelling through :func:`build_command`."""
    if _hiredis_pack is not None and _PACKABLE.issuperset(map(type, args)):
        return _hiredis_pack(args)
    return build_command(encode_other, args)


_hiredis_pack: Any
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # an older hiredis, or none: txredisapi's Python reader and our builder
    _hiredis_pack = None

_PACKABLE = frozenset({bytes, str, int})


def _identity(data: Any) -> Any:
    return data


def _no_delay(transport: Any) -> None:
    """Send each write at once (TCP_NODELAY), as redis-py and hiredis do: with Nagle's algorithm,
    a command written while the previous one's bytes are not yet acknowledged waits for that
    acknowledgement, which rides on Redis's answer, so pipelined commands would go one answer
    at a time. Transports without the option (a Unix socket, TLS over a wrapper) are left as
    they are."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        try:
            set_no_delay(True)
        except OSError:
            pass


@functools.cache
def _fast_protocol_class() -> type:
    """txredisapi's protocol with a leaner command and reply path for this pool (raw bytes in and
    out, no number conversion, no reply timeout): commands packed by :func:`pack_command`, one
    Deferred per command instead of two, and replies handed over as hiredis reads them (no
    recursive per-element conversion, which is the identity for raw bytes). Pipelining and
    MULTI keep txredisapi's own path."""
    import txredisapi
    from twisted.internet.defer import Deferred

    class FastRedisProtocol(txredisapi.RedisProtocol):
        def connectionMade(self) -> Any:
            _no_delay(self.transport)
            return super().connectionMade()

        def _build_command(self, *args: Any, **kwargs: Any) -> bytes:
            return pack_command(self._encode_value, args)

        def tryConvertData(self, data: Any) -> Any:
            if self.charset is None and not self.convertNumbers:
                return data
            return super().tryConvertData(data)

        def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            queue = self.replyQueue
            if (kwargs or not self.connected or self.pipelining or self.inMulti or self.replyTimeout
                    or queue.pending or self.charset is not None or self.convertNumbers):
                return super().execute_command(*args, **kwargs)
            self.transport.write(pack_command(self._encode_value, args))
            waiting = queue.waiting

            def withdraw(d: Deferred[Any]) -> None:
                # As txredisapi's ReplyQueue: the reply will still come; keep its slot.
                try:
                    waiting[waiting.index(d)] = Deferred()
                except ValueError:
                    pass

            d: Deferred[Any] = Deferred(withdraw)
            d.addCallback(self.handle_reply)  # an error reply arrives as an exception: raise it
            waiting.append(d)
            return d

        def dataReceived(self, data: bytes, unpause: bool = False) -> None:
            if self.inTransaction or self.charset is not None or self.convertNumbers:
                super().dataReceived(data, unpause)
                return
            reader = self._reader
            if data:
                reader.feed(data)
            put = self.replyReceived
            res = reader.gets()
            while res is not False:
                put(res)
                res = reader.gets()

    if txredisapi.hiredis is None:  # txredisapi's Python reader: keep its own reply path
        class SlowerRedisProtocol(txredisapi.RedisProtocol):
            def _build_command(self, *args: Any, **kwargs: Any) -> bytes:
                return build_command(self._encode_value, args)

        return SlowerRedisProtocol
    return FastRedisProtocol


@functools.cache
def _sentinel_class() -> type:
    """txredisapi's Sentinel, answering as soon as every Sentinel has: during a failover they all
    report the old master as down, and txredisapi would wait its whole discovery timeout (10 s)
    before the next try, although the new master is usually named a second later."""
    import txredisapi

    class PromptSentinel(txredisapi.Sentinel):
        discovery_timeout = 2.0

        def discover_master(self, service_name: str) -> Deferred[tuple[str, int]]:
            result: Deferred[tuple[str, int]] = Deferred()
            waiting = [len(self.sentinels)]

            def settle() -> None:
                if not result.called:
                    if timer.active():
                        timer.cancel()
                    result.errback(txredisapi.MasterNotFoundError(f"No master found for {service_name}"))

            def answered(response: Any) -> None:
                if result.called:
                    return
                state = response.get(service_name) if isinstance(response, dict) else None
                if state and self.check_master_state(state):
                    if timer.active():
                        timer.cancel()
                    result.callback((state["ip"], int(state["port"])))

            def one_done(_: Any) -> None:
                waiting[0] -= 1
                if waiting[0] == 0:
                    settle()

            from twisted.internet import reactor

            timer = reactor.callLater(self.discovery_timeout, settle)
            for sentinel in self.sentinels:
                d = sentinel.sentinel_masters()
                d.addCallbacks(answered, lambda _: None)
                d.addBoth(one_done)
            return result

    return PromptSentinel


@functools.cache
def _sentinel_factory_class() -> type:
    """A Sentinel master factory whose role check works with ``charset=None``.

    txredisapi's SentinelRedisProtocol compares ``ROLE``'s first element with the *str* "master"; with
    raw bytes replies that is never equal, so it would drop every connection to the master forever.
    """
    import txredisapi

    class BytesSentinelProtocol(txredisapi.SentinelRedisProtocol):
        def _build_command(self, *args: Any, **kwargs: Any) -> bytes:
            return build_command(self._encode_value, args)

        def connectionMade(self) -> Any:
            def check_role(role: list[Any]) -> Any:
                first = role[0].decode() if isinstance(role[0], bytes) else role[0]
                if self.factory.is_master and first != "master":
                    self.transport.loseConnection()
                    return None
                return txredisapi.RedisProtocol.connectionMade(self)

            if self.password is not None:
                self.auth(self.password, self.username)
            return self.role().addCallback(check_role)

    class BytesSentinelFactory(txredisapi.SentinelConnectionFactory):
        protocol = BytesSentinelProtocol
        maxDelay = RECONNECT_MAX_DELAY

    return BytesSentinelFactory


def _endpoint(target: RedisTarget, reactor: Any, timeout: float) -> IStreamClientEndpoint:
    """The client endpoint for a tcp (optionally TLS) or unix target."""
    from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS

    if target.kind == "unix":
        return UNIXClientEndpoint(reactor, target.path, timeout=timeout)
    assert target.host is not None and target.port is not None  # a tcp target has both (redisconf)
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, target.host, target.port, timeout=timeout)
    if target.tls:
        endpoint = wrapClientTLS(_tls_options(target), endpoint)
    return endpoint


@implementer(IStreamClientEndpoint)
class SentinelMasterEndpoint:
    """Connects to whichever server the Sentinels name as master *now*: a reconnecting client
    (the hub's pub/sub ClientService) follows a failover because every connect asks again."""

    def __init__(self, reactor: Any, target: RedisTarget, timeout: float = 1.0) -> None:
        self.reactor, self.target, self.timeout = reactor, target, timeout

    def connect(self, factory: Any) -> Deferred[Any]:
        return ensureDeferred(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

        sentinel = _sentinel_class()(list(self.target.sentinels), connectTimeout=self.timeout)
        try:
            host, port = await sentinel.discover_master(self.target.master)
        finally:
            sentinel.disconnect()
        endpoint: IStreamClientEndpoint = HostnameEndpoint(self.reactor, host, port, timeout=self.timeout)
        if self.target.tls:
            endpoint = wrapClientTLS(_tls_options(self.target), endpoint)
        return await endpoint.connect(factory)


@implementer(IStreamClientEndpoint)
class ClusterNodeEndpoint:
    """Connects to the first cluster seed that answers, starting with the one after the last
    used. (The hub itself connects to every master through the cluster client, see
    restmq/engine/shards.py; this is the one-connection endpoint a cluster URL stands for.)"""

    def __init__(self, reactor: Any, target: RedisTarget, timeout: float = 1.0) -> None:
        self.reactor, self.target, self.timeout = reactor, target, timeout
        self._next = 0

    def connect(self, factory: Any) -> Deferred[Any]:
        return ensureDeferred(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

        seeds = self.target.seeds
        last: Exception | None = None
        for i in range(len(seeds)):
            host, port = seeds[(self._next + i) % len(seeds)]
            endpoint: IStreamClientEndpoint = HostnameEndpoint(self.reactor, host, port, timeout=self.timeout)
            if self.target.tls:
                endpoint = wrapClientTLS(_tls_options(self.target, host), endpoint)
            try:
                connected = await endpoint.connect(factory)
            except Exception as e:
                last = e
                continue
            self._next = (self._next + i) % len(seeds)
            return connected
        self._next += 1
        raise last or ConnectionError("no cluster seed")


def endpoint_for(target: RedisTarget, reactor: Any, timeout: float = 1.0) -> IStreamClientEndpoint:
    """A client endpoint to ``target`` for a single connection (the hub's pub/sub): tcp, TLS,
    unix, the Sentinels' current master, or any live cluster seed."""
    if target.kind == "sentinel":
        return SentinelMasterEndpoint(reactor, target, timeout)
    if target.kind == "cluster":
        return ClusterNodeEndpoint(reactor, target, timeout)
    return _endpoint(target, reactor, timeout)


def _tls_options(target: RedisTarget, host: str | None = None) -> Any:
    """TLS to Redis: the host name (``host``, else the target's) checked against the system's
    CAs, or ``ca_certs``; no check at all only when the URL says ``ssl_cert_reqs=none``."""
    from twisted.internet.ssl import Certificate, CertificateOptions, optionsForClientTLS

    name = host or target.host or ""
    if not target.verify:
        return CertificateOptions()
    if target.ca_certs:
        with open(target.ca_certs, "rb") as f:
            return optionsForClientTLS(name, trustRoot=Certificate.loadPEM(f.read()))
    return optionsForClientTLS(name)


def _make_pool(target: RedisTarget, poolsize: int, reactor: Any, timeout: float) -> Any:
    """A started, lazy txredisapi factory for ``target``; raw bytes in and out.

    Built by hand rather than with ``lazyConnectionPool``/``lazyUnixConnectionPool`` so we choose the
    reactor of the endpoint, TLS verification (hostname checked) and a short reconnect backoff.
    ``startConnecting`` is the factory's documented way of connecting.
    """
    import txredisapi

    common: dict[str, Any] = {
        "charset": None,
        "password": target.password,
        "replyTimeout": None,
        "convertNumbers": False,
        "username": target.username,
    }
    if target.kind == "sentinel":
        sentinel = _sentinel_class()(list(target.sentinels), connectTimeout=timeout, password=None)
        handler = sentinel.master_for(
            target.master,
            factory_class=_sentinel_factory_class(),
            dbid=target.db,
            poolsize=poolsize,
            **common,
        )
        factory = handler._factory
        factory.initialDelay = RECONNECT_INITIAL_DELAY
        # the Sentinel's own connections must go when the pool goes
        original_disconnect = factory.disconnect

        def disconnect() -> Deferred[Any]:
            d = original_disconnect()
            d.addBoth(lambda result: sentinel.disconnect().addBoth(lambda _: result))
            return d

        factory.disconnect = disconnect
        return factory

    handler_class = (
        txredisapi.UnixConnectionHandler if target.kind == "unix" else txredisapi.ConnectionHandler
    )
    uuid = target.path if target.kind == "unix" else f"{target.host}:{target.port}"
    factory = txredisapi.RedisFactory(
        uuid, target.db, poolsize, isLazy=True, handler=handler_class, **common
    )
    factory.protocol = _fast_protocol_class()
    factory.reconnect = True
    factory.initialDelay = RECONNECT_INITIAL_DELAY
    factory.maxDelay = RECONNECT_MAX_DELAY
    factory.startConnecting(_endpoint(target, reactor, timeout))
    return factory


def connect(
    target: RedisTarget,
    *,
    poolsize: int = 10,
    reactor: IReactorTime | None = None,
    timeout: float = 1.0,
    wait: float = 3.0,
) -> Deferred[txredisapi.ConnectionHandler]:
    """Open a pool of ``poolsize`` connections; fire with the handler once all are up.

    If they are not all up within ``wait`` seconds (Redis down, slow, Sentinel without a master)
    it fires anyway, logs a warning, and the pool keeps reconnecting in the background: the service
    can start and answer ``backend_unavailable`` until Redis is back. It errbacks
    (``BackendUnavailable``) only for what retrying cannot fix: a rejected password or database.
    ``timeout`` is the connect timeout of each attempt. Cancelling the Deferred closes the pool.
    """
    reactor = _reactor(reactor)
    if target.kind == "cluster":
        from restmq.backend.cluster import ClusterClient

        client = ClusterClient(target, _make_pool, _endpoint, poolsize=poolsize, reactor=reactor, timeout=timeout)
        return ensureDeferred(client.start(wait)).addCallback(lambda _: client)
    factory = _make_pool(target, poolsize, reactor, timeout)
    handler = factory.handler
    where = target.display()

    def cancel(_: Deferred[Any]) -> None:
        if timer.active():
            timer.cancel()
        factory.disconnect()

    result: Deferred[Any] = Deferred(cancel)

    def all_connected(_: Any) -> None:
        if not result.called:
            timer.cancel()
            log.info("redis connected url={url} poolsize={poolsize}", url=where, poolsize=poolsize)
            result.callback(handler)

    def rejected(failure: Failure) -> None:
        # txredisapi reports auth/SELECT failures as ValueError and stops reconnecting
        message = failure.getErrorMessage()
        log.error("redis refused the connection url={url} error={error}", url=where, error=message)
        if not result.called:
            timer.cancel()
            factory.disconnect()
            result.errback(
                BackendUnavailable(f"redis at {where} refused the connection: {message}")
            )

    def waited_enough() -> None:
        if not result.called:
            log.warn(
                "redis not reachable yet url={url} connected={connected}/{poolsize}; "
                "starting anyway, the pool keeps reconnecting",
                url=where,
                connected=factory.size,
                poolsize=poolsize,
            )
            result.callback(handler)

    timer = reactor.callLater(wait, waited_enough)
    if factory.deferred is not None:
        factory.deferred.addCallbacks(all_connected, rejected)
    else:  # already complete
        all_connected(handler)
    return result


def disconnect(client: txredisapi.ConnectionHandler) -> Deferred[None]:
    """Close every connection of the pool and stop reconnecting; fires when the pool is empty."""
    return client.disconnect()


def _decode(value: Any) -> str:
    """Raw reply -> str, for the few text replies we interpret."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def _config_get(client: Any, name: str) -> str:
    """One ``CONFIG GET`` value, or ``unknown`` where CONFIG is renamed away or denied by ACL."""
    import txredisapi

    try:
        reply = await client.execute_command("CONFIG", "GET", name)
    except txredisapi.ResponseError as e:
        log.info("redis CONFIG GET {name} not allowed: {error}", name=name, error=str(e))
        return "unknown"
    if isinstance(reply, dict):  # RESP3-style map, not expected but harmless
        reply = [x for kv in reply.items() for x in kv]
    if not reply or len(reply) < 2:
        return "unknown"
    return _decode(reply[1])


async def _facts(client: Any) -> dict[str, Any]:
    """Body of :func:`redis_facts`."""
    raw = await client.execute_command("INFO", "server")
    info: dict[str, str] = {}
    for line in _decode(raw).splitlines():
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    flavour = parse_flavour(info.get("server_name", "redis"))
    version = info.get("valkey_version") if flavour == "valkey" else None
    version = version or info.get("redis_version", "unknown")
    facts: dict[str, Any] = {
        "version": version,
        "flavour": flavour,
        "appendonly": await _config_get(client, "appendonly"),
        "appendfsync": await _config_get(client, "appendfsync"),
        "maxmemory_policy": await _config_get(client, "maxmemory-policy"),
        "save": await _config_get(client, "save"),
    }
    warnings: list[str] = []
    try:
        too_old = parse_version(f"v={version}") < MINIMUM_VERSIONS[flavour]
    except Exception:
        too_old = False
    if too_old:
        warnings.append(
            f"{flavour} {version} is older than RestMQ supports (Redis >= 7.0, Valkey >= 8)"
        )
    if facts["appendonly"] == "no" and facts["save"] == "":
        warnings.append(
            "persistence is off (appendonly no, no RDB save points): a restart loses every message"
        )
    elif facts["appendonly"] == "no":
        warnings.append(
            "appendonly is off: messages since the last RDB snapshot are lost on a crash"
        )
    if facts["maxmemory_policy"] not in ("noeviction", "unknown"):
        warnings.append(
            f"maxmemory-policy is {facts['maxmemory_policy']}: Redis may evict queued messages; "
            "use noeviction"
        )
    facts["warnings"] = warnings
    return facts


async def _cluster_facts(client: Any) -> dict[str, Any]:
    """:func:`redis_facts` of every master of a cluster client, and the cluster's own state.

    The top-level facts are the first reachable master's; ``cluster`` has ``state``
    (``cluster_state``), ``require_full_coverage`` (per master) and ``masters`` (each one's
    facts, or ``{"error": …}``); ``warnings`` are every master's, prefixed by its address.
    """
    masters = client.masters()
    found: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    coverage: dict[str, str] = {}
    for address in masters:
        node = client.node(address)
        try:
            found[address] = await _facts(node)
            coverage[address] = await _config_get(node, "cluster-require-full-coverage")
        except Exception as e:
            found[address] = {"error": str(e)}
            warnings.append(f"{address}: not reachable: {e}")
            continue
        warnings += [f"{address}: {w}" for w in found[address]["warnings"]]
    state = "unknown"
    for address in masters:
        try:
            raw = _decode(await client.node(address).execute_command("CLUSTER", "INFO"))
        except Exception:
            continue
        state = next((line.split(":", 1)[1].strip() for line in raw.splitlines() if line.startswith("cluster_state:")), state)
        break
    if state != "ok":
        warnings.append(f"cluster_state is {state}: some slots have no master")
    full = sorted(a for a, v in coverage.items() if v == "yes")
    if full:
        warnings.append(
            "cluster-require-full-coverage is yes on " + ", ".join(full) + ": while one shard fails over, "
            "every queue answers backend_unavailable; set it to no so other shards keep serving"
        )
    unknown = dict.fromkeys(("version", "appendonly", "appendfsync", "maxmemory_policy", "save"), "unknown")
    first = next((f for f in found.values() if "error" not in f), {**unknown, "flavour": "redis"})
    facts = {k: v for k, v in first.items() if k != "warnings"}
    facts["cluster"] = {"state": state, "require_full_coverage": coverage, "masters": found}
    facts["warnings"] = warnings
    return facts


def redis_facts(client: txredisapi.ConnectionHandler) -> Deferred[dict[str, Any]]:
    """What a person deploying RestMQ should know about its server: version, flavour, durability.

    Keys: ``version``, ``flavour`` (``redis``/``valkey``), ``appendonly``, ``appendfsync``,
    ``maxmemory_policy``, ``save`` and ``warnings`` (list of sentences). Values that CONFIG cannot
    give (renamed or denied on managed servers) are ``"unknown"`` rather than an error. On a
    cluster, also ``cluster``: every master's facts (see :func:`_cluster_facts`).
    """
    if getattr(type(client), "cluster", False):
        return ensureDeferred(_cluster_facts(client))
    return ensureDeferred(_facts(client))


__all__ = ["RECONNECT_MAX_DELAY", "ClusterNodeEndpoint", "SentinelMasterEndpoint", "connect", "disconnect", "endpoint_for", "redis_facts"]
