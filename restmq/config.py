"""The server's configuration: one frozen value built by tap.py from options or RESTMQ_* variables.

Each core option is declared once, as a field of :class:`Config`; front ends declare theirs in
their own module (see restmq/frontends/base.py)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from restmq.commands import POLICIES
from restmq.options import Coerce, Option, choice, count, positive, seconds, url_prefixes, workers


def option(default: Any, help: str, coerce: Coerce | None = None, *, flag: bool = False) -> Any:
    """A Config field that is also a command-line option (``--max-message-size`` for
    ``max_message_size``): its default and help are written here, once."""
    return field(default=default, metadata={"help": help, "coerce": coerce, "flag": flag})


#: The largest --max-message-size accepted.
MAX_MESSAGE_CEILING = 64 << 20


@dataclass(frozen=True, init=False)
class Config:
    """Everything the service tree needs; defaults are the documented ones.

    The fields are the core options. Each front end's options (its endpoint ``--http``,
    ``--line`` …, and its own, such as ``--cors``) are declared by the front end
    (:mod:`restmq.frontends.registry`) and kept in :attr:`frontend`; they read as attributes too
    (``config.http``) and are given as keywords like the rest (``Config(http=…)``).
    """

    redis: str | None = option(
        None, "Redis URL: redis://host:port/db, rediss://…, unix:///path, "
        "redis+sentinel://host:port/master, redis+cluster://host:port[,host:port…]. "
        "Default: a private embedded server."
    )
    redis_server: str | None = option(None, "redis-server/valkey-server binary for the embedded server.")
    data: str = option("./restmq-data", "Directory of the embedded server's files.")
    durability: str = option(
        "everysec", "Embedded AOF fsync: everysec or always.", choice("durability", ("everysec", "always"))
    )
    redis_pool: int = option(10, "Redis connections in the pool (all workers together).", positive(int, "redis-pool", 256))
    redis_timeout: float = option(
        1.0, "Seconds before an unanswered Redis call fails with backend_unavailable.",
        positive(float, "redis-timeout", 60),
    )
    max_message_size: int = option(
        1 << 20, "Largest message/line in bytes.", positive(int, "max-message-size", MAX_MESSAGE_CEILING)
    )
    default_policy: str = option(
        "broadcast", "Stream policy of queues that set none.", choice("default-policy", POLICIES)
    )
    replay: int = option(
        1000, "Broadcast messages kept per queue for subscribers that reconnect (0: none).",
        count("replay", 1_000_000),
    )
    log_format: str = option(
        "text", "text, or json (one object per line, on standard output).", choice("log-format", ("text", "json"))
    )
    auth_file: str | None = option(None, "Tokens file: TOKEN RIGHTS PATTERN… per line (reloaded on SIGHUP).")
    acl: str | None = option(
        None, "The original RestMQ's ACL file (INI: address allow/deny lists and Basic "
        "users per category, for HTTP; reloaded when it changes)."
    )
    max_connections: int = option(
        10_000, "Most connections at once, all listeners and workers together (0: no limit).", count("max-connections", 10**7)
    )
    max_connections_per_address: int = option(
        1_000, "Most connections at once from one client address (0: no limit).",
        count("max-connections-per-address", 10**7),
    )
    idle_timeout: float = option(
        300.0, "Seconds an HTTP or line connection may wait between requests (streams never idle; 0: forever).",
        seconds("idle-timeout"),
    )
    header_timeout: float = option(
        10.0, "Seconds an HTTP request's headers may take to arrive, from the accept for a connection's first "
        "request; with --auth-file also the seconds a line or RESP connection has to authenticate "
        "(0: forever).", seconds("header-timeout"),
    )
    body_timeout: float = option(
        60.0, "Seconds an HTTP request's body may take to arrive after its headers (0: forever).",
        seconds("body-timeout"),
    )
    max_subscribers: int = option(
        50_000, "Most stream subscribers of one queue in this server (0: no limit).", count("max-subscribers", 10**7)
    )
    max_queues: int = option(
        100_000, "Most queues; an add that would create one more is refused (0: no limit).",
        count("max-queues", 10**9),
    )
    replicas: int = option(
        0, "Answer writes only once this many Redis replicas have them (WAIT); 0: when the master has.",
        count("replicas", 100),
    )
    workers: int = option(
        1, "Worker processes sharing the listeners (auto: one per usable core). With more than one, "
        "a parent binds, runs the embedded Redis and restarts workers; limits stay totals "
        "(docs/operations.md).", workers("workers", 1024),
    )
    reuse_port: bool = option(
        False, "With --workers: give each worker its own SO_REUSEPORT socket on TCP listeners.", flag=True
    )
    push_allow: tuple[str, ...] = option(
        (), "URL prefixes push subscriptions may deliver to, comma-separated (e.g. "
        "http://127.0.0.1:,https://hooks.example.org/); empty: push is off. Checked when a "
        "subscription is set and again at each delivery.", url_prefixes,
    )
    insecure: bool = option(
        False, "Allow listening on a non-loopback address without authentication.", flag=True
    )
    #: The front ends' options by attribute name (``http``, ``line``, ``cors`` …).
    frontend: Mapping[str, Any] = field(default_factory=dict, metadata={"internal": True})

    def __init__(self, **values: Any) -> None:
        from restmq.frontends.registry import frontend_options

        own = {o.attr: o.default for o in frontend_options()}
        own.update(values.pop("frontend", {}))
        for f in fields(self):
            if f.name != "frontend":
                object.__setattr__(self, f.name, values.pop(f.name, f.default))
        unknown = sorted(set(values) - set(own))
        if unknown:
            raise TypeError(f"Config has no option {', '.join(unknown)}")
        own.update(values)
        object.__setattr__(self, "frontend", own)

    def __getattr__(self, name: str) -> Any:
        """A front end's option: ``config.http``, ``config.cors``."""
        frontend = self.__dict__.get("frontend", {})
        if name in frontend:
            return frontend[name]
        raise AttributeError(f"Config has no option {name!r}")

    @property
    def endpoints(self) -> dict[str, str]:
        """The listeners to start, by front end name, in the registry's order."""
        from restmq.frontends.registry import frontends

        return {fe.name: self.frontend[fe.name] for fe in frontends() if self.frontend.get(fe.name)}


def core_options() -> tuple[Option, ...]:
    """The core options, from :class:`Config`'s fields."""
    return tuple(
        Option(f.name.replace("_", "-"), f.default, f.metadata["help"], f.metadata["coerce"], f.metadata["flag"])
        for f in fields(Config)
        if not f.metadata.get("internal")
    )


def endpoint_interface(description: str) -> str | None:
    """The address a server endpoint string binds (``None`` for all addresses; ``unix:`` → "unix")."""
    kind, _, rest = description.partition(":")
    if kind == "unix":
        return "unix"
    for part in re.split(r"(?<!\\):", rest):
        if part.startswith("interface="):
            return part[len("interface="):].replace("\\:", ":")
    return None


def is_loopback(description: str) -> bool:
    """True when the endpoint only accepts connections from this machine."""
    interface = endpoint_interface(description)
    if interface == "unix":
        return True
    if interface in (None, ""):
        return False
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False
