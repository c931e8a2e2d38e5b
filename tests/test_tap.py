"""Options for twistd restmq / restmq serve / the tac: one parser, original aliases, safe defaults."""

from __future__ import annotations

import pytest
from twisted.python import usage

from restmq.config import Config, is_loopback
from restmq.tap import argv_from_env, config_from_env, parse


def test_defaults_are_the_documented_ones():
    """No options gives HTTP on 127.0.0.1:8888, the line protocol on 8889 and an embedded Redis."""
    assert parse([]) == Config()
    assert Config().http == "tcp:8888:interface=127.0.0.1"
    assert Config().line == "tcp:8889:interface=127.0.0.1"
    assert Config().redis is None and Config().syslog is None


def test_every_option_reaches_the_config():
    """Each long option sets its field."""
    config = parse([
        "--http", "tcp:0:interface=127.0.0.1", "--line", "none", "--syslog", "tcp:0:interface=127.0.0.1",
        "--redis", "redis://127.0.0.1:7000/2", "--data", "/tmp/x", "--durability", "always",
        "--redis-pool", "3", "--redis-timeout", "0.5", "--max-message-size", "1000",
        "--default-policy", "roundrobin", "--log-format", "json", "--replay", "0",
    ])
    assert config == Config(
        http="tcp:0:interface=127.0.0.1", line=None, syslog="tcp:0:interface=127.0.0.1",
        redis="redis://127.0.0.1:7000/2", data="/tmp/x", durability="always", redis_pool=3,
        redis_timeout=0.5, max_message_size=1000, default_policy="roundrobin", log_format="json",
        replay=0,
    )


def test_original_daemon_options_are_aliases():
    """--port/--listen build the HTTP endpoint and --redis-host/port/db the Redis URL."""
    config = parse(["--port", "9999", "--listen", "127.0.0.2", "--redis-host", "127.0.0.1",
                    "--redis-port", "7001", "--redis-db", "3"])
    assert config.http == "tcp:9999:interface=127.0.0.2"
    assert config.redis == "redis://127.0.0.1:7001/3"


@pytest.mark.parametrize("argv", [
    ["--durability", "sometimes"],
    ["--default-policy", "random"],
    ["--redis-pool", "0"],
    ["--max-message-size", "-1"],
    ["--redis-timeout", "abc"],
    ["--log-format", "xml"],
    ["--replay", "-1"],
    ["--redis", "redis://a", "--redis-host", "b"],
])
def test_bad_options_are_usage_errors(argv):
    """Bad values are refused with a usage error, not a traceback at start."""
    with pytest.raises(usage.UsageError):
        parse(argv)


@pytest.mark.parametrize("endpoint", ["tcp:8888", "tcp:8888:interface=0.0.0.0", "tcp:80:interface=10.1.2.3"])
def test_public_bind_needs_insecure(endpoint):
    """Listening beyond loopback without authentication is refused unless --insecure is given."""
    with pytest.raises(usage.UsageError, match="--insecure"):
        parse(["--http", endpoint])
    assert parse(["--http", endpoint, "--insecure"]).http == endpoint


@pytest.mark.parametrize("endpoint,expected", [
    ("tcp:1:interface=127.0.0.1", True),
    ("tcp:1:interface=localhost", True),
    (r"tcp:1:interface=\:\:1", True),
    ("unix:/tmp/restmq.sock", True),
    ("tcp:1", False),
    (r"tcp:1:interface=\:\:", False),
    ("ssl:1:privateKey=k.pem:interface=192.168.1.1", False),
])
def test_loopback_detection(endpoint, expected):
    """Endpoint strings are classified loopback or not, IPv6 escapes included."""
    assert is_loopback(endpoint) is expected


def test_tac_reads_restmq_variables():
    """RESTMQ_* variables feed the same parser as the command line."""
    env = {"RESTMQ_HTTP": "tcp:0:interface=127.0.0.1", "RESTMQ_MAX_MESSAGE_SIZE": "2048",
           "RESTMQ_INSECURE": "yes", "RESTMQ_LINE": "none", "HOME": "/root"}
    assert argv_from_env(env) == ["--http", "tcp:0:interface=127.0.0.1", "--line", "none",
                                  "--max-message-size", "2048", "--insecure"]
    config = config_from_env(env)
    assert config.max_message_size == 2048 and config.line is None and config.insecure
