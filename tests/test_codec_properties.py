"""Property tests for the pure codecs and file formats: hostile input gives a clear RestMQError, never
another exception, and what is encoded parses back to what it was."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from restmq import commands
from restmq.acl import Hosts, parse_acl
from restmq.auth import basic_credentials, parse_tokens, token_from_authorization
from restmq.backend.redisconf import parse_redis_url
from restmq.errors import BadRequest, RestMQError
from restmq.wire import collectd, form, line, sse, syslog
from restmq.wire.chunked import json_line, jsonp_line

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

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
    """A JSON command with arbitrary arguments either parses against the table or fails with a RestMQError."""
    obj = {"cmd": name, **args}
    request = line.parse_line(json.dumps(obj))
    if isinstance(request, line.Call):
        try:
            commands.parse(commands.lookup(request.name), request.args)
        except RestMQError:
            pass
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


@FAST
@given(junk)
def test_collectd_bodies_are_parsed_or_refused_with_bad_request(raw):
    """collectd values and notifications: records, or bad_request naming the problem."""
    for parse in (collectd.parse_data, collectd.parse_event):
        try:
            records = parse(raw, 1.0)
        except BadRequest:
            continue
        assert isinstance(records, list)


@FAST
@given(st.text(max_size=300))
def test_auth_and_acl_files_load_or_are_refused_with_a_reason(text):
    """Tokens and ACL files of any text load, or fail with bad_request (never another exception)."""
    for parse in (parse_tokens, parse_acl):
        try:
            parse(text)
        except BadRequest as e:
            assert e.message


@FAST
@given(st.text(max_size=80), st.text(max_size=40))
def test_address_lists_match_or_refuse_cleanly(entries, host):
    """hosts_allow/hosts_deny entries parse or are refused; matching any host string never raises."""
    try:
        hosts = Hosts.parse(entries, "test")
    except BadRequest:
        return
    assert hosts.match(host) in (True, False)


@FAST
@given(st.text(max_size=60) | st.binary(max_size=60))
def test_authorization_headers_never_raise(header):
    """Any Authorization header yields a token or None, Basic credentials or None."""
    token = token_from_authorization(header)
    assert token is None or isinstance(token, str)
    creds = basic_credentials(header)
    assert creds is None or len(creds) == 2


@FAST
@given(st.text(max_size=80))
def test_redis_urls_parse_or_are_refused_with_bad_request(url: Any):
    """--redis of any text is a target or bad_request."""
    try:
        parse_redis_url(url)
    except BadRequest:
        pass
