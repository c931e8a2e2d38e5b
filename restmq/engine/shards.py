"""The hub's pub/sub connections: sharded channels (SSUBSCRIBE), one connection per master.

Scripts announce events with ``SPUBLISH`` on the queue's channel (``rmq:{q}:ev``, in the queue's
slot). On a cluster that message stays on the shard that owns the slot instead of crossing the
cluster bus to every node, and only a connection to that shard's master hears it; on one Redis
(or a Sentinel master) there is one shard, and the same code runs with one connection.

:class:`ShardLinks` keeps a connection to every master (reconnecting), subscribes each wanted
channel on the master of its slot, and keeps it there: when a slot moves (the server pushes
``sunsubscribe``, or an ``SSUBSCRIBE`` answers ``MOVED``) or a master fails over, the slot map is
read again and the channel subscribed where it now lives; the hub is then told that events may
have been missed (:meth:`Hub._missed`), and looks at the queue again.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()


class Listener(Protocol):
    """What the links tell the hub: a message on a channel, and a channel that may have missed some."""

    def _event(self, channel: bytes, message: bytes) -> None: ...

    def _missed(self, channel: bytes) -> None: ...

#: How often every wanted channel is checked against the slot map (a failover, a resharding).
RECONCILE_EVERY = 1.0
#: The one shard of a single Redis or a Sentinel master.
SINGLE = ""


def _text(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class ShardProtocol(txredisapi.RedisProtocol):
    """One pub/sub connection to one master: SSUBSCRIBE and SUNSUBSCRIBE one channel per
    command, ``smessage`` pushes to the hub, ``sunsubscribe`` pushes (slot moved) to the links."""

    links: ShardLinks
    address: str

    def connectionMade(self) -> Any:
        self._pending: deque[tuple[bytes, bytes]] = deque()
        d = super().connectionMade()
        self.whenConnected().addCallback(lambda _: self.links._up(self))
        return d

    def connectionLost(self, why: Any) -> None:
        self.links._down(self)
        super().connectionLost(why)

    def _send(self, verb: bytes, channel: bytes) -> None:
        self._pending.append((verb, channel))
        assert self.transport is not None
        self.transport.write(b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(verb), verb, len(channel), channel))

    def ssubscribe(self, channel: bytes) -> None:
        self._send(b"SSUBSCRIBE", channel)

    def sunsubscribe(self, channel: bytes) -> None:
        self._send(b"SUNSUBSCRIBE", channel)

    def replyReceived(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3:
            kind = _text(reply[0]).lower()
            if kind == b"smessage":
                self.links.hub._event(_text(reply[1]), _text(reply[2]))
                return
            if kind == b"sunsubscribe" and (
                not self._pending or self._pending[0] != (b"SUNSUBSCRIBE", _text(reply[1]))
            ):
                self.links._dropped(self, _text(reply[1]))  # pushed by the server: the slot moved
                return
        if not self._pending:
            super().replyReceived(reply)  # AUTH at connect
            return
        verb, channel = self._pending.popleft()
        if verb == b"SSUBSCRIBE":
            if isinstance(reply, Exception):
                self.links._refused(self, channel, str(reply))
            else:
                self.links._confirmed(self, channel)


class _ShardFactory(protocol.Factory):
    """Builds the pub/sub protocol for one master, raw bytes, the server's credentials."""

    noisy = False
    isLazy = True

    def __init__(self, links: ShardLinks, address: str) -> None:
        self.links, self.address = links, address

    def buildProtocol(self, addr: Any) -> ShardProtocol:
        target = self.links.target
        p = ShardProtocol(None, password=target.password, username=target.username, convertNumbers=False)
        p.factory = self
        p.links, p.address = self.links, self.address
        return p

    def stopTrying(self) -> None:
        """txredisapi calls this when AUTH fails; the ClientService keeps retrying regardless."""

    def connectionError(self, why: str) -> None:
        log.error("redis pub/sub connection to {node} failed: {why}", node=self.address or "redis", why=why)


