"""The original RestMQ's ``--acl`` file: who may produce and consume over HTTP, by address and Basic.

An INI file with one section per category of caller (docs/security.md, the original ACL file)::

    [rest:producer]            # POST /q, add commands … (every write or admin command over HTTP)
    hosts_allow = 127.0.0.1, 10.0.0.0/8
    hosts_deny = all
    username = producer
    password = secret

    [rest:consumer]            # GET /q, take, reserve, ack … over REST, POST /queue and XML-RPC
    [comet:consumer]           # GET /c/<q>
    [sse:consumer]             # GET /sse/<q>
    [websocket:consumer]       # /ws/<q> (Basic, or a cookie auth=user:password as the original)

For each section: an address in ``hosts_allow`` is let through; otherwise one in ``hosts_deny`` (or
``all``) is refused (403). Entries are full addresses, CIDR networks (``10.0.0.0/8``), ``all``, or
the original's address prefixes (``192.168.``). With ``username``/``password`` set the caller must
also send them with HTTP Basic (401 otherwise). A category without a section is open. Commands sent
on a stream (a WebSocket ``add`` frame) that need more than read are judged as ``rest:producer``.

The ACL covers HTTP only, as the original did; the line protocol and the other TCP front ends use
tokens (``--auth-file``), which may be combined with it: a call must then pass both. It judges
callers, not queues, so a caller it lets list queues may read every one of them: with the ACL alone
listings show every queue, as in the original. Pure: no Twisted, no Redis.
"""

from __future__ import annotations

import configparser
import hmac
import ipaddress
import os
from dataclasses import dataclass

from restmq.auth import Caller
from restmq.errors import BadRequest, Forbidden, Unauthorized
from restmq.ports import Principal

CATEGORIES = ("rest:producer", "rest:consumer", "comet:consumer", "sse:consumer", "websocket:consumer")
KEYS = ("hosts_allow", "hosts_deny", "username", "password")
#: The HTTP channels a caller can come through (a principal's ``channel``).
CHANNELS = ("rest", "comet", "sse", "websocket")
#: Seconds between the service's looks at the file's modification time (a changed file is reloaded).
RECHECK = 1.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def category_of(channel: str, right: str) -> str:
    """The ACL section that judges a command needing ``right`` sent through ``channel``."""
    if right == "read":
        return f"{channel}:consumer"
    return "rest:producer"


def _canonical(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class Hosts:
    """One ``hosts_allow``/``hosts_deny`` list: networks, the original's prefixes, or ``all``."""

    everyone: bool = False
    networks: tuple[Network, ...] = ()
    prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, where: str) -> Hosts:
        everyone, networks, prefixes = False, [], []
        for entry in text.replace(",", " ").split():
            if entry.lower() == "all":
                everyone = True
            elif "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise BadRequest(f"{where}: {entry!r} is not a network like 10.0.0.0/8") from None
            elif (address := _canonical(entry)) is not None:
                networks.append(ipaddress.ip_network(address))
            elif all(c in "0123456789.:abcdefABCDEF" for c in entry):
                prefixes.append(entry.lower())  # the original's "192.168." style
            else:
                raise BadRequest(f"{where}: {entry!r} is not an address, a network, a prefix or 'all'")
        return cls(everyone, tuple(networks), tuple(prefixes))

    def match(self, host: str) -> bool:
        if self.everyone:
            return True
        address = _canonical(host)
        if address is not None and any(address in network for network in self.networks):
            return True
        text = str(address) if address is not None else host
        return any(text.startswith(prefix) for prefix in self.prefixes)


@dataclass(frozen=True)
class Rule:
    """One section: the address lists and the Basic credentials it asks for."""

    allow: Hosts
    deny: Hosts
    username: str | None
    password: str | None

    def check(self, category: str, caller: Caller) -> None:
        if not self.allow.match(caller.host) and self.deny.match(caller.host):
            raise Forbidden(f"address {caller.host} may not call as {category}")
        if self.username is not None or self.password is not None:
            if caller.basic is None:
                raise Unauthorized(f"{category} needs a user name and password (HTTP Basic)")
            user, password = caller.basic
            good_user = hmac.compare_digest(user.encode(), (self.username or "").encode())
            good_password = hmac.compare_digest(password.encode(), (self.password or "").encode())
            if not (good_user and good_password):
                raise Unauthorized(f"wrong user name or password for {category}")


def parse_acl(text: str, source: str = "acl file") -> dict[str, Rule]:
    """Read an ACL file's text; unknown sections or keys, and bad addresses, are ``bad_request``."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    try:
        parser.read_string(text, source)
    except configparser.Error as e:
        raise BadRequest(f"{source}: {e.message.splitlines()[0]}") from None
    rules: dict[str, Rule] = {}
    for name in parser.sections():
        if name not in CATEGORIES:
            raise BadRequest(f"{source}: unknown section [{name}]; known: {', '.join(CATEGORIES)}")
        section = parser[name]
        unknown = set(section) - set(KEYS)
        if unknown:
            raise BadRequest(f"{source} [{name}]: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(KEYS)}")
        rules[name] = Rule(
            allow=Hosts.parse(section.get("hosts_allow", ""), f"{source} [{name}] hosts_allow"),
            deny=Hosts.parse(section.get("hosts_deny", ""), f"{source} [{name}] hosts_deny"),
            username=section.get("username"),
            password=section.get("password"),
        )
    return rules


class Acl:
    """The rules of an ``--acl`` file; :meth:`refresh` reloads them when the file changed (the
    service calls it every :data:`RECHECK` seconds and on SIGHUP)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime = self._stat()
        self.rules = self._read()

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    def _read(self) -> dict[str, Rule]:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise BadRequest(f"cannot read acl file {self.path}: {e.strerror}") from None
        return parse_acl(text, self.path)

    def reload(self) -> int:
        """Read the file again; on a bad file the old rules stay (and the error is raised)."""
        self._mtime = self._stat()
        self.rules = self._read()
        return len(self.rules)

    def refresh(self) -> bool:
        """Reload when the file's modification time changed: True when new rules were loaded. A
        bad file raises once per change, and the old rules stay."""
        mtime = self._stat()
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        self.rules = self._read()
        return True

    def authorize(self, principal: Principal, right: str, queue: str | None) -> None:
        """Judge an HTTP caller (a :class:`~restmq.auth.Caller`); other principals (line protocol
        tokens) are not the ACL's business."""
        if not isinstance(principal, Caller) or principal.channel not in CHANNELS:
            return
        category = category_of(principal.channel, right)
        rule = self.rules.get(category)
        if rule is not None:
            rule.check(category, principal)

    __call__ = authorize
