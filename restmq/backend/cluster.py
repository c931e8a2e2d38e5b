"""A Redis Cluster client made of txredisapi pools: one pool per master, commands routed by slot.

txredisapi has no Cluster support, and the engine must not need to know it runs on one: a
:class:`ClusterClient` answers the calls the engine makes on a txredisapi handler
(``execute_command``, ``script_load``, ``sadd``, ``smembers``, ``disconnect``) and sends each
to the master of its key's slot. Single Redis and Sentinel never see this module.

Routing:

- The slot map comes from ``CLUSTER SHARDS`` (``CLUSTER SLOTS`` on servers without it), asked of
  any master we reach, else of the seeds and the replicas we know.
- ``MOVED``: the slot goes to the named node at once, a full refresh follows (debounced: one at a
  time, at most every :data:`REFRESH_GAP` s), and the call is sent again.
- ``ASK``: the call is sent again to the named node, preceded by ``ASKING`` on that connection.
- ``TRYAGAIN``, ``CLUSTERDOWN``, a master with no connection up (it died; its replica is being
  promoted): the call waits a short, growing delay and is routed again, until ``timeout``
  seconds after it started; then a ``txredisapi.ConnectionError`` that says it was never run
  (the engine answers ``backend_unavailable``, ``applied: false``). A retry sends the very same command, so a
  script carries the deadline its caller gave it and refuses to run after it (calls.py): a call
  that timed out takes no effect later, however often it was retried.
- ``NOSCRIPT`` on an ``EVALSHA``: the script is loaded on that master and the call sent again
  (a promoted replica or a new master has an empty script cache).
- A connection lost after the command was sent is *not* retried: it may have run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from restmq.backend.redisconf import RedisTarget
from restmq.errors import BackendUnavailable

log = Logger()

#: (node target, poolsize, reactor, connect timeout) -> a started txredisapi factory.
MakePool = Callable[[RedisTarget, int, Any, float], Any]
#: (node target, reactor, connect timeout) -> a client endpoint to that node (TLS as the URL says).
MakeEndpoint = Callable[[RedisTarget, Any, float], Any]

SLOTS = 16384
#: Shortest time between two slot map refreshes triggered by MOVED or a dead master.
REFRESH_GAP = 0.2
#: The slot map is asked again this often even when nothing seems wrong (a failover elsewhere).
REFRESH_EVERY = 5.0
#: First and longest wait between two tries of a call the cluster cannot serve right now.
RETRY_FIRST, RETRY_MOST = 0.02, 0.25
#: Commands without a key, sent to any master.
KEYLESS = frozenset({
    b"TIME", b"INFO", b"CONFIG", b"PING", b"ROLE", b"CLUSTER", b"DBSIZE", b"FLUSHALL", b"SCRIPT",
    b"WAIT", b"ECHO", b"LASTSAVE",
})
#: Errors after which the cluster is asked again and the call retried.
RETRYABLE = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "LOADING", "READONLY")


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


@lru_cache(maxsize=65536)
def key_slot(key: bytes | str) -> int:
    """The cluster slot of ``key``: the hash tag (``{…}``, first non-empty one) if it has one."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return crc16(data) % SLOTS


def _name(arg: Any) -> bytes:
    return arg.upper() if isinstance(arg, bytes) else str(arg).upper().encode()