class ShardLinks:
    """The hub's view of pub/sub: ``subscribe``/``unsubscribe`` channels wherever they live.

    ``router`` is the cluster client (its slot map and node endpoints), or None for one server
    reached through ``target.endpoint``.
    """

    connected = True  # the hub may always ask: channels wait here for their master

    def __init__(self, hub: Listener, target: Any, router: Any, clock: IReactorTime) -> None:
        """``target`` is the hub's SubscriberEndpoint (endpoint, password, username)."""
        self.hub, self.target, self.router, self.clock = hub, target, router, clock
        self.services: dict[str, ClientService] = {}
        self.protocols: dict[str, ShardProtocol] = {}
        self.wanted: set[bytes] = set()
        #: Channels subscribed (confirmed) and the connection they are on.
        self.where: dict[bytes, ShardProtocol] = {}
        #: Channels sent (not yet confirmed) and the connection they went on.
        self.sent: dict[bytes, ShardProtocol] = {}
        #: Channels subscribed at least once: a new subscription of one may have missed events.
        self.ever: set[bytes] = set()
        self.waiting: dict[bytes, list[defer.Deferred[None]]] = {}
        self._loop = task.LoopingCall(self.reconcile)
        self._loop.clock = clock
        self._stopping = False

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.reconcile()
        if self.router is not None:  # one server: channels never move, a reconnect re-places them
            self._loop.start(RECONCILE_EVERY, now=False)

    async def stop(self) -> None:
        self._stopping = True
        if self._loop.running:
            self._loop.stop()
        services, self.services = list(self.services.values()), {}
        self.waiting = {}  # never fired: nobody waits for a stopped hub
        for service in services:
            await service.stopService()

    def _service(self, address: str) -> None:
        if address in self.services or self._stopping:
            return
        endpoint = self.target.endpoint if self.router is None else self.router.node_endpoint(address)
        service = ClientService(
            endpoint,
            _ShardFactory(self, address),
            retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=1.0, factor=1.5),
            clock=self.clock,
        )
        self.services[address] = service
        service.startService()

    def _masters(self) -> list[str]:
        return [SINGLE] if self.router is None else self.router.masters()

    def _address(self, channel: bytes) -> str | None:
        if self.router is None:
            return SINGLE
        return self.router.slots[self.router.slot_of(channel)]

    # -- what the hub calls -------------------------------------------------------------------

    def subscribe(self, channels: list[bytes]) -> defer.Deferred[Any]:
        """Fires once every channel is subscribed on its master (which may take a reconnect)."""
        waits = []
        for channel in channels:
            self.wanted.add(channel)
            if channel in self.where:
                continue
            d: defer.Deferred[None] = defer.Deferred()
            self.waiting.setdefault(channel, []).append(d)
            waits.append(d)
            self._place(channel)
        return defer.gatherResults(waits, consumeErrors=True)

    def unsubscribe(self, channels: list[bytes]) -> defer.Deferred[None]:
        for channel in channels:
            self.wanted.discard(channel)
            self.ever.discard(channel)
            proto = self.where.pop(channel, None)
            if proto is not None and proto.connected:
                proto.sunsubscribe(channel)
        return defer.succeed(None)

    # -- keeping channels where their slots are -------------------------------------------------

    def _place(self, channel: bytes) -> None:
        if channel in self.where or channel in self.sent or channel not in self.wanted:
            return
        address = self._address(channel)
        proto = self.protocols.get(address) if address is not None else None
        if proto is None or not proto.connected:
            if address is not None:
                self._service(address)
            return  # subscribed when that master's connection is up (or the map knows it)
        self.sent[channel] = proto
        proto.ssubscribe(channel)

    def reconcile(self) -> None:
        """Connections to the masters of the map (and no others), every wanted channel on the
        master of its slot now."""
        if self._stopping:
            return
        masters = set(self._masters())
        for address in masters:
            self._service(address)
        for address in set(self.services) - masters:
            service = self.services.pop(address)
            service.stopService()
        for channel in list(self.wanted):
            proto = self.where.get(channel)
            if proto is not None and (proto.address != self._address(channel) or not proto.connected):
                del self.where[channel]
                if proto.connected:
                    proto.sunsubscribe(channel)
            self._place(channel)

    def _refresh_then_reconcile(self) -> None:
        if self.router is None:
            return
        d = self.router.refresh()
        d.addBoth(lambda _: self.reconcile())

    def _up(self, proto: ShardProtocol) -> None:
        if self._stopping:
            proto.transport.loseConnection()
            return
        log.info("redis pub/sub connected node={node}", node=proto.address or "redis")
        self.protocols[proto.address] = proto
        for channel in list(self.wanted):
            if self._address(channel) == proto.address:
                self._place(channel)

    def _down(self, proto: ShardProtocol) -> None:
        if self.protocols.get(proto.address) is proto:
            del self.protocols[proto.address]
            if not self._stopping:
                log.warn("redis pub/sub connection lost node={node}; reconnecting", node=proto.address or "redis")
        for table in (self.where, self.sent):
            for channel in [c for c, p in table.items() if p is proto]:
                del table[channel]
        if not self._stopping:
            self._refresh_then_reconcile()

    def _confirmed(self, proto: ShardProtocol, channel: bytes) -> None:
        if self.sent.get(channel) is proto:
            del self.sent[channel]
        if channel not in self.wanted:
            proto.sunsubscribe(channel)
            return
        self.where[channel] = proto
        for d in self.waiting.pop(channel, []):
            if not d.called:
                d.callback(None)
        if channel in self.ever:
            self.hub._missed(channel)  # subscribed again: what was published meanwhile is unheard
        self.ever.add(channel)

    def _refused(self, proto: ShardProtocol, channel: bytes, error: str) -> None:
        if self.sent.get(channel) is proto:
            del self.sent[channel]
        log.info("redis refused SSUBSCRIBE {channel}: {error}; asking the cluster again",
                 channel=channel, error=error)
        self._refresh_then_reconcile()

    def _dropped(self, proto: ShardProtocol, channel: bytes) -> None:
        if self.where.get(channel) is proto:
            del self.where[channel]
        if channel in self.wanted:
            self._refresh_then_reconcile()
