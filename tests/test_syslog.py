"""The syslog receiver: its pure codec, then lines over TCP and in memory landing on syslogd:<host>."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.address import IPv6Address
from twisted.internet.testing import StringTransport

from restmq.commands import QUEUE_NAME
from restmq.frontends.syslog import SyslogFactory, SyslogProtocol
from restmq.wire import syslog as wire

# -- codec --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "facility", "severity"),
    [
        ("<34>Oct 11 22:14:15 mymachine su: 'su root' failed", "auth", "crit"),
        ("<0>boom", "kern", "emerg"),
        ("<13>hello", "user", "notice"),
        ("<86>sshd[1]: accepted", "authpriv", "info"),
        ("<100>x", "ntp", "warning"),
        ("<105>x", "security", "alert"),
        ("<112>x", "console", "emerg"),
        ("<127>x", "solaris-cron", "debug"),
        ("<191>last one", "local7", "debug"),
        ("<192>too big", None, None),
        ("<1234>four digits", None, None),
        ("<abc>not a number", None, None),
        ("<>empty", None, None),
        ("34>no bracket", None, None),
        (" <34>not leading", None, None),
        ("plain line", None, None),
        ("", None, None),
    ],
)
def test_decode_pri(line: str, facility: str | None, severity: str | None) -> None:
    """A leading <PRI> up to 191 names facility (PRI // 8) and severity (PRI % 8); else both null."""
    assert wire.decode_pri(line) == (facility, severity)


def test_record_keeps_the_whole_line() -> None:
    """The record carries the line as received (PRI included), the host, the time and the names."""
    assert wire.record("<34>su: failed", "10.0.0.1", 12.5) == {
        "line": "<34>su: failed", "host": "10.0.0.1", "tstamp": 12.5,
        "facility": "auth", "severity": "crit",
    }  # fmt: skip
    text = wire.encode_record("<999>odd", "h", 1.0)
    assert isinstance(text, str)
    assert json.loads(text) == {"line": "<999>odd", "host": "h", "tstamp": 1.0, "facility": None, "severity": None}


@pytest.mark.parametrize(
    ("raw", "text"),
    [(b"  <13>hi \r", "<13>hi"), ("é ✓".encode(), "é ✓"), (b"caf\xe9", "caf\ufffd"), (b" \t ", "")],
)
def test_decode_line(raw: bytes, text: str) -> None:
    """Lines are trimmed; bytes that are not UTF-8 are replaced rather than the line dropped."""
    assert wire.decode_line(raw) == text


@pytest.mark.parametrize(
    ("host", "queue"),
    [
        ("127.0.0.1", "syslogd:127.0.0.1"),
        ("::1", "syslogd:::1"),
        ("::ffff:10.1.2.3", "syslogd:10.1.2.3"),
        ("2001:DB8::1", "syslogd:2001:db8::1"),
        ("fe80::1%eth0", "syslogd:fe80::1_eth0"),
        ("local", "syslogd:local"),
        ("x" * 300, "syslogd:" + "x" * 120),
    ],
)
def test_queue_for_host(host: str, queue: str) -> None:
    """Every peer gets a valid queue name: IPv4-mapped addresses read as IPv4, odd characters become _."""
    name = wire.queue_for(wire.normalize_host(host))
    assert name == queue
    assert QUEUE_NAME.match(name)


# -- in memory and over TCP ---------------------------------------------------------------------


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


async def eventually(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    """Await ``check()`` (a coroutine function) until it answers something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        await task.deferLater(reactor(), 0.01, lambda: None)


async def stored(dispatcher: Any, queue: str, n: int) -> list[dict[str, Any]]:
    """The ``n`` records on ``queue``, taken in order, decoded from their JSON text."""

    async def ready() -> bool:
        return (await dispatcher.execute("len", {"queue": queue}))["ready"] >= n

    await eventually(ready)
    taken = await dispatcher.execute("take", {"queue": queue, "count": 1000})
    assert all(isinstance(m["value"], str) for m in taken)
    return [json.loads(m["value"]) for m in taken]


@pytest_twisted.ensureDeferred
async def test_tcp_lines_become_messages_on_the_peer_queue(dispatcher):
    """Lines with, without and with a bad PRI are stored in order as JSON text on syslogd:127.0.0.1."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol

    clock = task.Clock()
    clock.advance(1700000000.25)
    port = reactor().listenTCP(0, SyslogFactory(dispatcher, clock=clock), interface="127.0.0.1")
    try:
        sender = Protocol()
        await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", port.getHost().port), sender)
        sender.transport.write(
            b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed\r\n"
            b"no pri at all\n"
            b"\n"
            b"<999>bad pri\n"
            b"<abc>also bad\n"
        )
        records = await stored(dispatcher, "syslogd:127.0.0.1", 4)
        sender.transport.write(b"<13>still connected\n")
        records += await stored(dispatcher, "syslogd:127.0.0.1", 1)
        sender.transport.loseConnection()
    finally:
        await port.stopListening()
    assert [(r["line"], r["facility"], r["severity"]) for r in records] == [
        ("<34>Oct 11 22:14:15 mymachine su: 'su root' failed", "auth", "crit"),
        ("no pri at all", None, None),
        ("<999>bad pri", None, None),
        ("<abc>also bad", None, None),
        ("<13>still connected", "user", "notice"),
    ]
    assert {r["host"] for r in records} == {"127.0.0.1"}
    assert {r["tstamp"] for r in records} == {1700000000.25}


def connect(dispatcher: Any, **options: Any) -> tuple[SyslogProtocol, StringTransport]:
    proto = SyslogFactory(dispatcher, clock=task.Clock(), **options).buildProtocol(None)
    transport = StringTransport(peerAddress=IPv6Address("TCP", "::ffff:192.0.2.7", 5140))
    proto.makeConnection(transport)
    return proto, transport


@pytest_twisted.ensureDeferred
async def test_over_long_line_is_skipped_and_the_connection_stays(dispatcher):
    """A line over max_line is dropped up to its newline; lines around it are stored, nothing written."""
    proto, transport = connect(dispatcher, max_line=32)
    proto.dataReceived(b"first\n" + b"x" * 100)
    proto.dataReceived(b"y" * 100 + b"\nsecond\n" + b"z" * 50 + b"\nthird\n")
    records = await stored(dispatcher, "syslogd:192.0.2.7", 3)
    assert [r["line"] for r in records] == ["first", "second", "third"]
    assert records[0]["host"] == "192.0.2.7"
    assert not transport.disconnecting
    assert transport.value() == b""


@pytest_twisted.ensureDeferred
async def test_a_refused_line_loses_only_itself(engine):
    """When one line of a batch is too large to store, the others are still stored in order."""
    from restmq.dispatch import Dispatcher

    small = Dispatcher(engine, max_message_size=200)
    proto, transport = connect(small)
    proto.dataReceived(b"".join(b"line %d\n" % i for i in range(5)) + b"x" * 300 + b"\nafter\n")
    records = await stored(small, "syslogd:192.0.2.7", 6)
    assert [r["line"] for r in records] == [f"line {i}" for i in range(5)] + ["after"]
    assert small.errors["too_large"] >= 1
    assert small.calls["add_many"] >= 1
    assert not transport.disconnecting