def command_slot(args: tuple[Any, ...]) -> int | None:
    """The slot a command must go to, or None when any master will do."""
    name = _name(args[0])
    if name in (b"EVALSHA", b"EVAL", b"EVALSHA_RO", b"EVAL_RO", b"FCALL"):
        return key_slot(args[3]) if int(args[2]) > 0 else None
    if name in KEYLESS or len(args) < 2:
        return None
    return key_slot(args[1])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_shards(reply: list[Any], tls: bool = False) -> tuple[dict[int, str], set[str]]:
    """``CLUSTER SHARDS`` -> ({slot range start: master address} per range as (start, end, addr)
    expanded lazily by the caller), and every node address (replicas included) that is online."""
    ranges: dict[int, str] = {}
    nodes: set[str] = set()
    for shard in reply:
        fields = {_text(shard[i]): shard[i + 1] for i in range(0, len(shard), 2)}
        slots = [int(x) for x in fields.get("slots", [])]
        master = None
        for node in fields.get("nodes", []):
            info = {_text(node[i]): node[i + 1] for i in range(0, len(node), 2)}
            # a node with TLS lists both ports; a TLS client must use "tls-port"
            port = (info.get("tls-port") if tls else None) or info.get("port") or info.get("tls-port") or 0
            address = f"{_text(info.get('ip') or info.get('endpoint'))}:{int(port)}"
            if _text(info.get("health", "online")) != "online":
                continue
            nodes.add(address)
            if _text(info.get("role")) == "master":
                master = address
        if master is not None:
            for i in range(0, len(slots), 2):
                ranges[slots[i] * SLOTS + slots[i + 1]] = master
    return ranges, nodes


def parse_slots(reply: list[Any]) -> tuple[dict[int, str], set[str]]:
    """``CLUSTER SLOTS`` -> the same as :func:`parse_shards`."""
    ranges: dict[int, str] = {}
    nodes: set[str] = set()
    for entry in reply:
        start, end = int(entry[0]), int(entry[1])
        addresses = [f"{_text(n[0])}:{int(n[1])}" for n in entry[2:]]
        ranges[start * SLOTS + end] = addresses[0]
        nodes.update(addresses)
    return ranges, nodes


