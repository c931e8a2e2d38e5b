"""The memcached codec without a reactor: requests parsed from bytes, Kestrel keys, and replies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restmq.errors import BackendUnavailable, BadQueueName, Empty, RestMQError, TooLarge, Unauthorized
from restmq.wire import memcache as wire
from restmq.wire.memcache import (
    QUIT, STATS, VERSION, Delete, Flush, Get, Invalid, Key, Parser, Simple, Store, parse_key, ttl_for,
)
from tests.conftest import examples


def parse_all(data: bytes, max_value: int = 100, pieces: list[int] | None = None) -> list[wire.Request]:
    """Every request in ``data``, fed whole or cut at ``pieces`` (offsets), pulled after each feed."""
    parser = Parser(max_value)
    out: list[wire.Request] = []
    cuts = sorted(set(pieces or [])) + [len(data)]
    start = 0
    for cut in cuts:
        parser.feed(data[start:cut])
        start = cut
        while (request := parser.next()) is not None:
            out.append(request)
    return out


def err(text: str, **kw: bool) -> Invalid:
    return Invalid(b"CLIENT_ERROR " + text.encode() + b"\r\n", **kw)


PARSED = [
    (b"set q 0 0 5\r\nhello\r\n", [Store("set", "q", 0, 0, "hello")]),
    (b"set q 3 60 0 noreply\r\n\r\n", [Store("set", "q", 3, 60, "", noreply=True)]),
    ("add q 0 0 3\r\n✓\r\n".encode(), [Store("add", "q", 0, 0, "✓")]),
    (b"SET q 0 -1 1\nx\r\n", [Store("set", "q", 0, -1, "x")]),
    (b"set q 0 0 4\r\na\r\nb\r\n", [Store("set", "q", 0, 0, "a\r\nb")]),
    (b"get q\r\n", [Get((Key("q", "q"),))]),
    (b"get a b/open\r\n", [Get((Key("a", "a"), Key("b/open", "b", open=True)))]),
    (b"get q/t=500/open\n", [Get((Key("q/t=500/open", "q", timeout_ms=500, open=True),))]),
    (b"get q/close/open\r\n", [Get((Key("q/close/open", "q", open=True, close=True),))]),
    (b"delete q\r\ndelete q 0 noreply\r\n", [Delete("q"), Delete("q", noreply=True)]),
    (b"flush_all\r\nflush_all 0 noreply\r\nflush q\r\n", [Flush(None), Flush(None, True), Flush("q")]),
    (b"stats\r\nversion\r\nquit\r\n", [STATS, VERSION, QUIT]),
    (b"\r\nfrob\r\nget\r\n", [Invalid(wire.ERROR)] * 3),
    (b"set q 0 0 2000\r\n" + b"x" * 2000 + b"\r\nversion\r\n", [Invalid(wire.TOO_LARGE), VERSION]),
    (b"set q 0 0 2000 noreply\r\n" + b"x" * 2000 + b"\r\n", [Invalid(wire.TOO_LARGE, noreply=True)]),
    (b"set q 0 0 abc\r\nset q 0 0 1\r\nversion\r\n", [err("bad command line format"), VERSION]),
    (b"set q 0 0\r\nversion\r\n", [err("bad command line format")]),
    (b"set q 0 0 2147483648\r\nx\r\nversion\r\n", [err("bad command line format"), VERSION]),
    (b"set q x 0 1\r\ny\r\nversion\r\n", [err("bad command line format"), VERSION]),
    (b"set q 0 0 1 2\r\ny\r\n", [err("bad command line format")]),
    (b"set q 0 0 3\r\nhello\r\nversion\r\n", [err("bad data chunk"), VERSION]),
    (b"set q 0 0 1\r\nab\nversion\r\n", [err("bad data chunk"), VERSION]),
    (b"set q 0 0 2 noreply\r\n\xff\xfe\r\n", [err("value is not UTF-8 text", noreply=True)]),
    (b"set q/open 0 0 1\r\nx\r\n", [err("set takes a bare queue name, without options (q/open)")]),
    (b"cas q 0 0 1 99\r\nx\r\nversion\r\n", [err("cas is not supported: this is a queue (use set, add, get, delete)"),
                                           VERSION]),
    (b"get q/peek/open\r\n", [err("peek cannot be combined with open or close")]),
    (b"get q/abort/close\r\n", [err("abort cannot be combined with open, close or peek")]),
    (b"get q/t=5/peek\r\n", [err("peek does not wait: drop t=")]),
    (b"get q/t=-5\r\n", [err("bad timeout 't=-5': use t=MILLISECONDS")]),
    (b"get q/later\r\n", [err("unknown option 'later' in key q: use open, close, abort, peek, t=MS")]),
    (b"get \xc3\xa9\r\n", [err("key must be ASCII")]),
    (b"delete q 5\r\n", [err("usage: delete QUEUE [noreply]")]),
    (b"delete q/open noreply\r\n", [err("delete takes a bare queue name, without options (q/open)", noreply=True)]),
    (b"flush_all 10\r\n", [err("flush_all takes no delay here (only 0)")]),
    (b"stats items\r\n", [err("stats takes no arguments here")]),
]


@pytest.mark.parametrize(("raw", "expected"), PARSED)
def test_parse(raw: bytes, expected: list[wire.Request]) -> None:
    """Each stream parses to the requests (or exact error replies) memcached users expect."""
    assert parse_all(raw) == expected


def test_over_long_keys_and_bad_queue_names_are_refused() -> None:
    """A key over 250 bytes or a queue name RestMQ refuses is a CLIENT_ERROR naming the problem."""
    [long_key] = parse_all(b"get " + b"q" * 251 + b"\r\n")
    assert long_key == err("key is longer than 250 bytes")
    [bad] = parse_all(b"get a{q}\r\n")
    assert isinstance(bad, Invalid) and bad.reply.startswith(b"CLIENT_ERROR invalid queue name 'a{q}'")


def test_a_refused_large_block_is_skipped_without_being_buffered() -> None:
    """An oversized set's data is discarded as it arrives, so the parser never holds it."""
    parser = Parser(10)
    parser.feed(b"set q 0 0 100000\r\n")
    assert parser.next() == Invalid(wire.TOO_LARGE)
    for _ in range(100):
        parser.feed(b"x" * 1000)
        assert parser.next() is None
        assert parser.buffered == 0
    parser.feed(b"\r\nversion\r\n")
    assert parser.next() == VERSION


