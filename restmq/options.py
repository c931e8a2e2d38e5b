"""How a server option is declared, once: its name, default, help and the converter of its text.

Core options are declared as the fields of :class:`restmq.config.Config`; each front end declares
its own in its registry entry (:mod:`restmq.frontends.base`). ``restmq serve``, ``twistd restmq``
and the tac's ``RESTMQ_*`` variables are all built from these declarations (see tap.py). Pure: no
Twisted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from restmq.values import parse_float, parse_int

Coerce = Callable[[str], Any]


@dataclass(frozen=True)
class Option:
    """One ``--name VALUE`` option (or ``--name`` when ``flag``)."""

    name: str
    default: Any
    help: str
    coerce: Coerce | None = None
    flag: bool = False

    @property
    def attr(self) -> str:
        """Its name as a Python identifier (the Config attribute): ``max_message_size``."""
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        """The tac's environment variable for it: ``RESTMQ_MAX_MESSAGE_SIZE``."""
        return "RESTMQ_" + self.name.upper().replace("-", "_")


def number_of(kind: type, value: str) -> Any:
    """An option's number in ASCII decimal (``int``: digits only), finite; else ValueError."""
    number = parse_int(value.strip()) if kind is int else parse_float(value.strip())
    if number is None:
        raise ValueError(f"not {'an integer' if kind is int else 'a number'}: {value[:40]!r}")
    return number


def integer(value: str) -> int:
    """A whole number in ASCII digits (the original daemon's --port, --redis-db …)."""
    number: int = number_of(int, value)
    return number


def choice(name: str, choices: tuple[str, ...]) -> Coerce:
    def coerce(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return value

    coerce.coerceDoc = f"One of {', '.join(choices)}."  # type: ignore[attr-defined]
    return coerce


def positive(kind: type, name: str, ceiling: float | None = None) -> Coerce:
    def coerce(value: str) -> Any:
        number = number_of(kind, value)
        if number <= 0 or (ceiling is not None and number > ceiling):
            raise ValueError(f"{name} must be positive" + (f" and at most {ceiling}" if ceiling else ""))
        return number

    return coerce


def count(name: str, ceiling: int) -> Coerce:
    def coerce(value: str) -> int:
        number: int = number_of(int, value)
        if not 0 <= number <= ceiling:
            raise ValueError(f"{name} must be from 0 to {ceiling}")
        return number

    return coerce


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), which ``auto`` workers means."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def workers(name: str, ceiling: int) -> Coerce:
    def coerce(value: str) -> int:
        if value.strip().lower() == "auto":
            return usable_cores()
        number: int = number_of(int, value)
        if not 1 <= number <= ceiling:
            raise ValueError(f"{name} must be auto or from 1 to {ceiling}")
        return number

    coerce.coerceDoc = "A number, or auto."  # type: ignore[attr-defined]
    return coerce


def seconds(name: str) -> Coerce:
    def coerce(value: str) -> float:
        number: float = number_of(float, value)
        if not 0 <= number <= 86400:
            raise ValueError(f"{name} must be from 0 to 86400 seconds")
        return number

    return coerce


def endpoint_or_off(value: str) -> str | None:
    """An endpoint string, or None for ``none``/``off``/``no``/empty (the listener stays off)."""
    return None if value.lower() in ("", "none", "off", "no") else value


def origins(value: str) -> tuple[str, ...]:
    """``--cors``: ``*`` or a comma list of origins like ``https://app.example.org``."""
    found = tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
    for origin in found:
        if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
            raise ValueError(f"--cors takes origins like https://app.example.org (or *), not {origin!r}")
    return found


def hosts(value: str) -> tuple[str, ...]:
    """``--allowed-hosts``: a comma list of host names (or addresses), without ports."""
    found = tuple(h.strip().lower().rstrip(".") for h in value.split(",") if h.strip())
    for host in found:
        if not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*", host) and not _is_address(host.strip("[]")):
            raise ValueError(f"--allowed-hosts takes host names like queue.internal (no port), not {host!r}")
    return tuple(h.strip("[]") for h in found)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def url_prefixes(value: str) -> tuple[str, ...]:
    """``--push-allow``: a comma list of http(s) URL prefixes (``http://127.0.0.1:``,
    ``https://hooks.example.org/``), each with a host (``https://`` alone would allow any); empty:
    push is off."""
    found = tuple(p.strip() for p in value.split(",") if p.strip())
    for prefix in found:
        if not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s#]*)?", prefix):  # a scheme and a host at least
            raise ValueError(f"--push-allow takes URL prefixes like https://hooks.example.org/, not {prefix!r}")
    return found
