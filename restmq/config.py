"""The server's configuration: one frozen value built by tap.py from options or RESTMQ_* variables."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Everything the service tree needs; defaults are the documented ones."""

    http: str = "tcp:8888:interface=127.0.0.1"
    line: str | None = "tcp:8889:interface=127.0.0.1"
    syslog: str | None = None
    resp: str | None = None
    memcache: str | None = None
    redis: str | None = None
    redis_server: str | None = None
    redis_pool: int = 10
    redis_timeout: float = 1.0
    data: str = "./restmq-data"
    durability: str = "everysec"
    max_message_size: int = 1 << 20
    default_policy: str = "broadcast"
    replay: int = 1000
    log_format: str = "text"
    insecure: bool = False
    auth_file: str | None = None
    acl: str | None = None
    max_connections: int = 10_000
    max_connections_per_address: int = 1_000
    idle_timeout: float = 300.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_subscribers: int = 50_000
    max_queues: int = 100_000
    cors: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    replicas: int = 0

    @property
    def endpoints(self) -> dict[str, str]:
        """The listeners to start, by front end name."""
        found = {
            "http": self.http,
            "line": self.line,
            "syslog": self.syslog,
            "resp": self.resp,
            "memcache": self.memcache,
        }
        return {name: ep for name, ep in found.items() if ep}


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
