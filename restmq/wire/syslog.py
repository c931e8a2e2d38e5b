"""The syslog receiver's codec (docs/syslog-collectd.md): a log line in, a message value out.

Pure: no Twisted. Each received line becomes the JSON *text* of
``{"line", "host", "tstamp", "facility", "severity"}`` on queue ``syslogd:<peer host>``, as the
original RestMQ stored it. ``line`` is the whole line, ``<PRI>`` included, trimmed of surrounding
blanks as the original did; facility and severity are decoded from a valid leading ``<PRI>``
(0-191) and are null otherwise.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

#: RFC 5424 §6.2.1 facility names, indexed by PRI // 8.
FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
    "uucp", "cron", "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip

#: Severity names, indexed by PRI % 8.
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

MAX_PRI = len(FACILITIES) * 8 - 1
_PRI = re.compile(r"<([0-9]{1,3})>")
_NOT_IN_QUEUE_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


def decode_pri(line: str) -> tuple[str | None, str | None]:
    """``(facility, severity)`` names from a leading ``<PRI>``; ``(None, None)`` when absent or bad."""
    match = _PRI.match(line)
    if match is None:
        return None, None
    pri = int(match.group(1))
    if pri > MAX_PRI:
        return None, None
    return FACILITIES[pri // 8], SEVERITIES[pri % 8]


def decode_line(raw: bytes) -> str:
    """Text of a received line, trimmed. Senders are not always UTF-8 (old daemons write Latin-1);
    a receiver keeps such lines, with U+FFFD for the bytes it cannot read, rather than drop them."""
    return raw.decode("utf-8", "replace").strip()


def record(line: str, host: str, tstamp: float) -> dict[str, Any]:
    """The message object for one line (``line`` already decoded and trimmed)."""
    facility, severity = decode_pri(line)
    return {"line": line, "host": host, "tstamp": tstamp, "facility": facility, "severity": severity}


def encode_record(line: str, host: str, tstamp: float) -> str:
    """The value stored for one line: the record's JSON text (a string, as the original stored it)."""
    return json.dumps(record(line, host, tstamp), separators=(",", ":"))


def normalize_host(host: str) -> str:
    """The sender's address as people write it: an IPv4 client of a dual-stack listener shows as
    ``::ffff:127.0.0.1`` and is named ``127.0.0.1``, so its queue does not depend on the listener."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def queue_for(host: str) -> str:
    """``syslogd:<host>``, always a valid queue name: IPv6 colons are allowed; anything else outside
    the queue alphabet (a zone's ``%``, a unix socket path) becomes ``_``; cut to 128 characters."""
    return ("syslogd:" + _NOT_IN_QUEUE_NAME.sub("_", host))[:128]
