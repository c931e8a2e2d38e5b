"""Value types passed from the engine to the dispatcher (read-only); each knows its JSON shape."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from restmq.wire.chunked import dumps


#: A JSON string with no escape in it (no backslash, no quote, no control character inside): its
#: text is the UTF-8 between the quotes, exactly what json.loads would give.
_PLAIN_TEXT = re.compile(rb'"[^"\\\x00-\x1f]*"')


@dataclass(slots=True)
class Message:
    """One message as stored: ``value_json`` is the JSON text kept in Redis, decoded on demand.

    Read-only by convention, not frozen: a frozen dataclass sets each of its eleven fields through
    ``object.__setattr__``, 1.4 µs per message against 0.25 µs, and every take, reserve and
    stream delivery builds one per message.

    ``count`` is how many times the original soft ``get`` looked at it (0 for a plain take), kept in
    every answer because original clients read it.
    """

    queue: str
    n: int
    value_json: bytes
    priority: int
    attempts: int
    enqueued_ms: int
    count: int = 0
    receipt: str = ""
    lease_until_ms: int = 0
    error: str = ""
    event_id: str = ""

    @property
    def key(self) -> str:
        return f"{self.queue}:{self.n}"

    @property
    def value(self) -> Any:
        raw = self.value_json
        if _PLAIN_TEXT.fullmatch(raw):  # most values: text with nothing escaped, read as it is
            return raw[1:-1].decode("utf-8", "surrogatepass")
        return json.loads(raw)

    def to_dict(self) -> dict[str, Any]:
        """The message shape of docs/commands.md plus ``count``; ``receipt`` and ``lease_until`` when reserved,
        ``error`` when a nack said why it failed, ``event_id`` (its replay id) when it was broadcast."""
        shape = {
            "key": self.key,
            "queue": self.queue,
            "value": self.value,
            "priority": self.priority,
            "attempts": self.attempts,
            "enqueued_at": self.enqueued_ms / 1000.0,
            "count": self.count,
        }
        if self.receipt:
            shape["receipt"] = self.receipt
            shape["lease_until"] = self.lease_until_ms / 1000.0
        if self.error:
            shape["error"] = self.error
        if self.event_id:
            shape["event_id"] = self.event_id
        return shape


@dataclass(frozen=True, slots=True)
class QueueLength:
    """How many messages a queue holds in each state."""

    ready: int
    reserved: int
    delayed: int
    dead: int

    @property
    def total(self) -> int:
        """What the original RestMQ called the queue's ``len``: everything still owed to consumers."""
        return self.ready + self.reserved + self.delayed

    def to_dict(self) -> dict[str, int]:
        return {"ready": self.ready, "reserved": self.reserved, "delayed": self.delayed, "dead": self.dead}


@dataclass(frozen=True, slots=True)
class QueueState:
    """A queue's delivery switch and stream policy."""

    queue: str
    paused: bool
    policy: str

    @property
    def state(self) -> str:
        return "paused" if self.paused else "running"


def encode_value(value: Any) -> bytes:
    """The JSON text stored for a message value (text stays text: "42" is kept as a string); a
    lone surrogate (a JSON ``"\\ud800"`` escape, which UTF-8 cannot carry) stays escaped."""
    return dumps(value)


def add_answer(queue: str, value: Any, number: int, ready: int | None) -> dict[str, Any]:
    """``add``'s answer from the number add.lua gave (negative: a duplicate)."""
    answer: dict[str, Any] = {"queue": queue, "value": value, "key": f"{queue}:{abs(number)}"}
    if number < 0:
        answer["duplicate"] = True
    if ready is not None:
        answer["len"] = ready
    return answer


def add_many_answer(queue: str, numbers: list[int], ready: int | None) -> dict[str, Any]:
    """``add_many``'s answer from the numbers add.lua gave (negative: duplicates)."""
    answer: dict[str, Any] = {"queue": queue, "keys": [f"{queue}:{abs(n)}" for n in numbers]}
    if min(numbers) < 0:
        answer["duplicates"] = [i for i, n in enumerate(numbers) if n < 0]
    if ready is not None:
        answer["len"] = ready
    return answer
