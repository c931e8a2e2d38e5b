"""Which HTTP requests a browser sends on another site's behalf, and which Host names we answer.

A web page open in the operator's browser can reach a RestMQ on loopback: a ``<script src>`` (JSONP
take), a form POST to ``/queue`` (purge), an image or iframe (GET take, streams). Such requests
change queues even though the page cannot read the answer. :func:`refusal` judges every HTTP
request once, before any route runs (:class:`routes.RestMQRequest`):

- **Host** (421, only on a server without ``--auth-file``): a name that is not a loopback address,
  ``localhost``, the address the connection came in on, or one of ``--allowed-hosts`` is refused:
  that is how DNS rebinding (``evil.example`` re-pointed at 127.0.0.1) reaches a loopback server
  from the browser's point of view "same-origin". Ports are ignored; a request without Host
  (HTTP/1.0) passes. With an auth file the tokens protect: a rebound page has none.
- **Cross-site** (403, always, auth file or not: Basic credentials a browser cached for this
  server would be sent along): ``Sec-Fetch-Site: cross-site`` or ``same-site`` (set by the browser,
  a page cannot forge it), or an ``Origin`` that is neither the server's own (the scheme, and the
  Host header's or the listener's address and port) nor allowed by ``--cors``. A cross-site
  request without ``Origin`` (``<script src>``, a navigation) passes only with ``--cors *``.
  Clients that send neither header (curl, the client libraries) are not browsers and pass.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any

from restmq.errors import Forbidden, Misdirected, RestMQError

#: The port an origin without one means.
DEFAULT_PORTS = {"http": 80, "https": 443}
#: What a browser's Sec-Fetch-Site says of a request from another origin.
CROSS = (b"cross-site", b"same-site")
#: A Host header, or an origin's part after ``scheme://``: a name or [IPv6], then maybe a port.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::([0-9]{0,5}))?")

Address = tuple[str, str, int]  # scheme, host, port


def cors_allows(allowed: tuple[bytes, ...], origin: bytes) -> bool:
    """Whether ``--cors`` lets pages from ``origin`` read answers (``*`` allows any origin)."""
    return bool(allowed) and (b"*" in allowed or origin in allowed)


def split_host(value: bytes) -> tuple[str, int | None] | None:
    """``Host``'s name (lower case, no brackets or trailing dot) and port; None when malformed."""
    found = _HOST.fullmatch(value.strip())
    if found is None:
        return None
    name = found.group(1).decode("ascii").lower().strip("[]").rstrip(".")
    return name, int(found.group(2)) if found.group(2) else None


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``name`` as an address (an IPv4-mapped IPv6 one as IPv4), or None for a host name."""
    try:
        ip = ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def same_host(a: str, b: str) -> bool:
    """The same name, or the same address however written (``::ffff:127.0.0.1`` is 127.0.0.1)."""
    if a == b:
        return True
    ip = _ip(a)
    return ip is not None and ip == _ip(b)


def host_allowed(name: str, local: str | None, allowed: frozenset[str]) -> bool:
    """Whether a Host ``name`` is this server's: loopback, ``localhost``, the listener's own
    address ``local``, or one of ``--allowed-hosts``."""
    if name == "localhost" or name in allowed or (local is not None and same_host(name, local)):
        return True
    ip = _ip(name)
    return ip is not None and ip.is_loopback


@functools.lru_cache(maxsize=512)
def host_header_allowed(host: bytes, local: str | None, allowed: frozenset[str]) -> bool:
    """:func:`host_allowed` for a raw Host header (malformed: no); cached, as every request asks."""
    parts = split_host(host)
    return parts is not None and host_allowed(parts[0], local, allowed)


def parse_origin(value: bytes) -> Address | None:
    """An ``Origin`` header as (scheme, host, port); None for ``null`` or anything not http(s)."""
    scheme, sep, rest = value.partition(b"://")
    kind = scheme.decode("ascii", "replace").lower()
    if not sep or kind not in DEFAULT_PORTS:
        return None
    host = split_host(rest)
    if host is None:
        return None
    return kind, host[0], host[1] or DEFAULT_PORTS[kind]


def own_addresses(request: Any) -> list[Address]:
    """The origins of this server as the request reached it: by its Host header and by the
    listener's own address and port."""
    scheme = "https" if request.isSecure() else "http"
    found: list[Address] = []
    host = request.getHeader(b"host")
    parts = split_host(host) if host is not None else None
    if parts is not None:
        found.append((scheme, parts[0], parts[1] or DEFAULT_PORTS[scheme]))
    local = request.getHost()
    if hasattr(local, "host") and hasattr(local, "port"):
        found.append((scheme, str(local.host).lower(), int(local.port)))
    return found


def is_own(request: Any, origin: bytes) -> bool:
    """Whether ``origin`` is the server's own (a page served by this server)."""
    parsed = parse_origin(origin)
    return parsed is not None and any(
        parsed[0] == scheme and parsed[2] == port and same_host(parsed[1], host)
        for scheme, host, port in own_addresses(request)
    )


def _shown(value: bytes) -> str:
    return value[:100].decode("utf-8", "replace")


def refusal(request: Any, cors: tuple[bytes, ...], allowed_hosts: frozenset[str] | None) -> RestMQError | None:
    """Why ``request`` must not run (see the module docstring), or None. ``allowed_hosts`` None:
    the Host check is off (an auth file is in force)."""
    if allowed_hosts is not None:
        host = request.getHeader(b"host")
        local = getattr(request.getHost(), "host", None)
        if host is not None and not host_header_allowed(host, local, allowed_hosts):
            return Misdirected(
                f"Host {_shown(host)!r} is not a name of this server; "
                "name it in --allowed-hosts (or use --auth-file)"
            )
    origin = request.getHeader(b"origin")
    cross = (request.getHeader(b"sec-fetch-site") or b"").lower() in CROSS
    if not cross and (origin is None or is_own(request, origin)):
        return None
    if (b"*" in cors) if origin is None else cors_allows(cors, origin):
        return None
    return Forbidden(
        f"a web page from {_shown(origin) if origin is not None else 'another site'} may not call "
        "this server (--cors names the origins that may)"
    )
