"""Property tests for the pure codecs and file formats: hostile input gives a clear RestMQError, never
another exception, and what is encoded parses back to what it was."""

from __future__ import annotations

import base64
import ipaddress
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from restmq import commands
from restmq.acl import CATEGORIES, Hosts, parse_acl
from restmq.auth import RIGHTS, Grant, basic_credentials, parse_tokens, token_from_authorization
from restmq.backend.redisconf import parse_redis_url
from restmq.errors import BadRequest, RestMQError
from restmq.wire import collectd, form, line, sse, syslog
from restmq.wire.chunked import json_line, jsonp_line
from tests.conftest import examples

FAST = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: JSON values as clients send them (no NaN: JSON has none).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
junk = st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))


@FAST
@given(junk)
def test_any_line_parses_to_a_request_and_never_raises(raw):
    """Every byte string is some line-protocol request (an Invalid one carries a RestMQError)."""
    request = line.parse_line(raw)
    if isinstance(request, line.Invalid):
        assert isinstance(request.error, RestMQError)


@FAST
@given(st.sampled_from(sorted(commands.COMMANDS)), st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_any_json_command_is_parsed_or_refused_with_a_restmq_error(name, args):
    """A JSON command with arbitrary arguments either parses against the table (to exactly the
    command's arguments, defaults filled) or fails with a RestMQError that has a message."""
    obj = {"cmd": name, **args}
    request = line.parse_line(json.dumps(obj))
    if isinstance(request, line.Call):
        command = commands.lookup(request.name)
        try:
            parsed = commands.parse(command, request.args)
        except RestMQError as e:
            assert e.message
        else:
            assert set(parsed) == {arg.name for arg in command.args}
    else:
        assert isinstance(request, line.Invalid) and isinstance(request.error, RestMQError)


@FAST
@given(json_values)
def test_encoded_answers_are_one_json_line_that_parses_back(value):
    """Line answers and COMET lines are one line of JSON that decodes to the value."""
    for encoded in (line.encode(value), json_line(value)):
        assert encoded.count(b"\n") == 1 and encoded.endswith(b"\n")
        assert json.loads(encoded) == value
    wrapped = jsonp_line("cb", value)
    assert wrapped.startswith(b"cb(") and b"\xe2\x80\xa8" not in wrapped


@FAST
@given(junk, st.sampled_from([None, b"application/json", b"application/x-www-form-urlencoded", b"text/plain",
                              b"multipart/form-data; boundary=xx", b"multipart/form-data"]))
def test_any_http_body_is_read_or_refused_with_bad_request(raw, content_type):
    """Request bodies of any content type are decoded or refused with bad_request, never another error."""
    for reader in (form.read_body, form.json_protocol_body):
        try:
            reader(raw, content_type)
        except BadRequest:
            pass


@FAST
@given(st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: "\n" not in k and "\r" not in k),
                       json_values, max_size=3),
       st.text(max_size=30).filter(lambda t: "\r" not in t and "\n" not in t))
def test_sse_events_parse_back_to_what_was_sent(message, reason):
    """A message event and an end event, in one stream, parse back to their data."""
    message = {**message, "key": "q:1"}
    stream = sse.message_event(message) + sse.comment("ping") + sse.end_event(reason)
    events = list(sse.parse(stream))
    assert json.loads(events[0].data) == json.loads(json.dumps(message))
    assert events[-1].event == "end" and json.loads(events[-1].data)["reason"] == reason


@FAST
@given(junk)
def test_syslog_lines_always_decode_to_a_record(raw):
    """Any received line becomes a record with its text and a priority that is either decoded or absent."""
    text = syslog.decode_line(raw)
    record = syslog.record(text, "127.0.0.1", 1.0)
    assert record["host"] == "127.0.0.1" and isinstance(record["line"], str)


def assert_refusal(error: BadRequest, names: str = "") -> None:
    """A refusal is a bad_request with a message (that starts by naming ``names`` when given)."""
    assert error.code == "bad_request" and error.message.strip()
    assert error.message.startswith(names), error.message


def assert_collectd_record(record: Any, kind: str) -> None:
    """The invariants of one collectd record (restmq.wire.collectd's docstring): JSON, named parts
    of at most 128 characters, a non-negative time, and values (data) or a severity (events)."""
    assert isinstance(record, dict)
    json.dumps(record, allow_nan=False)  # stored as a JSON message: no NaN, no infinity
    parts = ("host", "plugin", "type") if kind == "data" else ()
    for name in ("host", "plugin", "plugin_instance", "type", "type_instance"):
        if name in record:
            assert isinstance(record[name], str) and len(record[name]) <= collectd.MAX_NAME
    for name in parts:
        assert record[name], name
    assert isinstance(record["time"], int | float) and record["time"] >= 0
    if kind == "data":
        values = record["values"]
        assert isinstance(values, list) and values
        assert all(v is None or isinstance(v, int | float) for v in values)
        assert record["interval"] is None or record["interval"] > 0 or "dsnames" in record
    else:
        assert record["severity"] in collectd.SEVERITIES and isinstance(record["message"], str)