class ClusterClient:
    """Routes commands to the master of their slot (see the module's docstring)."""

    #: The engine groups multi-queue scripts by slot when this is true (see QueueEngine).
    cluster = True

    def __init__(
        self,
        target: RedisTarget,
        make_pool: MakePool,
        make_endpoint: MakeEndpoint,
        *,
        poolsize: int,
        reactor: Any,
        timeout: float,
    ) -> None:
        self.target, self.poolsize, self.reactor, self.timeout = target, poolsize, reactor, timeout
        #: Opens a lazy, reconnecting txredisapi pool to one node (connect.py's, injected: no circle).
        self.make_pool, self.make_endpoint = make_pool, make_endpoint
        self.seeds = [f"{h}:{p}" for h, p in target.seeds]
        #: Master address per slot (None: no master known).
        self.slots: list[str | None] = [None] * SLOTS
        #: Pool (txredisapi factory) per master address.
        self.pools: dict[str, Any] = {}
        #: Every node seen online in the last map, masters and replicas: where to ask next time.
        self.known: set[str] = set(self.seeds)
        #: Script text by SHA, to load on masters that do not have it (new, promoted).
        self.scripts: dict[str, bytes] = {}
        self._refreshing: defer.Deferred[None] | None = None
        self._refreshed_at = 0.0
        self._loop = task.LoopingCall(self._periodic)
        self._loop.clock = reactor
        self._closed = False
        #: The master a keyless command last failed on (skipped for the next ones, until it is
        #: gone from the map or another fails).
        self._avoid: str | None = None
        #: Redirections and retries seen, by kind (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, …).
        self.redirects: dict[str, int] = {}

    # -- set-up -------------------------------------------------------------------------------

    async def start(self, wait: float) -> None:
        """Read the slot map and open a pool per master; waits at most ``wait`` s for them."""
        try:
            await self.refresh()
        except BackendUnavailable as e:
            log.warn("redis cluster map not read yet: {error}; retrying in the background", error=e.message)
        self._loop.start(REFRESH_EVERY, now=False)
        pending = [p.deferred for p in self.pools.values() if p.deferred is not None]
        if pending:
            waiting = defer.DeferredList(pending, consumeErrors=True)
            waiting.addTimeout(wait, self.reactor)
            try:
                await waiting
            except defer.TimeoutError:
                log.warn("redis cluster: not every master is reachable yet; starting anyway")

    def _periodic(self) -> None:
        d = self.refresh(force=True)
        d.addErrback(lambda f: log.debug("cluster map refresh failed: {e}", e=f.value))

    def _pool(self, address: str) -> Any:
        pool = self.pools.get(address)
        if pool is None:
            pool = self.pools[address] = self.make_pool(self._node(address), self.poolsize, self.reactor, self.timeout)
            if self.scripts and pool.deferred is not None:
                pool.deferred.addCallback(lambda _: self._load_known(address))
        return pool

    def _node(self, address: str) -> RedisTarget:
        """The target of one node: its address, the URL's credentials and TLS settings."""
        host, _, port = address.rpartition(":")
        return RedisTarget(
            "tcp", host=host, port=int(port), db=0, password=self.target.password,
            username=self.target.username, tls=self.target.tls, ca_certs=self.target.ca_certs,
            verify=self.target.verify,
        )

    def node_endpoint(self, address: str) -> Any:
        """A client endpoint to one node (the hub's pub/sub connection to each master)."""
        return self.make_endpoint(self._node(address), self.reactor, self.timeout)

    def _load_known(self, address: str) -> None:
        """A master we just connected to gets every script we loaded elsewhere."""
        for text in list(self.scripts.values()):
            self._send_to(address, (b"SCRIPT", b"LOAD", text)).addErrback(lambda _: None)

    # -- the slot map -------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> defer.Deferred[None]:
        """Read the slot map again (one refresh at a time; skipped if one ended very recently)."""
        if self._refreshing is not None:
            return self._refreshing
        if not force and time.monotonic() - self._refreshed_at < REFRESH_GAP:
            return defer.succeed(None)
        self._refreshing = d = defer.ensureDeferred(self._refresh())

        def done(result: Any) -> Any:
            self._refreshing = None
            self._refreshed_at = time.monotonic()
            return result

        d.addBoth(done)
        return d

    async def _refresh(self) -> None:
        connected = [a for a in self.pools if self._connection(a) is not None]
        others = [a for a in sorted(self.known) if a not in connected]
        for address in connected + others:
            try:
                ranges, nodes = await self._read_map(address)
            except Exception as e:
                log.debug("cluster map from {node} failed: {error}", node=address, error=e)
                continue
            if not ranges:
                continue
            slots: list[str | None] = [None] * SLOTS
            for span, master in ranges.items():
                start, end = divmod(span, SLOTS)
                slots[start:end + 1] = [master] * (end - start + 1)
            self.slots = slots
            self.known = nodes | set(self.seeds)
            masters = set(ranges.values())
            for master in masters:
                self._pool(master)
            for gone in set(self.pools) - masters:
                pool = self.pools.pop(gone)
                pool.disconnect()
            return
        raise BackendUnavailable("no redis cluster node answered CLUSTER SHARDS/SLOTS", applied=False)

    async def _read_map(self, address: str) -> tuple[dict[int, str], set[str]]:
        connection = self._connection(address)
        if connection is not None:
            return await self._map_from(connection.execute_command)
        pool = self.make_pool(self._node(address), 1, self.reactor, self.timeout)
        try:
            ready = pool.deferred
            if ready is not None:
                ready.addTimeout(self.timeout, self.reactor)
                await ready
            answer = pool.handler.execute_command
            return await self._map_from(answer)
        finally:
            pool.disconnect()

    async def _map_from(self, execute: Callable[..., defer.Deferred[Any]]) -> tuple[dict[int, str], set[str]]:
        import txredisapi

        try:
            reply = await execute(b"CLUSTER", b"SHARDS").addTimeout(self.timeout, self.reactor)
            return parse_shards(reply, self.target.tls)
        except txredisapi.ResponseError:
            reply = await execute(b"CLUSTER", b"SLOTS").addTimeout(self.timeout, self.reactor)
            return parse_slots(reply)

    def masters(self) -> list[str]:
        """The addresses of the masters in the current map, sorted."""
        return sorted({m for m in self.slots if m is not None})

    def slot_of(self, key: bytes | str) -> int:
        """The slot of ``key`` (for callers that group work by slot)."""
        return key_slot(key)

    # -- sending ------------------------------------------------------------------------------

    def _connection(self, address: str) -> Any:
        """A connected connection of ``address``'s pool, round robin; None when none is up."""
        pool = self.pools.get(address)
        if pool is None or not pool.pool:
            return None
        connections = pool.pool
        start = random.randrange(len(connections))
        for i in range(len(connections)):
            connection = connections[(start + i) % len(connections)]
            if connection.connected:
                return connection
        return None

    def _address(self, slot: int | None) -> str | None:
        if slot is None:
            masters = [a for a in self.pools if a != self._avoid and self._connection(a) is not None]
            return random.choice(masters) if masters else (next(iter(self.pools), None))
        return self.slots[slot]

    def execute_command(self, *args: Any) -> defer.Deferred[Any]:
        """Send one command to the master of its slot, following the cluster's redirections."""
        return self.on_connection(args, lambda connection: connection.execute_command(*args))

    def on_connection(
        self, args: tuple[Any, ...], send: Callable[[Any], defer.Deferred[Any]]
    ) -> defer.Deferred[Any]:
        """``send(connection)`` on a connection to the master of ``args``'s slot (``args`` is the
        command it sends first: what is routed, and what a NOSCRIPT reloads), retried as the
        module's docstring says. The WAIT of a replicated write goes through here, so that it
        follows its write on the same connection."""
        slot = command_slot(args)
        address = self._address(slot)
        connection = self._connection(address) if address else None
        if connection is None:
            return defer.ensureDeferred(self._retry(args, send, slot, None, time.monotonic(), address))
        d = send(connection)
        started = time.monotonic()
        return d.addErrback(lambda f: defer.ensureDeferred(self._retry(args, send, slot, f, started, address)))

    def _send_to(self, address: str, args: tuple[Any, ...]) -> defer.Deferred[Any]:
        """One command to one node, no routing; waits at most ``timeout`` for a connection (a
        cancelled wait withdraws the command: it is never sent later)."""
        connection = self._connection(address)
        if connection is None:
            return self._pool(address).handler.execute_command(*args).addTimeout(self.timeout, self.reactor)
        return connection.execute_command(*args)

    async def _retry(
        self,
        args: tuple[Any, ...],
        send: Callable[[Any], defer.Deferred[Any]],
        slot: int | None,
        failure: Any,
        started: float,
        target: str | None,
    ) -> Any:
        import txredisapi

        delay = RETRY_FIRST
        asking: str | None = None
        reason = "no master is connected"
        while True:
            if failure is not None:
                error = failure.value
                if slot is None and isinstance(error, txredisapi.ConnectionError) and len(self.pools) > 1:
                    # a keyless read (TIME, INFO, CONFIG GET) met a master that just died: any
                    # other master answers it as well
                    self._count("KEYLESS_RETRY")
                    reason = str(error)
                    failure = None
                    self._avoid = target
                    await self._pause(delay)
                    delay = min(delay * 2, RETRY_MOST)
                    self.refresh().addErrback(lambda _: None)
                    if time.monotonic() - started > self.timeout:
                        error.args = (f"{reason} (and no other master answered within {self.timeout:g} s)",)
                        raise error
                    target = self._address(None)
                    connection = self._connection(target) if target else None
                    if connection is None:
                        continue
                    try:
                        return await send(connection)
                    except Exception:
                        failure = _current_failure()
                        continue
                if not isinstance(error, txredisapi.ResponseError):
                    failure.raiseException()
                text = str(error)
                kind = text.split(" ", 1)[0]
                if kind == "NOSCRIPT" and _name(args[0]) == b"EVALSHA" and isinstance(target, str):
                    self._count(kind)
                    await self._reload(target, args[1])
                elif kind not in RETRYABLE:
                    failure.raiseException()
                else:
                    self._count(kind)
                    reason = text
                    if kind in ("MOVED", "ASK"):
                        parts = text.split()
                        address = parts[2]
                        if kind == "MOVED":
                            if slot is not None:
                                self.slots[int(parts[1])] = address
                            self._pool(address)
                            self.refresh().addErrback(lambda _: None)
                            asking = None
                        else:
                            asking = address
                            self._pool(address)
                    else:
                        await self._pause(delay)
                        delay = min(delay * 2, RETRY_MOST)
                        self.refresh().addErrback(lambda _: None)
            if time.monotonic() - started > self.timeout:
                # a ConnectionError that was never sent: the engine answers backend_unavailable
                # with applied=False (calls.redis_failed), and a late one is not logged as a bug
                raise txredisapi.ConnectionError(
                    f"the redis cluster could not serve the call within {self.timeout:g} s ({reason})"
                )
            target = asking or self._address(slot)
            connection = self._connection(target) if target else None
            if connection is None:
                # the master is gone (a failover is under way) or not connected yet
                reason = f"no connection to the master of slot {slot} ({target})"
                self._count("NOCONNECTION")
                failure = None
                await self._pause(delay)
                delay = min(delay * 2, RETRY_MOST)
                try:
                    await self.refresh()
                except BackendUnavailable:
                    pass
                continue
            if asking is not None:
                connection.execute_command(b"ASKING").addErrback(lambda _: None)
                asking = None
            try:
                return await send(connection)
            except txredisapi.ResponseError:
                failure = _current_failure()

    async def _reload(self, address: str, sha: Any) -> None:
        text = self.scripts.get(_text(sha))
        if text is not None:
            log.info("redis cluster node {node} forgot the lua scripts; loading them", node=address)
            await self._send_to(address, (b"SCRIPT", b"LOAD", text))

    def _count(self, kind: str) -> None:
        self.redirects[kind] = self.redirects.get(kind, 0) + 1

    def _pause(self, seconds: float) -> defer.Deferred[None]:
        return task.deferLater(self.reactor, seconds, lambda: None)

    # -- the handler methods the engine uses --------------------------------------------------

    async def _script_load(self, text: Any) -> Any:
        data = text.encode() if isinstance(text, str) else bytes(text)
        masters = self.masters()
        if not masters:
            await self.refresh()
            masters = self.masters()
        replies = await defer.gatherResults(
            [self._send_to(m, (b"SCRIPT", b"LOAD", data)) for m in masters], consumeErrors=True
        )
        sha = replies[0]
        self.scripts[_text(sha)] = data
        return sha

    def script_load(self, text: Any) -> defer.Deferred[Any]:
        """Load a script on every master; answers its SHA."""
        return defer.ensureDeferred(self._script_load(text))

    def sadd(self, key: Any, *members: Any) -> defer.Deferred[Any]:
        return self.execute_command(b"SADD", key, *members)

    def smembers(self, key: Any) -> defer.Deferred[Any]:
        return self.execute_command(b"SMEMBERS", key)

    def node(self, address: str) -> NodeClient:
        """A client for one node only (its INFO and CONFIG, for /health), bounded by ``timeout``."""
        return NodeClient(self, address)

    def disconnect(self) -> defer.Deferred[Any]:
        """Close every pool and stop reading the map."""
        self._closed = True
        if self._loop.running:
            self._loop.stop()
        pools, self.pools = list(self.pools.values()), {}
        return defer.DeferredList([p.disconnect() for p in pools], consumeErrors=True)


class NodeClient:
    """``execute_command`` on one node of a cluster, no routing (what facts and health ask)."""

    def __init__(self, client: ClusterClient, address: str) -> None:
        self.client, self.address = client, address

    def execute_command(self, *args: Any) -> defer.Deferred[Any]:
        return self.client._send_to(self.address, args).addTimeout(self.client.timeout, self.client.reactor)


def _current_failure() -> Any:
    from twisted.python.failure import Failure

    return Failure()
