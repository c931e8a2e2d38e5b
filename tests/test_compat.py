"""The original RestMQ's names and shapes mapped to ours (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from restmq import compat
from restmq.errors import BadRequest


@pytest.mark.parametrize(
    ("args", "value"),
    [
        ({"value": "v"}, "v"),
        ({"msg": "m"}, "m"),
        ({"msg": "m", "value": "v"}, "m"),
        ({"msg": "", "value": "v"}, "v"),
        ({"msg": ""}, ""),
    ],
)
def test_msg_is_value_and_wins(args: dict[str, Any], value: str) -> None:
    """msg means value; when both are given a non-empty msg wins, as in the original."""
    out = compat.value_alias(dict(args))
    assert out["value"] == value and "msg" not in out


@pytest.mark.parametrize("args", [{}, {"value": ""}, {"msg": ""}, {"msg": "", "value": ""}])
def test_form_value_refuses_nothing(args: dict[str, Any]) -> None:
    """A form add without a non-empty value or msg is a bad request."""
    with pytest.raises(BadRequest, match="missing value"):
        compat.form_value(dict(args))


def test_json_command_args_alias_only_for_add() -> None:
    """In the JSON protocol msg is value for add and left alone elsewhere."""
    assert compat.json_command_args("add", {"queue": "q", "msg": "x"}) == {"queue": "q", "value": "x"}
    assert compat.json_command_args("take", {"queue": "q", "msg": "x"}) == {"queue": "q", "msg": "x"}


@pytest.mark.parametrize(
    ("status", "command"),
    [("start", "resume"), ("resume", "resume"), ("stop", "pause"), ("PAUSE", "pause")],
)
def test_control_status_words(status: str, command: str) -> None:
    """start/stop (original) and resume/pause (ours) name the two commands."""
    assert compat.control_command(status) == command


@pytest.mark.parametrize("status", [None, "", "restart", 1])
def test_control_bad_status_carries_stat(status: Any) -> None:
    """A bad status is a bad_request whose body keeps the original's stat field."""
    with pytest.raises(BadRequest) as info:
        compat.control_command(status)
    body = info.value.to_dict()
    assert body["stat"] == f"invalid status: {status}"
    assert body["code"] == "bad_request" and body["error"].startswith("invalid status")


def test_control_shapes() -> None:
    """Control answers keep the original's nested status and add our state."""
    state = {"queue": "q", "state": "paused", "status": 0}
    status = {"queue": "q", "status": 0}
    assert compat.control_shape(state) == {"queue": "q", "status": status, "state": "paused"}
    assert compat.control_set_shape(state) == {"stat": status, "queue": "q", "state": "paused"}
    assert compat.control_all_shape({"queues": {"q": state}}) == {"queues": {"q": state}, "count": 1}


def test_policy_shape() -> None:
    """The policy answer has the original's value and our policy."""
    answer = {"queue": "q", "policy": "roundrobin", "value": "roundrobin"}
    assert compat.policy_shape(answer) == {"queue": "q", "value": "roundrobin", "policy": "roundrobin"}