@FAST
@given(junk)
def test_collectd_bodies_are_parsed_or_refused_with_bad_request(raw):
    """collectd values and notifications: a non-empty list of well-formed records, or bad_request
    with a message."""
    for parse, kind in ((collectd.parse_data, "data"), (collectd.parse_event, "event")):
        try:
            records = parse(raw, 1.0)
        except BadRequest as e:
            assert_refusal(e)
            continue
        assert isinstance(records, list) and records
        for record in records:
            assert_collectd_record(record, kind)


def quoted(text: str) -> str:
    """``text`` as collectd's plain-text protocol quotes a string (backslash before ``"`` and ``\\``)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: Identifier parts: any text without the separators ``/`` and ``-`` or line breaks.
name_parts = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="/-"),
    min_size=1, max_size=12,
)
numbers = st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)


@FAST
@given(name_parts, name_parts, st.none() | name_parts, name_parts, st.none() | name_parts,
       st.none() | st.floats(min_value=0.001, max_value=1e6),
       st.dictionaries(st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True), st.text(
           st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
           max_size=12), max_size=2),
       st.lists(st.tuples(st.integers(0, 2**40) | st.floats(0, 1e12),
                          st.lists(st.none() | numbers, min_size=1, max_size=4)), min_size=1, max_size=3))
def test_putval_lines_parse_back_to_their_records(host, plugin, plugin_instance, type_, type_instance,
                                                  interval, meta, lists):
    """A PUTVAL line written from an identifier, an interval, meta strings and value lists parses to
    one record per value list holding exactly those (U is null; integers stay integers)."""
    ident = f"{host}/{plugin}{'-' + plugin_instance if plugin_instance else ''}/{type_}"
    ident += f"-{type_instance}" if type_instance else ""
    spelled = [f"{time!r}:" + ":".join("U" if v is None else repr(v) for v in values) for time, values in lists]
    options = ([f"interval={interval!r}"] if interval is not None else []) + [
        f"meta:{key}={quoted(text)}" for key, text in meta.items()]
    body = f"PUTVAL {quoted(ident)} {' '.join(options)} {' '.join(spelled)}\n"
    records = collectd.parse_data(body.encode("utf-8"), 1.0)
    base = {"host": host, "plugin": plugin, "plugin_instance": plugin_instance or "", "type": type_,
            "type_instance": type_instance or "", "interval": interval}
    expected = [{**base, "time": time, "values": values, **({"meta": meta} if meta else {})}
                for time, values in lists]
    assert records == expected
    assert [[type(v) for v in r["values"]] for r in records] == [[type(v) for v in vs] for _, vs in lists]


@FAST
@given(st.text(max_size=300) | st.lists(st.sampled_from(
    ["[rest:producer]", "[sse:consumer]", "[nope]", "hosts_allow = 127.0.0.1, 10.0.0.0/8", "hosts_deny = all",
     "hosts_deny = 10.0.0.0/99", "username = u", "password = p # c", "colour = red", "t1 read q*", "t2 admin *",
     "t3 write,read a b", "t4 fly q", "t5 read", "# comment", ""]), max_size=8).map("\n".join))
def test_auth_and_acl_files_load_or_are_refused_with_a_reason(text):
    """Tokens and ACL files of any text load to well-formed rules (every token of a listed line, with
    known rights and at least one queue pattern; only known ACL sections), or fail with bad_request
    whose message starts with the file's name."""
    try:
        grants = parse_tokens(text, "tokens.conf")
    except BadRequest as e:
        assert_refusal(e, "tokens.conf")
    else:
        listed = {said[0]: said for said in (line.split("#", 1)[0].split() for line in text.splitlines()) if said}
        assert set(grants) == set(listed)
        for token, grant in grants.items():
            assert grant.rights and grant.rights <= set(RIGHTS)
            assert grant.patterns and grant.patterns == tuple(listed[token][2:])
    try:
        rules = parse_acl(text, "acl.conf")
    except BadRequest as e:
        assert_refusal(e, "acl.conf")
    else:
        assert set(rules) <= set(CATEGORIES)
        for rule in rules.values():
            assert isinstance(rule.allow, Hosts) and isinstance(rule.deny, Hosts)


#: Tokens file words: no blanks, no ``#`` (a comment).
file_words = st.text(st.characters(blacklist_categories=("Z", "Cc", "Cs"), blacklist_characters="#"),
                min_size=1, max_size=10)


@FAST
@given(st.dictionaries(file_words, st.tuples(st.frozensets(st.sampled_from(RIGHTS), min_size=1),
                                             st.lists(file_words, min_size=1, max_size=3)), max_size=5),
       st.booleans())
