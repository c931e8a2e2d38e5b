"""The Redis-protocol codec, without a reactor: how request bytes split into commands, what a broken
stream is told, and how replies are spelled."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restmq.wire import resp as wire
from restmq.wire.resp import NIL_ARRAY, Error, Map, ProtocolError, RequestParser, Simple
from tests.conftest import examples


def parse_all(data: bytes, **limits: int) -> list[list[bytes]]:
    """Every complete request in ``data``."""
    parser = RequestParser(**limits)
    parser.feed(data)
    out = []
    while (request := parser.next()) is not None:
        out.append(request)
    return out


def multibulk(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_multibulk_requests_are_split_into_arguments() -> None:
    """What client libraries send (binary-safe, CRLF inside values) comes out argument by argument."""
    data = multibulk(b"RPUSH", b"q", b"a\r\nb", b"") + multibulk(b"LLEN", b"q")
    assert parse_all(data) == [[b"RPUSH", b"q", b"a\r\nb", b""], [b"LLEN", b"q"]]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"PING\r\n", [b"PING"]),
        (b"  rpush  q   a\tb \n", [b"rpush", b"q", b"a", b"b"]),
        (b'rpush q "hello world" \'it\\\'s\'\r\n', [b"rpush", b"q", b"hello world", b"it's"]),
        (b'echo "tab\\there\\x41\\n"\r\n', [b"echo", b"tab\there" + b"A\n"]),
        (b'echo ab"cd ef"\r\n', [b"echo", b"abcd ef"]),
        (b'echo ""\r\n', [b"echo", b""]),
    ],
)
def test_inline_requests_are_split_like_redis(line: bytes, words: list[bytes]) -> None:
    """A line typed into nc is split on blanks, with Redis's quotes and escapes."""
    assert parse_all(line) == [words]


def test_empty_lines_and_empty_multibulks_ask_for_nothing() -> None:
    """Blank lines, ``*0`` and ``*-1`` are skipped, as Redis does."""
    assert parse_all(b"\r\n   \n*0\r\n*-1\r\nPING\r\n") == [[b"PING"]]


def test_a_request_waits_for_its_last_byte() -> None:
    """Nothing comes out until a request is complete; then it does, once."""
    parser = RequestParser()
    data = multibulk(b"LPUSH", b"q", b"value")
    for byte in data[:-1]:
        parser.feed(bytes([byte]))
        assert parser.next() is None
    parser.feed(data[-1:])
    assert parser.next() == [b"LPUSH", b"q", b"value"]
    assert parser.next() is None and parser.pending == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*+1\r\n", "invalid multibulk length"),
        (b"*99999999999\r\n", "invalid multibulk length"),
        (b"*1\r\n:5\r\n", "expected '$', got ':'"),
        (b"*1\r\n$-5\r\n", "invalid bulk length -5"),
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n$3\r\nabcd\r\n", "expected CRLF after a bulk string"),
        (b'echo "unterminated\r\n', "unbalanced quotes"),
        (b'echo "closed"glued\r\n', "unbalanced quotes"),
        (b"x" * (wire.MAX_INLINE + 1), "too big inline request"),
        (b"*" + b"1" * (wire.MAX_INLINE + 1), "too big multibulk count string"),
        (b"*1\r\n$" + b"1" * (wire.MAX_INLINE + 1), "too big bulk count string"),
    ],
)
def test_malformed_streams_are_protocol_errors(data: bytes, message: str) -> None:
    """Each kind of broken stream raises ProtocolError naming what is wrong, Redis's way."""
    with pytest.raises(ProtocolError, match=re.escape(message)) as info:
        parse_all(data)
    assert wire.encode(info.value.reply).startswith(b"-ERR Protocol error: ")


def test_a_bulk_longer_than_the_limit_is_refused_from_its_header() -> None:
    """A huge announced length fails at once: its payload is never waited for or buffered."""
    parser = RequestParser(max_bulk=10)
    parser.feed(b"*2\r\n$4\r\nECHO\r\n$11\r\n")
    with pytest.raises(ProtocolError, match=re.escape("invalid bulk length 11 (the limit is 10 bytes)")):
        parser.next()
    assert parse_all(multibulk(b"ECHO", b"x" * 10), max_bulk=10) == [[b"ECHO", b"x" * 10]]


def test_a_request_larger_than_the_limit_is_refused() -> None:
    """Many small arguments cannot add up to more than max_request bytes."""
    with pytest.raises(ProtocolError, match="request larger than 100 bytes"):
        parse_all(multibulk(b"RPUSH", b"q", *[b"x" * 10] * 10), max_request=100)


def test_requests_before_the_error_still_come_out() -> None:
    """Requests complete before the broken bytes are served; the error comes after them, and stays."""
    parser = RequestParser()
    parser.feed(b"PING\r\n*1\r\n$x\r\n")
    assert parser.next() == [b"PING"]
    for _ in range(2):
        with pytest.raises(ProtocolError):
            parser.next()


