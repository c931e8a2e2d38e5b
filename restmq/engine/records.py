"""Stored records and script answers -> :class:`~restmq.model.Message`: the one place that knows
the record layout ``priority:enqueued_ms:attempts:expire_ms:value`` (see lua/_lib.lua)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from restmq.engine import keys as K
from restmq.model import Message


def parse_record(
    queue: str,
    n: bytes | int,
    record: bytes,
    seen: bytes | int = 0,
    receipt: bytes = b"",
    until: int = 0,
    error: bytes = b"",
) -> Message:
    """Turn a stored record ``priority:enqueued_ms:attempts:expire_ms:value`` into a Message (a
    unique message's value carries :data:`~restmq.engine.keys.UNIQUE_MARK` first: not shown)."""
    priority, enqueued, attempts, _expire, value = record.split(b":", 4)
    if value[:1] == K.UNIQUE_MARK:
        value = value[1:]
    return Message(
        queue, int(n), value, int(priority), int(attempts), int(enqueued), int(seen),
        receipt.decode() if receipt else "", until, error.decode("utf-8", "replace") if error else "",
    )


def parse_reads(queue: str, flat: Sequence[Any]) -> list[Message]:
    """read.lua answers ``n, record, seen, last error`` for each message."""
    return [
        parse_record(queue, flat[i], flat[i + 1], flat[i + 2], error=flat[i + 3])
        for i in range(0, len(flat), 4)
    ]


def parse_deliveries(queue: str, flat: Sequence[Any]) -> list[Message]:
    """take.lua's answer after its status: the lease deadline, then ``n, record, seen, receipt``."""
    until = int(flat[0])
    return [
        parse_record(queue, flat[i], flat[i + 1], flat[i + 2], flat[i + 3], until)
        for i in range(1, len(flat), 4)
    ]


def parse_broadcast(queue: str, event_id: bytes, body: bytes) -> Message:
    """A broadcast message as published and replayed: ``<n>|<seen>|<record>`` with its replay id."""
    n, seen, record = body.split(b"|", 2)
    return dataclasses.replace(parse_record(queue, n, record, seen), event_id=event_id.decode())
