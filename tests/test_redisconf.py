"""Redis URL parsing, the private server's redis.conf, version checks: pure, no reactor."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restmq.backend.redisconf import (
    DEFAULT_PORT,
    DEFAULT_SENTINEL_PORT,
    RedisTarget,
    check_version,
    parse_flavour,
    parse_redis_url,
    parse_version,
    server_config,
)
from restmq.errors import BadRequest
from tests.conftest import examples

GOOD_URLS: list[tuple[str, RedisTarget]] = [
    ("redis://localhost", RedisTarget("tcp", host="localhost", port=DEFAULT_PORT)),
    ("redis://127.0.0.1:6380", RedisTarget("tcp", host="127.0.0.1", port=6380)),
    ("redis://127.0.0.1:6380/", RedisTarget("tcp", host="127.0.0.1", port=6380)),
    ("redis://h:1/3", RedisTarget("tcp", host="h", port=1, db=3)),
    ("redis://h/2", RedisTarget("tcp", host="h", port=DEFAULT_PORT, db=2)),
    ("redis://h?db=4", RedisTarget("tcp", host="h", port=DEFAULT_PORT, db=4)),
    ("redis://:secret@h:7000/1", RedisTarget("tcp", host="h", port=7000, db=1, password="secret")),
    ("redis://secret@h", RedisTarget("tcp", host="h", port=DEFAULT_PORT, password="secret")),
    (
        "redis://alice:p%40ss@h/0",
        RedisTarget("tcp", host="h", port=DEFAULT_PORT, password="p@ss", username="alice"),
    ),
    ("redis://h?password=pw", RedisTarget("tcp", host="h", port=DEFAULT_PORT, password="pw")),
    ("redis://[::1]:7001/5", RedisTarget("tcp", host="::1", port=7001, db=5)),
    ("redis://[::1]", RedisTarget("tcp", host="::1", port=DEFAULT_PORT)),
    ("REDIS://h", RedisTarget("tcp", host="h", port=DEFAULT_PORT)),
    ("redis://", RedisTarget("tcp", host="localhost", port=DEFAULT_PORT)),
    (
        "rediss://cache.example.com:6380/0",
        RedisTarget("tcp", host="cache.example.com", port=6380, tls=True),
    ),
    ("unix:///var/run/redis.sock", RedisTarget("unix", path="/var/run/redis.sock")),
    ("unix:///var/run/redis.sock?db=2", RedisTarget("unix", path="/var/run/redis.sock", db=2)),
    ("unix:/tmp/r.sock", RedisTarget("unix", path="/tmp/r.sock")),
    ("unix:data/r.sock", RedisTarget("unix", path="data/r.sock")),
    ("redis+unix:///tmp/r.sock?db=1", RedisTarget("unix", path="/tmp/r.sock", db=1)),
    ("unix://:pw@/tmp/r.sock", RedisTarget("unix", path="/tmp/r.sock", password="pw")),
    ("unix:///tmp/r.sock?password=pw", RedisTarget("unix", path="/tmp/r.sock", password="pw")),
    (
        "redis+sentinel://s1:26390/mymaster",
        RedisTarget("sentinel", master="mymaster", sentinels=(("s1", 26390),)),
    ),
    (
        "redis+sentinel://:pw@s1:1,s2:2/mymaster/3",
        RedisTarget(
            "sentinel", master="mymaster", db=3, password="pw", sentinels=(("s1", 1), ("s2", 2))
        ),
    ),
    (
        "redis+sentinel://s1,[::1]:3/m/",
        RedisTarget("sentinel", master="m", sentinels=(("s1", DEFAULT_SENTINEL_PORT), ("::1", 3))),
    ),
    (
        "redis+sentinel://s1/m?db=2",
        RedisTarget("sentinel", master="m", db=2, sentinels=(("s1", DEFAULT_SENTINEL_PORT),)),
    ),
]


@pytest.mark.parametrize(("url", "expected"), GOOD_URLS, ids=[u for u, _ in GOOD_URLS])
def test_parse_good_urls(url: str, expected: RedisTarget) -> None:
    """Every documented URL form parses to the expected target."""
    assert parse_redis_url(url) == expected


BAD_URLS: list[tuple[str, str]] = [
    ("", "empty"),
    ("localhost:7000", "unknown scheme"),
    ("http://h:80", "unknown scheme"),
    ("redis://h:notaport", "port"),
    ("redis://h:0", "port"),
    ("redis://h:70000", "port"),
    ("redis://h/x", "database"),
    ("redis://h/-1", "database"),
    ("redis://h/1/2", "path"),
    ("redis://h?db=x", "database"),
    ("redis://h?timeout=3", "unknown parameter"),
    ("redis://h#frag", "fragment"),
    ("redis://::1:7000", "IPv6"),
    ("redis://[::1:7000", "IPv6 URL"),
    ("unix://", "socket path"),
    ("unix://host/tmp/r.sock", "unix:///absolute/path"),
    ("unix:///tmp/r.sock?db=a", "database"),
    ("redis+sentinel://s1:26390", "master name"),
    ("redis+sentinel://s1:26390/", "master name"),
    ("redis+sentinel:///m", "no sentinel host"),
    ("redis+sentinel://s1:x/m", "port"),
    ("redis+sentinel://s1/m/x", "database"),
    ("redis+sentinel://s1/m/1/2", "path"),
    ("redis+sentinel:s1/m", "redis+sentinel://"),
]


@pytest.mark.parametrize(("url", "why"), BAD_URLS, ids=[u or "empty" for u, _ in BAD_URLS])
def test_parse_bad_urls(url: str, why: str) -> None:
    """A malformed URL is a BadRequest whose message says what is wrong."""
    with pytest.raises(BadRequest) as info:
        parse_redis_url(url)
    assert why in info.value.message
    assert info.value.code == "bad_request"


def test_bad_url_message_hides_password() -> None:
    """The password never appears in the error message of a bad URL."""
    with pytest.raises(BadRequest) as info:
        parse_redis_url("redis://user:hunter2@h:bad/0")
    assert "hunter2" not in info.value.message
    assert "hunter2" not in str(info.value.to_dict())


def test_display_hides_password() -> None:
    """``display()`` renders a loggable URL without the password."""
    assert parse_redis_url("redis://u:pw@h:1/2").display() == "redis://u:***@h:1/2"
    assert parse_redis_url("rediss://h").display() == f"rediss://h:{DEFAULT_PORT}/0"
    assert parse_redis_url("unix:///s?db=3").display() == "unix:///s?db=3"
    assert (
        parse_redis_url("redis+sentinel://:pw@a:1,b:2/m").display()
        == "redis+sentinel://:***@a:1,b:2/m/0"
    )


def _directives(text: str) -> dict[str, str]:
    """redis.conf text -> {directive: argument string}, ignoring comments."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            assert key not in result, f"duplicate directive {key}"
            result[key] = value
    return result


