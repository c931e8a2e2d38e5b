"""Connection limits for every listener: at most N connections in all and M per client address.

Each listener's factory is wrapped by :class:`LimitedFactory`. A connection over a limit is accepted
only to be told why and closed: the wrapped factory may say how its protocol words a refusal
(``refusal(message) -> bytes``: an HTTP 503, a JSON error line, ``-ERR …``); without it the
connection is just closed. Refusals are counted by limit name in :attr:`Limits.rejected` (metrics
show them). The wrapper is a transport to the protocol it wraps, forwards half-closes (the line
protocol answers ``printf … | nc -N``), and survives a WebSocket takeover (autobahn swaps the
wrapped protocol): the count is released when the socket closes, whoever speaks on it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IProtocolNegotiationFactory
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import alsoProvides

log = Logger()


def address_of(addr: IAddress | None) -> str:
    """The client address a per-address limit counts (``local`` for unix sockets)."""
    host = getattr(addr, "host", None)
    return host if isinstance(host, str) else "local"


@dataclass
class Limits:
    """The process's connection counts, shared by all its listeners; 0 means no limit."""

    max_connections: int = 10_000
    max_per_address: int = 1_000
    total: int = 0
    by_address: Counter[str] = field(default_factory=Counter)
    #: Refusals by limit name (``connections``, ``connections_per_address``, and the others that
    #: front ends count here: ``header_timeout``, ``body_timeout``, ``idle_timeout``).
    rejected: Counter[str] = field(default_factory=Counter)

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; the name of the limit it breaks, else None."""
        if self.max_connections and self.total >= self.max_connections:
            return "connections"
        if self.max_per_address and self.by_address[address] >= self.max_per_address:
            return "connections_per_address"
        self.total += 1
        self.by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        self.total -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]


MESSAGES = {
    "connections": "too many connections to this server",
    "connections_per_address": "too many connections from this address",
}


class _Refuse(Protocol):
    """Says why the connection is refused (if the front end knows how to), then closes it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def connectionMade(self) -> None:
        assert self.transport is not None  # makeConnection sets it before calling this
        if self.data:
            self.transport.write(self.data)
        self.transport.loseConnection()


class LimitedConnection(ProtocolWrapper):
    """One admitted connection: releases its count when the socket closes."""

    address = "local"

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            alsoProvides(self, IHalfCloseableProtocol)

    def readConnectionLost(self) -> None:
        handler = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if handler is not None:
            handler.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        handler = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if handler is not None:
            handler.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.limits.release(self.address)
        super().connectionLost(reason)


class LimitedFactory(WrappingFactory):
    """Wraps a listener's factory with the process's :class:`Limits`."""

    protocol: Callable[..., LimitedConnection] = LimitedConnection
    noisy = False

    def __init__(self, wrapped: Any, limits: Limits) -> None:
        super().__init__(wrapped)
        self.limits = limits
        if IProtocolNegotiationFactory.providedBy(wrapped):
            # TLS asks the factory it wraps (this one) which protocols to offer over ALPN.
            alsoProvides(self, IProtocolNegotiationFactory)

    def acceptableProtocols(self) -> list[bytes]:
        return list(self.wrappedFactory.acceptableProtocols())

    def buildProtocol(self, addr: IAddress | None) -> Any:  # a LimitedConnection, a refusal, or None
        address = address_of(addr)
        broken = self.limits.admit(address)
        if broken is not None:
            self.limits.rejected[broken] += 1
            log.warn("connection refused peer={peer}: {why}", peer=address, why=MESSAGES[broken])
            refusal = getattr(self.wrappedFactory, "refusal", None)
            return _Refuse(refusal(MESSAGES[broken]) if refusal is not None else b"")
        proto = super().buildProtocol(addr)
        if proto is None:
            self.limits.release(address)
            return None
        cast(LimitedConnection, proto).address = address  # built by self.protocol
        return proto

    # WrappingFactory keeps every live protocol in a dict; the count is all that is needed here.
    def registerProtocol(self, p: Any) -> None:
        pass

    def unregisterProtocol(self, p: Any) -> None:
        pass