def test_an_over_long_line_closes_and_nothing_more_is_parsed() -> None:
    """A command line longer than the limit answers once, asks to close, and the rest is ignored."""
    parser = Parser(10, max_line=50)
    parser.feed(b"get " + b"q" * 60)
    assert parser.next() == Invalid(b"CLIENT_ERROR line too long\r\n", close=True)
    parser.feed(b"\r\nversion\r\n")
    assert parser.next() is None


def test_a_set_waits_for_its_whole_block() -> None:
    """A data block split across reads is only returned once it and its CRLF have arrived."""
    parser = Parser(100)
    parser.feed(b"set q 0 0 5\r\nhel")
    assert parser.next() is None
    parser.feed(b"lo\r")
    assert parser.next() is None
    parser.feed(b"\n")
    assert parser.next() == Store("set", "q", 0, 0, "hello")


KEYS = [
    ("q", Key("q", "q")),
    ("jobs.eu:1/peek", Key("jobs.eu:1/peek", "jobs.eu:1", peek=True)),
    ("q/abort", Key("q/abort", "q", abort=True)),
    ("q/open/t=0", Key("q/open/t=0", "q", open=True)),
    ("q/open/open", Key("q/open/open", "q", open=True)),
]


@pytest.mark.parametrize(("raw", "key"), KEYS)
def test_parse_key(raw: str, key: Key) -> None:
    """Kestrel keys become a queue plus their options."""
    assert parse_key(raw) == key


@pytest.mark.parametrize(
    ("key", "fetches"),
    [(Key("q", "q"), True), (Key("q", "q", close=True), False), (Key("q", "q", abort=True), False),
     (Key("q", "q", close=True, open=True), True), (Key("q", "q", peek=True), True)],
)
def test_which_keys_deliver_a_message(key: Key, fetches: bool) -> None:
    """A bare close or abort only settles the open message; every other key delivers one."""
    assert key.fetches is fetches