@pytest.mark.parametrize("durability", ["everysec", "always"])
def test_server_config_contents(durability: str) -> None:
    """The private server listens only on its socket, keeps an AOF with the given fsync, never evicts."""
    conf = _directives(server_config("/data/dir", "/data/dir/redis.sock", durability))
    assert conf["port"] == "0"
    assert conf["unixsocket"] == '"/data/dir/redis.sock"'
    assert conf["unixsocketperm"] == "700"
    assert conf["dir"] == '"/data/dir"'
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == durability
    assert conf["save"] == '""'
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["pidfile"] == '"/data/dir/redis.pid"'
    assert conf["logfile"] == '"/data/dir/redis.log"'
    assert conf["daemonize"] == "no"
    assert conf["protected-mode"] == "no"


def test_server_config_quotes_paths() -> None:
    """Paths with spaces and quotes are quoted so redis.conf still parses them as one argument."""
    conf = _directives(server_config('/my data/"q"', "/s.sock", "everysec"))
    assert conf["dir"] == r'"/my data/\"q\""'


@pytest.mark.parametrize("durability", ["", "no", "EVERYSEC", "sometimes"])
def test_server_config_rejects_unknown_durability(durability: str) -> None:
    """Only everysec and always are valid durabilities."""
    with pytest.raises(BadRequest, match="durability"):
        server_config("/d", "/d/redis.sock", durability)


VERSIONS = [
    (
        "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d",
        "redis",
        (7, 0, 15),
    ),
    (
        "Valkey server v=9.1.2 sha=00000000:1 malloc=libc bits=64 build=1536df31c0395150",
        "valkey",
        (9, 1, 2),
    ),
    ("Redis server v=6.2.14 sha=0", "redis", (6, 2, 14)),
    ("Valkey server v=8.0.0 sha=0", "valkey", (8, 0, 0)),
    ("Redis server v=7.4 sha=0", "redis", (7, 4, 0)),
]


@pytest.mark.parametrize(("text", "flavour", "version"), VERSIONS)
def test_parse_version(text: str, flavour: str, version: tuple[int, int, int]) -> None:
    """``--version`` output yields the server's flavour and version."""
    assert parse_version(text) == version
    assert parse_flavour(text) == flavour


def test_parse_version_garbage() -> None:
    """Output without ``v=X.Y`` is a clear error, not a crash."""
    with pytest.raises(BadRequest, match="version"):
        parse_version("command not found")


@pytest.mark.parametrize(
    ("flavour", "version"),
    [("redis", (7, 0, 0)), ("redis", (7, 2, 4)), ("valkey", (8, 0, 0)), ("valkey", (9, 1, 2))],
)
def test_check_version_accepts_supported(flavour: str, version: tuple[int, int, int]) -> None:
    """Redis >= 7.0 and Valkey >= 8 are accepted: the check neither raises nor answers anything."""
    assert check_version(flavour, version) is None


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(["redis", "valkey"]), st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 40)))
def test_check_version_accepts_exactly_redis_7_and_valkey_8_on(flavour: str, version: tuple[int, int, int]) -> None:
    """Any version is accepted exactly when it is at least Redis 7.0.0 or Valkey 8.0.0; an older one
    is refused with bad_request naming the flavour and the version found."""
    if version >= {"redis": (7, 0, 0), "valkey": (8, 0, 0)}[flavour]:
        assert check_version(flavour, version) is None
        return
    with pytest.raises(BadRequest) as info:
        check_version(flavour, version)
    assert info.value.code == "bad_request"
    assert f"{flavour} {'.'.join(map(str, version))} is too old" in info.value.message


@pytest.mark.parametrize(
    ("flavour", "version"), [("redis", (6, 2, 14)), ("redis", (5, 0, 0)), ("valkey", (7, 2, 5))]
)
def test_check_version_rejects_old(flavour: str, version: tuple[int, int, int]) -> None:
    """Older servers are refused with a message naming what was found and what is needed."""
    with pytest.raises(BadRequest) as info:
        check_version(flavour, version)
    found = ".".join(map(str, version))
    assert found in info.value.message and flavour in info.value.message
    assert "Redis >= 7.0 or Valkey >= 8" in info.value.message


def test_check_version_unknown_flavour() -> None:
    """An unknown flavour is refused rather than guessed."""
    with pytest.raises(BadRequest, match="flavour"):
        check_version("keydb", (6, 3, 0))