def test_a_written_tokens_file_parses_back_to_its_grants(grants, comments):
    """A tokens file written line by line (with comments and blank lines or not) gives back each
    token with its rights and patterns."""
    lines = ["# tokens", ""] if comments else []
    for token, (rights, patterns) in grants.items():
        lines.append(f"{token} {','.join(sorted(rights))} {' '.join(patterns)}" + ("  # who" if comments else ""))
    parsed = parse_tokens("\n".join(lines))
    assert parsed == {token: Grant(rights, tuple(patterns)) for token, (rights, patterns) in grants.items()}


@FAST
@given(st.text(max_size=80) | st.lists(st.sampled_from(["10.0.0.1", "10.0.0.0/8", "::1", "::ffff:10.0.0.2", "all",
                                                         "192.168.", "fe80::/10", "ALL", "x", "10.0.0.0/33"]),
                                       max_size=4).map(", ".join),
       st.text(max_size=40) | st.sampled_from(["10.0.0.1", "::1", "::ffff:10.0.0.1", "192.168.1.1", "8.8.8.8"]))
def test_address_lists_match_or_refuse_cleanly(entries, host):
    """hosts_allow/hosts_deny entries parse or are refused with bad_request naming where; a parsed
    list matches any host string with a yes or no: yes for everything with ``all``, no for
    everything when empty, yes for each address it lists."""
    try:
        hosts = Hosts.parse(entries, "acl [rest:producer] hosts_allow")
    except BadRequest as e:
        assert_refusal(e, "acl [rest:producer] hosts_allow")
        return
    listed = entries.replace(",", " ").split()
    assert isinstance(hosts.match(host), bool)
    if any(entry.lower() == "all" for entry in listed):
        assert hosts.match(host)
    if not listed:
        assert not hosts.match(host)
    for entry in listed:
        if "/" not in entry and entry.lower() != "all" and valid_address(entry):
            assert hosts.match(entry), entry


def valid_address(text: str) -> bool:
    """Whether ``text`` is an IP address (IPv6 with or without brackets)."""
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


@FAST
@given(st.lists(st.ip_addresses(v=4, network="10.0.0.0/8"), max_size=4),
       st.lists(st.integers(0, 255), max_size=3), st.integers(0, 2**16 - 1), st.booleans())
def test_listed_addresses_and_networks_match_and_others_do_not(addresses, networks, offset, mapped):
    """Listed addresses and every address inside a listed network match (also written as IPv4-mapped
    IPv6); an address outside them all does not."""
    cidrs = [ipaddress.ip_network(f"10.{n}.0.0/16") for n in networks]
    hosts = Hosts.parse(", ".join([*map(str, addresses), *map(str, cidrs)]), "test")
    spell = (lambda a: f"::ffff:{a}") if mapped else str
    for address in addresses:
        assert hosts.match(spell(address))
    for network in cidrs:
        assert hosts.match(spell(network.network_address + offset))
    assert not hosts.match(spell(ipaddress.ip_address("192.0.2.1")))


@FAST
@given(st.text(max_size=60) | st.binary(max_size=60))
def test_authorization_headers_never_raise(header):
    """Any Authorization header yields a token or None, Basic credentials or None."""
    token = token_from_authorization(header)
    assert token is None or isinstance(token, str)
    creds = basic_credentials(header)
    assert creds is None or len(creds) == 2


@FAST
@given(file_words, st.text(st.characters(blacklist_characters=":"), max_size=20), file_words)
def test_authorization_headers_give_back_their_token_and_credentials(token, user, password):
    """``Bearer TOKEN`` gives back the token; HTTP Basic of ``user:password`` (a user without a colon,
    RFC 7617) gives back both, and
    the password as the token."""
    assert token_from_authorization(f"Bearer {token}") == token.strip()
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    assert basic_credentials(basic) == (user, password)
    assert token_from_authorization(basic.encode("latin-1")) == password


@FAST
@given(st.text(max_size=80))
def test_redis_urls_parse_or_are_refused_with_bad_request(url: Any):
    """--redis of any text is a well-formed target (its kind's fields set, a port in range, a
    display that hides the password) or bad_request."""
    try:
        target = parse_redis_url(url)
    except BadRequest as e:
        assert_refusal(e)
        return
    assert target.kind in ("tcp", "unix", "sentinel") and target.db >= 0
    if target.kind == "tcp":
        assert isinstance(target.host, str) and 0 < target.port < 65536 and target.path is None
    elif target.kind == "unix":
        assert target.path and target.host is None
    else:
        assert target.master and target.sentinels
        assert all(isinstance(h, str) and 0 < p < 65536 for h, p in target.sentinels)
    if target.password:
        assert ":***@" in target.display()