@pytest.mark.parametrize(
    ("reply", "resp2", "resp3"),
    [
        (Simple("OK"), b"+OK\r\n", b"+OK\r\n"),
        (Error("ERR bad\r\nthing"), b"-ERR bad  thing\r\n", b"-ERR bad  thing\r\n"),
        (42, b":42\r\n", b":42\r\n"),
        (b"a\r\nb", b"$4\r\na\r\nb\r\n", b"$4\r\na\r\nb\r\n"),
        ("é", b"$2\r\n\xc3\xa9\r\n", b"$2\r\n\xc3\xa9\r\n"),
        (None, b"$-1\r\n", b"_\r\n"),
        (NIL_ARRAY, b"*-1\r\n", b"_\r\n"),
        ([b"q", [1, None]], b"*2\r\n$1\r\nq\r\n*2\r\n:1\r\n$-1\r\n", b"*2\r\n$1\r\nq\r\n*2\r\n:1\r\n_\r\n"),
        (Map({"proto": 2}), b"*2\r\n$5\r\nproto\r\n:2\r\n", b"%1\r\n$5\r\nproto\r\n:2\r\n"),
    ],
)
def test_replies_are_spelled_in_resp2_and_resp3(reply: wire.Reply, resp2: bytes, resp3: bytes) -> None:
    """Every reply type has its RESP2 bytes; RESP3 differs only for nulls and maps."""
    assert wire.encode(reply) == resp2
    assert wire.encode(reply, resp3=True) == resp3


def test_values_come_back_as_text_bytes_or_compact_json() -> None:
    """A text value is its UTF-8 bytes; a JSON value added over HTTP is its compact JSON text."""
    assert wire.value_bytes("héllo") == "héllo".encode()
    assert wire.value_bytes({"n": [1, 2]}) == b'{"n":[1,2]}'
    assert wire.value_bytes(42) == b"42"


def test_numbers_are_read_strictly() -> None:
    """Counts and timeouts accept what Redis accepts and nothing looser."""
    assert [wire.parse_int(b) for b in (b"10", b"-3", b"1_0", b" 1", b"x")] == [10, -3, None, None, None]
    assert [wire.parse_float(b) for b in (b"0.5", b"2", b"nan", b"inf", b"\xff")] == [0.5, 2.0, None, None, None]


# -- properties ---------------------------------------------------------------------------------

ARGS = st.lists(st.binary(max_size=40), min_size=1, max_size=6)
INLINE_WORD = st.binary(min_size=1, max_size=12).filter(
    lambda b: not any(c in b" \t\r\n\v\f\"'" for c in b)
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[list[bytes]]]:
    """A valid byte stream of multibulk and inline requests, and the requests it holds."""
    requests = []
    data = b""
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            args = draw(ARGS)
            data += multibulk(*args)
        else:
            args = draw(st.lists(INLINE_WORD, min_size=1, max_size=4).filter(lambda w: w[0][:1] != b"*"))
            data += b" ".join(args) + draw(st.sampled_from([b"\r\n", b"\n"]))
        requests.append(args)
    return data, requests


@settings(max_examples=examples(300), deadline=None)
@given(streams(), st.lists(st.integers(0, 10_000), max_size=8))
def test_any_split_of_a_valid_stream_parses_the_same(
    stream: tuple[bytes, list[list[bytes]]], cuts: list[int]
) -> None:
    """However TCP cuts the bytes, the same requests come out in the same order."""
    data, expected = stream
    points = sorted({c % (len(data) + 1) for c in cuts})
    parser = RequestParser()
    got = []
    for start, end in zip([0, *points], [*points, len(data)]):
        parser.feed(data[start:end])
        while (request := parser.next()) is not None:
            got.append(request)
    assert got == expected
    assert parser.pending == 0


JUNK = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.sampled_from([b"*", b"$", b"\r\n", b"\n", b"-1", b"3", b"0", b"abc", b'"', b"'", b"\\x4", b" ", b"\xff"]),
        max_size=40,
    ).map(b"".join),
)


@settings(max_examples=examples(500), deadline=None)
@given(JUNK, st.integers(1, 7))
def test_junk_never_raises_anything_but_a_protocol_error(junk: bytes, chunk: int) -> None:
    """Arbitrary bytes, fed in pieces, give requests or ProtocolError: never another exception."""
    parser = RequestParser(max_bulk=64, max_request=256)
    try:
        for i in range(0, len(junk), chunk):
            parser.feed(junk[i : i + chunk])
            while (request := parser.next()) is not None:
                assert request and all(isinstance(a, bytes) for a in request)
    except ProtocolError as e:
        assert e.message


@pytest.mark.parametrize("pieces", [False, True])
def test_the_request_size_limit_is_the_same_whole_or_in_pieces(pieces: bool) -> None:
    """A request one byte under the limit is read and one at it refused, however it arrives."""
    data = multibulk(b"RPUSH", b"q", b"x" * 20)
    for limit, fits in ((len(data) + 2, True), (len(data) + 1, True), (len(data), False)):
        parser = RequestParser(max_request=limit)
        chunks = [data[i : i + 1] for i in range(len(data))] if pieces else [data]
        try:
            got = None
            for chunk in chunks:
                parser.feed(chunk)
                got = parser.next() or got
            assert fits and got == [b"RPUSH", b"q", b"x" * 20]
        except ProtocolError:
            assert not fits