@pytest.mark.parametrize(
    ("exptime", "now", "ttl"),
    [(0, 0.0, 0.0), (-1, 0.0, None), (60, 5.0, 60.0), (30 * 86400, 0.0, 30 * 86400.0),
     (2_000_000_000, 1_999_999_990.0, 10.0), (1_000_000_000, 1_999_999_990.0, None)],
)
def test_ttl_follows_memcached_exptime(exptime: int, now: float, ttl: float | None) -> None:
    """0 never expires, negative is already expired, up to 30 days is relative, beyond is unix time."""
    assert ttl_for(exptime, now) == ttl


@pytest.mark.parametrize(
    ("error", "reply"),
    [
        (Unauthorized("needs a token"), b"CLIENT_ERROR unauthorized needs a token\r\n"),
        (BadQueueName("bad\r\nname"), b"CLIENT_ERROR bad_queue_name bad  name\r\n"),
        (Empty("empty queue"), b"CLIENT_ERROR empty empty queue\r\n"),
        (TooLarge("too big"), b"SERVER_ERROR too_large too big\r\n"),
        (BackendUnavailable("redis down"), b"SERVER_ERROR backend_unavailable redis down\r\n"),
        (RestMQError("internal error"), b"SERVER_ERROR internal internal error\r\n"),
    ],
)
def test_error_reply(error: RestMQError, reply: bytes) -> None:
    """Dispatcher errors carry their code, on one line, as CLIENT_ERROR or SERVER_ERROR."""
    assert wire.error_reply(error) == reply


def test_value_bytes_and_blocks() -> None:
    """Text values are their UTF-8 bytes, other JSON values their JSON text, framed as VALUE blocks."""
    assert wire.value_bytes("héllo") == "héllo".encode()
    assert wire.value_bytes({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    assert wire.value_bytes("\ud800") == b'"\\ud800"'
    assert wire.value_block("q/open", b"hi") == b"VALUE q/open 0 2\r\nhi\r\n"
    assert wire.encode_get([wire.value_block("a", b"")]) == b"VALUE a 0 0\r\n\r\nEND\r\n"


def test_stats_reply_keeps_each_value_one_token() -> None:
    """STAT values with spaces, floats and booleans are written as single tokens clients can split."""
    assert wire.stats_reply([("redis", "redis 7.2"), ("uptime", 1.5), ("up", True), ("blank", "")]) == (
        b"STAT redis redis_7.2\r\nSTAT uptime 1.5\r\nSTAT up 1\r\nSTAT blank -\r\nEND\r\n"
    )
    assert wire.version_reply("restmq-2") == b"VERSION restmq-2\r\n"


# -- properties -----------------------------------------------------------------------------------

VALID_REQUESTS = st.sampled_from(
    [
        b"set q 0 0 5\r\nhello\r\n",
        b"add jobs 1 60 3 noreply\r\n\xe2\x9c\x93\r\n",
        b"set q 0 0 0\r\n\r\n",
        b"set q 0 0 4\r\n\r\n\r\n\r\n",
        b"get a b/t=10/open c/close\r\n",
        b"get q/peek\n",
        b"delete q\r\n",
        b"stats\r\n",
        b"version\r\n",
        b"flush_all 0\r\n",
        b"set big 0 0 150\r\n" + b"x" * 150 + b"\r\n",
        b"set q 0 0 3\r\nhello\r\n",
        b"frob\r\n",
    ]
)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(VALID_REQUESTS, min_size=1, max_size=8), st.data())
def test_any_split_of_a_stream_parses_the_same(requests: list[bytes], data: st.DataObject) -> None:
    """However the bytes are cut into reads, the same requests come out in the same order."""
    stream = b"".join(requests)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert parse_all(stream, pieces=cuts) == parse_all(stream)


REQUEST_TYPES = (Get, Store, Delete, Flush, Simple, Invalid)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from([b"set ", b"get ", b"add ", b"cas ", b" 0 ", b"5", b"\r\n", b"\n", b"/open",
                             b"noreply", b"-1", b"99999999999999999999999", b"\xff", b"delete ", b"flush"]),
        ),
        max_size=30,
    ),
    st.lists(st.integers(0, 400), max_size=8),
)
def test_junk_never_raises(pieces: list[bytes], cuts: list[int]) -> None:
    """Arbitrary bytes only ever produce requests or the codec's error replies, never an exception."""
    for request in parse_all(b"".join(pieces), max_value=64, pieces=cuts):
        assert isinstance(request, REQUEST_TYPES)
        if isinstance(request, Invalid):
            assert request.reply.endswith(b"\r\n") and request.reply.count(b"\r\n") == 1
