"""Redis URLs, the private server's redis.conf and version checks.

Pure functions, no Twisted: everything here is table-tested without a reactor, and the parts of the
backend that do I/O only ever see a validated :class:`RedisTarget`.
"""

from __future__ import annotations

import os

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from restmq.errors import BadRequest
from restmq.values import parse_int

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
DURABILITIES = ("everysec", "always")
#: Oldest servers whose Lua, AOF layout and commands the engine relies on.
MINIMUM_VERSIONS: dict[str, tuple[int, int, int]] = {"redis": (7, 0, 0), "valkey": (8, 0, 0)}

Kind = Literal["tcp", "unix", "sentinel", "cluster"]


@dataclass(frozen=True)
class RedisTarget:
    """Where a Redis server is and how to talk to it, independent of the URL spelling used."""

    kind: Kind
    host: str | None = None
    port: int | None = None
    path: str | None = None
    db: int = 0
    password: str | None = None
    username: str | None = None
    master: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    #: Redis Cluster (``redis+cluster://``): the nodes asked for the slot map at start.
    seeds: tuple[tuple[str, int], ...] = ()
    tls: bool = False
    #: TLS (``rediss://``): a PEM file of the CA to trust instead of the system's (``?ssl_ca_certs=``).
    ca_certs: str | None = None
    #: TLS: False only with ``?ssl_cert_reqs=none`` (no certificate check: tests, never production).
    verify: bool = True

    def display(self) -> str:
        """The target as a URL without the password, fit for logs and error messages."""
        auth = ""
        if self.username or self.password:
            auth = f"{self.username or ''}{':***' if self.password else ''}@"
        if self.kind == "unix":
            suffix = f"?db={self.db}" if self.db else ""
            return f"unix://{auth}{self.path}{suffix}"
        if self.kind == "sentinel":
            hosts = ",".join(f"{_host_for_url(h)}:{p}" for h, p in self.sentinels)
            return f"redis+sentinel://{auth}{hosts}/{self.master}/{self.db}"
        if self.kind == "cluster":
            hosts = ",".join(f"{_host_for_url(h)}:{p}" for h, p in self.seeds)
            return f"{'rediss' if self.tls else 'redis'}+cluster://{auth}{hosts}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{_host_for_url(self.host or '')}:{self.port}/{self.db}"


def _host_for_url(host: str) -> str:
    """Brackets around IPv6 literals so the port stays unambiguous."""
    return f"[{host}]" if ":" in host else host


def _bad(url: str, why: str) -> BadRequest:
    """A BadRequest naming the URL (without its password) and what is wrong with it."""
    shown = re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)
    return BadRequest(f"bad redis URL {shown!r}: {why}", url=shown)


def _parse_db(url: str, text: str) -> int:
    """A database number: a non-negative integer."""
    number = parse_int(text, signed=False, digits=9)
    if number is None:
        raise _bad(url, f"database must be a non-negative integer, not {text!r}")
    return number


def _parse_port(url: str, text: str) -> int:
    """A TCP port number in 1..65535."""
    number = parse_int(text, signed=False, digits=5)
    if number is None or not 0 < number < 65536:
        raise _bad(url, f"port must be a number from 1 to 65535, not {text!r}")
    return number


def _split_userinfo(url: str, netloc: str) -> tuple[str | None, str | None, str]:
    """``user:pass@rest`` -> (username, password, rest); empty parts become None."""
    if "@" not in netloc:
        return None, None, netloc
    userinfo, _, rest = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not colon:
        # redis://secret@host is the old "password only" spelling
        user, password = "", user
    return unquote(user) or None, unquote(password) or None, rest


