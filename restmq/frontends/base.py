"""What a front end declares to be part of the server: its name, its options, how to build it.

Each front end module ends with one ``FRONTEND = FrontEnd(...)``; :mod:`restmq.frontends.registry`
names the modules. ``restmq serve``, ``twistd restmq``, the tac's ``RESTMQ_*`` variables and the
service tree all loop over the registry, so a front end's options are written once, in its module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IProtocolFactory

from restmq.limits import Limits
from restmq.options import Option
from restmq.ports import Dispatcher


@dataclass(frozen=True)
class Context:
    """What a front end is built from: the one dispatcher, the reactor, the connection limits every
    listener shares, and the option values (``options``: every option by attribute name, core and
    front ends'; the ones every front end uses have typed properties)."""

    dispatcher: Dispatcher
    reactor: Any
    limits: Limits
    options: Mapping[str, Any]

    @property
    def max_message_size(self) -> int:
        return int(self.options["max_message_size"])

    @property
    def idle_timeout(self) -> float:
        return float(self.options["idle_timeout"])

    @property
    def header_timeout(self) -> float:
        return float(self.options["header_timeout"])

    @property
    def body_timeout(self) -> float:
        return float(self.options["body_timeout"])

    @property
    def secured(self) -> bool:
        """Whether a tokens file is in force (every call needs a token)."""
        return bool(self.options["auth_file"])

    @property
    def auth_timeout(self) -> float:
        """Seconds a TCP connection has to authenticate: ``--header-timeout`` with a tokens file
        (a connection that says nothing is closed), else no deadline."""
        return self.header_timeout if self.secured else 0.0


@dataclass(frozen=True)
class FrontEnd:
    """One front end. ``options[0]`` is its endpoint option, named like the front end (``--resp``);
    the listener starts when that option has a value. ``build`` returns the protocol factory that
    the service puts behind the connection limits on that endpoint. ``speaks_http`` is False for
    the listeners that must refuse a browser's HTTP request (see nothttp.py). ``authenticates``:
    whether its clients can present a token (the syslog receiver cannot: a public one needs
    ``--insecure``); ``acl``: whether the original ACL file (``--acl``, HTTP's) protects it."""

    name: str
    options: tuple[Option, ...]
    build: Callable[[Context], IProtocolFactory]
    speaks_http: bool = False
    authenticates: bool = True
    acl: bool = False

    @property
    def endpoint(self) -> Option:
        return self.options[0]
