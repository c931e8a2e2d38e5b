"""The original RestMQ's names and answer shapes, mapped to ours (docs/compatibility.md). Pure.

Front ends call these so an original client keeps working unchanged: ``msg`` is another name for
``value``; ``/control`` speaks ``status=start|stop`` and answers ``{"stat": …}``; and so on. New
fields of ours are added beside the original ones, never instead of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from restmq.errors import BadRequest

#: ``POST /control/<q>`` ``status=`` values -> our commands (``resume``/``pause`` are ours).
CONTROL_STATUS: dict[str, str] = {
    "start": "resume",
    "resume": "resume",
    "stop": "pause",
    "pause": "pause",
}


def value_alias(args: dict[str, Any]) -> dict[str, Any]:
    """Fold the original's ``msg`` into ``value`` in place (``msg`` wins when both are given and it
    is not empty, as the original's ``msg or value``); answers ``args``."""
    if "msg" in args:
        msg = args.pop("msg")
        if msg not in (None, "") or "value" not in args:
            args["value"] = msg
    return args


def form_value(args: dict[str, Any]) -> dict[str, Any]:
    """A form add's arguments: ``msg``/``value`` folded, and an empty or missing value refused (a
    form cannot tell "nothing" from "", so the original refused both)."""
    value_alias(args)
    if args.get("value") in (None, ""):
        raise BadRequest("missing value: send value= (or msg=) with the message")
    return args


def json_command_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The JSON protocol's fields for command ``name``: ``msg`` is ``value`` for ``add``."""
    return value_alias(args) if name == "add" else args


def control_command(status: Any) -> str:
    """The command for a ``/control`` ``status=``; anything else is ``bad_request`` carrying the
    original's ``{"stat": "invalid status: …"}`` field."""
    command = CONTROL_STATUS.get(status.lower()) if isinstance(status, str) else None
    if command is None:
        stat = f"invalid status: {status}"[:200]
        raise BadRequest(f"{stat} (use start, stop, pause or resume)", stat=stat)
    return command


def _status(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"queue": state["queue"], "status": state["status"]}


def control_shape(state: Mapping[str, Any]) -> dict[str, Any]:
    """``GET /control/<q>``: ``{"queue", "status": {"queue", "status": 1|0}}`` + our ``state``."""
    return {"queue": state["queue"], "status": _status(state), "state": state["state"]}


def control_set_shape(state: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /control/<q>``: ``{"stat": {"queue", "status": 1|0}}`` + our ``queue``, ``state``."""
    return {"stat": _status(state), "queue": state["queue"], "state": state["state"]}


def control_all_shape(answer: Mapping[str, Any]) -> dict[str, Any]:
    """``GET /control/``: every queue's ``{"queue", "status", "state"}`` and how many there are."""
    queues = answer["queues"]
    return {"queues": dict(queues), "count": len(queues)}


def policy_shape(answer: Mapping[str, Any]) -> dict[str, Any]:
    """``/p/<q>``: the original's ``{"queue", "value"}`` plus our ``policy``."""
    return {"queue": answer["queue"], "value": answer["value"], "policy": answer["policy"]}