def _split_hostport(url: str, text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host:
            raise _bad(url, f"unterminated IPv6 address in {text!r}")
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise _bad(url, f"unexpected {rest!r} after IPv6 address")
        return host, _parse_port(url, rest[1:])
    if text.count(":") > 1:
        raise _bad(url, f"IPv6 addresses must be in brackets: {text!r}")
    host, colon, port = text.partition(":")
    if not host:
        raise _bad(url, "missing host name")
    return host, _parse_port(url, port) if colon else default_port


def _query(url: str, query: str, allowed: set[str]) -> dict[str, str]:
    """The query string as a dict, refusing parameters we would otherwise silently ignore."""
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise _bad(
            url, f"unknown parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})"
        )
    return params


def parse_redis_url(url: str) -> RedisTarget:
    """Parse every URL form ``--redis`` accepts; anything else is a BadRequest saying why.

    Forms: ``redis://[user:pass@]host[:port][/db]``, ``rediss://…`` (TLS; ``?ssl_ca_certs=PEM``
    trusts that CA, ``?ssl_cert_reqs=none`` checks no certificate),
    ``unix:///path/to/sock[?db=N]`` (also ``redis+unix://`` and ``unix:/path``) and
    ``redis+sentinel://[:pass@]host:port[,host2:port2]/master[/db]``. ``?db=`` and ``?password=``
    are accepted everywhere, as redis-py does.
    """
    if not isinstance(url, str) or not url.strip():
        raise BadRequest("bad redis URL: empty")
    url = url.strip()
    scheme, sep, _ = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise _bad(url, "expected redis://, rediss://, unix:// or redis+sentinel://")
    if scheme in ("redis", "rediss"):
        return _parse_tcp(url, tls=scheme == "rediss")
    if scheme in ("unix", "redis+unix"):
        return _parse_unix(url)
    if scheme in ("redis+sentinel", "sentinel"):
        return _parse_sentinel(url)
    if scheme in ("redis+cluster", "rediss+cluster"):
        return _parse_cluster(url, tls=scheme == "rediss+cluster")
    raise _bad(
        url, f"unknown scheme {scheme!r}; expected redis, rediss, unix, redis+sentinel or redis+cluster"
    )


def _split(url: str) -> SplitResult:
    """urlsplit, with its ValueErrors turned into BadRequest."""
    try:
        return urlsplit(url)
    except ValueError as e:
        raise _bad(url, str(e)) from e


def _tls_params(url: str, params: dict[str, str], tls: bool) -> tuple[str | None, bool]:
    """``ssl_ca_certs`` and whether to verify, from a URL's query (TLS URLs only)."""
    if not tls and {"ssl_ca_certs", "ssl_cert_reqs"} & set(params):
        raise _bad(url, "ssl_ca_certs and ssl_cert_reqs need a rediss:// URL")
    reqs = params.get("ssl_cert_reqs", "required").lower()
    if reqs not in ("required", "none"):
        raise _bad(url, f"ssl_cert_reqs must be required or none, not {reqs!r}")
    ca_certs = params.get("ssl_ca_certs") or None
    if ca_certs is not None and not os.path.isfile(ca_certs):
        raise _bad(url, f"ssl_ca_certs {ca_certs!r} is not a readable file")
    return ca_certs, reqs == "required"


def _parse_cluster(url: str, *, tls: bool) -> RedisTarget:
    """``redis+cluster://[user:pass@]host:port[,host:port…][/0]`` and ``rediss+cluster://…``.

    The hosts are seeds: any of them gives the slot map. A cluster has database 0 only, so any
    other number is refused here, at start, rather than failing at the first SELECT.
    """
    rest = url.split(":", 1)[1]
    if not rest.startswith("//"):
        raise _bad(url, "expected redis+cluster://host:port[,host:port…]")
    rest, _, fragment = rest[2:].partition("#")
    if fragment:
        raise _bad(url, "fragments (#…) are not allowed")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    user, password, hosts = _split_userinfo(url, netloc)
    seeds = tuple(_split_hostport(url, h.strip(), DEFAULT_PORT) for h in hosts.split(",") if h.strip())
    if not seeds:
        raise _bad(url, "no cluster node: redis+cluster://host:port[,host:port…]")
    params = _query(url, query, {"db", "password", "ssl_ca_certs", "ssl_cert_reqs"})
    db_text = params.get("db", path.strip("/") if slash else "")
    if db_text and _parse_db(url, db_text) != 0:
        raise _bad(url, f"Redis Cluster has only database 0, not {db_text}")
    ca_certs, verify = _tls_params(url, params, tls)
    host, port = seeds[0]
    return RedisTarget(
        "cluster", host=host, port=port, password=params.get("password") or password, username=user,
        seeds=seeds, tls=tls, ca_certs=ca_certs, verify=verify,
    )


def _parse_tcp(url: str, *, tls: bool) -> RedisTarget:
    """``redis://`` and ``rediss://``."""
    parts = _split(url)
    if parts.fragment:
        raise _bad(url, "fragments (#…) are not allowed")
    user, password, hostport = _split_userinfo(url, parts.netloc)
    params = _query(url, parts.query, {"db", "password", "ssl_ca_certs", "ssl_cert_reqs"})
    ca_certs, verify = _tls_params(url, params, tls)
    host, port = (
        _split_hostport(url, hostport, DEFAULT_PORT) if hostport else ("localhost", DEFAULT_PORT)
    )
    path = parts.path.strip("/")
    if "/" in path:
        raise _bad(url, f"path must be just the database number, not {parts.path!r}")
    db = _parse_db(url, path) if path else 0
    if "db" in params:
        db = _parse_db(url, params["db"])
    password = params.get("password") or password
    return RedisTarget(
        "tcp", host=host, port=port, db=db, password=password, username=user, tls=tls,
        ca_certs=ca_certs, verify=verify,
    )


def _parse_unix(url: str) -> RedisTarget:
    """``unix:///abs/path``, ``unix:/abs/path``, ``unix:relative/path``, ``redis+unix://…``."""
    parts = _split(url)
    if parts.fragment:
        raise _bad(url, "fragments (#…) are not allowed")
    user, password, rest = _split_userinfo(url, parts.netloc)
    if rest:
        raise _bad(url, f"unix socket URLs look like unix:///absolute/path, not with host {rest!r}")
    path = unquote(parts.path)
    if not path or path.endswith("/"):
        raise _bad(url, "missing socket path")
    params = _query(url, parts.query, {"db", "password"})
    db = _parse_db(url, params["db"]) if "db" in params else 0
    password = params.get("password") or password
    return RedisTarget("unix", path=path, db=db, password=password, username=user)


def _parse_sentinel(url: str) -> RedisTarget:
    """``redis+sentinel://[:pass@]host:port[,host:port]/master[/db]``.

    Parsed by hand: urlsplit cannot take a comma-separated host list with ports.
    """
    rest = url.split(":", 1)[1]
    if not rest.startswith("//"):
        raise _bad(url, "expected redis+sentinel://host:port/master")
    rest = rest[2:]
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise _bad(url, "fragments (#…) are not allowed")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    user, password, hosts = _split_userinfo(url, netloc)
    if not hosts:
        raise _bad(url, "no sentinel host")
    sentinels = tuple(
        _split_hostport(url, h.strip(), DEFAULT_SENTINEL_PORT)
        for h in hosts.split(",")
        if h.strip()
    )
    if not sentinels:
        raise _bad(url, "no sentinel host")
    segments = [s for s in path.split("/")] if slash else []
    if segments and segments[-1] == "":
        segments.pop()
    if not segments or not segments[0]:
        raise _bad(url, "missing master name: redis+sentinel://host:port/mastername[/db]")
    if len(segments) > 2:
        raise _bad(url, f"path must be /master[/db], not /{path}")
    master = unquote(segments[0])
    db = _parse_db(url, segments[1]) if len(segments) == 2 else 0
    params = _query(url, query, {"db", "password"})
    if "db" in params:
        db = _parse_db(url, params["db"])
    password = params.get("password") or password
    return RedisTarget(
        "sentinel", db=db, password=password, username=user, master=master, sentinels=sentinels
    )


def _quote(value: str) -> str:
    """A redis.conf string argument, quoted so paths with spaces or quotes survive."""
    if any(c in value for c in "\r\n\0"):
        raise BadRequest(f"path not usable in redis.conf: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_config(data_dir: str, socket_path: str, durability: str) -> str:
    """The redis.conf of the private server: unix socket only, AOF on, nothing ever evicted.

    ``durability`` is the AOF fsync policy: ``everysec`` (lose at most ~1 s on power loss) or
    ``always`` (fsync before every reply). Valid for Redis 7 and Valkey 8/9 alike.
    ``set-proc-title no`` keeps the config path in ``/proc/<pid>/cmdline``, which is how an
    orphaned server of ours is recognised after RestMQ was killed.
    """
    if durability not in DURABILITIES:
        raise BadRequest(
            f"durability must be one of {', '.join(DURABILITIES)}, not {durability!r}",
            durability=durability,
        )
    lines = [
        "# Written by RestMQ for its private server; rewritten on every start, do not edit.",
        "port 0",
        f"unixsocket {_quote(socket_path)}",
        "unixsocketperm 700",
        f"dir {_quote(data_dir)}",
        "appendonly yes",
        f"appendfsync {durability}",
        'save ""',
        "maxmemory-policy noeviction",
        f"pidfile {_quote(data_dir.rstrip('/') + '/redis.pid')}",
        "daemonize no",
        f"logfile {_quote(data_dir.rstrip('/') + '/redis.log')}",
        "protected-mode no",
        "set-proc-title no",
    ]
    return "\n".join(lines) + "\n"


_VERSION = re.compile(r"\bv=([0-9]+)\.([0-9]+)(?:\.([0-9]+))?")


def parse_version(text: str) -> tuple[int, int, int]:
    """The version in ``redis-server --version`` output (``Redis server v=7.0.15 sha=…``)."""
    match = _VERSION.search(text or "")
    if not match:
        raise BadRequest(f"cannot find a version in {(text or '').strip()[:200]!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def parse_flavour(text: str) -> str:
    """``redis`` or ``valkey``, from ``--version`` output or a ``server_name`` INFO field."""
    return "valkey" if "valkey" in (text or "").lower() else "redis"


def check_version(flavour: str, version: tuple[int, int, int]) -> None:
    """Refuse servers older than the engine supports: Redis ≥ 7.0, Valkey ≥ 8."""
    minimum = MINIMUM_VERSIONS.get(flavour)
    if minimum is None:
        raise BadRequest(f"unknown server flavour {flavour!r}; expected redis or valkey")
    if tuple(version) < minimum:
        found = ".".join(map(str, version))
        needed = ".".join(map(str, minimum[:2]))
        raise BadRequest(
            f"{flavour} {found} is too old: RestMQ needs Redis >= 7.0 or Valkey >= 8 "
            f"(this is {flavour}, needs >= {needed})",
            flavour=flavour,
            version=found,
        )
