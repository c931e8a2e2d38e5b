"""Coalescing: a connection's consecutive commands of one kind on one queue run as ONE script.

A pipelined client (line protocol, RESP, memcached) sends a thousand ``add q …`` before it reads
an answer; run one at a time they cost a thousand Redis round trips. The shared
:class:`~restmq.frontends.pipeline.Pipeline` hands runs of consecutive commands with the same
:func:`run_key` to :meth:`Dispatcher.execute_run <restmq.dispatch.Dispatcher.execute_run>`, which
comes here. Each command is still checked, authorized and answered on its own, in order:

- ``add`` / ``add_many`` (RESP ``LPUSH``/``RPUSH``): one add.lua call for the whole run, each item
  with its own options (priority, ttl, delay, dedup, unique); each command gets its own keys and
  duplicates, and with ``len`` the ready length just after *its* items (worked out from the
  script's final length, so LPUSH needs no second script). A ``queue_full`` refusal applies nothing,
  so the run is then replayed one command at a time, each getting what it would have alone.
- ``take`` (RESP ``LPOP``/``RPOP``, memcached ``get``) and ``reserve`` (same lease) without
  ``wait``: one take.lua call for the sum of their counts, messages handed out in command order.
- ``ack``: one ack.lua call; each ack is all or nothing on its own (a stale receipt fails only
  its own command).

A command the table refuses (a bad argument, a missing right, a value too large) gets its own error
and is left out; the others still run together. A command that cannot be coalesced (a take that
waits, a take over several queues) runs on its own in its place, so effects keep command order:
``add`` then ``take`` in one pipeline sees the add. Every script still goes through
``QueueEngine._script``, so a coalesced call that Redis ran too late is undone as a whole (#8).

Across connections, the :class:`Merger` turns the engine calls that runs of different connections
make in the same reactor turn (same kind, queue and lease) into one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from twisted.internet import defer
from twisted.python.failure import Failure

from restmq.commands import MAX_COUNT
from restmq.errors import Empty, QueueFull, RestMQError
from restmq.latency import Latency
from restmq.model import add_answer, add_many_answer
from restmq.ports import Principal


class Dispatcher(Protocol):
    """What coalescing needs of :class:`restmq.dispatch.Dispatcher` (which calls it)."""

    engine: Any
    latency: Latency
    errors: Counter[str]

    def prepare(self, name: str, args: Mapping[str, Any], principal: Principal) -> dict[str, Any]: ...

    def run_parsed(self, name: str, parsed: dict[str, Any], principal: Principal) -> Any: ...

    def _encode(self, value: Any) -> bytes: ...

#: The commands that coalesce, by kind: commands of one kind on one queue share a script.
KINDS = {"add": "add", "add_many": "add", "take": "take", "reserve": "reserve", "ack": "ack"}

#: Most messages (adds, takes) or receipts one coalesced script handles: about the size of an
#: ``add_many`` or a ``take count=1000``, so no coalesced script holds Redis much longer than one
#: batch command a client could send anyway.
MAX_ITEMS = MAX_COUNT


def run_key(name: str, args: Mapping[str, Any]) -> Hashable | None:
    """What consecutive commands must share to be handed over as one run (their kind and their
    queue, as sent), or None for a command that always runs alone."""
    kind = KINDS.get(name)
    queue = args.get("queue") if kind is not None else None
    if not isinstance(queue, (str, bytes)):
        return None
    return kind, queue


#: One checked command of a run: (its index in the run, name, parsed arguments).
Prepared = tuple[int, str, dict[str, Any]]


def _group_key(name: str, parsed: dict[str, Any]) -> Hashable | None:
    """Commands with the same group key run in one script; None: this one runs alone."""
    if name in ("add", "add_many") or (name == "ack" and not parsed["next"]):
        return KINDS[name]
    if name == "take" and parsed["queues"] is None and parsed["queue"] is not None and parsed["wait"] <= 0:
        return "take"
    if name == "reserve" and parsed["wait"] <= 0:
        return "reserve", parsed["lease"]
    return None


def _size(name: str, parsed: dict[str, Any]) -> int:
    """How many messages or receipts a command brings to its script."""
    if name == "add_many":
        return len(parsed["messages"])
    if name == "ack":
        return len(parsed["receipt"])
    if name in ("take", "reserve"):
        return int(parsed["count"] or 1)
    return 1


async def execute_run(
    dispatcher: Dispatcher, calls: Sequence[tuple[str, Mapping[str, Any]]], principal: Principal, frontend: str
) -> list[Any]:
    """Each command's answer, or its Failure, in order (see the module docstring)."""
    start = time.monotonic()
    results: list[Any] = [None] * len(calls)
    prepared: list[tuple[Prepared, Hashable | None, int]] = []
    for i, (name, args) in enumerate(calls):
        try:
            parsed = dispatcher.prepare(name, args, principal)
        except RestMQError as e:
            results[i] = Failure(e)
            continue
        prepared.append(((i, name, parsed), _group_key(name, parsed), _size(name, parsed)))
    group: list[Prepared] = []
    key: Hashable | None = None
    items = 0
    for entry, entry_key, size in prepared:
        if group and (entry_key is None or entry_key != key or items + size > MAX_ITEMS):
            await _run_group(dispatcher, key, group, results, principal)
            group, items = [], 0
        group.append(entry)
        key, items = entry_key, items + size
    if group:
        await _run_group(dispatcher, key, group, results, principal)
    elapsed = time.monotonic() - start
    counts: dict[str, int] = {}
    for name, _ in calls:
        counts[name] = counts.get(name, 0) + 1
    for name, count in counts.items():
        dispatcher.latency.observe(frontend, name if name in KINDS else "unknown", elapsed, count)
    for result in results:
        if isinstance(result, Failure) and isinstance(result.value, RestMQError):
            dispatcher.errors[result.value.code] += 1
    return results


async def _run_group(
    dispatcher: Dispatcher, key: Hashable | None, group: list[Prepared], results: list[Any], principal: Principal
) -> None:
    """Run one group: a lone command as the dispatcher runs it, else one script for all."""
    if key is None or len(group) == 1:
        for i, name, parsed in group:
            await _alone(dispatcher, i, name, parsed, results, principal)
        return
    runner = RUNNERS[key if isinstance(key, str) else key[0]]  # type: ignore[index]
    try:
        await runner(dispatcher, group, results)
    except QueueFull:
        # Nothing was applied: replay it one command at a time, each answered as if alone.
        for i, name, parsed in group:
            await _alone(dispatcher, i, name, parsed, results, principal)
    except Exception:
        failure = Failure()
        for i, _, _ in group:
            if results[i] is None:
                results[i] = failure


async def _alone(
    dispatcher: Dispatcher, i: int, name: str, parsed: dict[str, Any], results: list[Any], principal: Principal
) -> None:
    try:
        results[i] = await dispatcher.run_parsed(name, parsed, principal)
    except Exception:
        results[i] = Failure()


def _item(dispatcher: Dispatcher, m: Mapping[str, Any]) -> tuple[bytes, int, float, float, str | None, bool]:
    return dispatcher._encode(m["value"]), m["priority"], m["ttl"], m["delay"], m["dedup"], m["unique"]


async def _adds(dispatcher: Dispatcher, group: list[Prepared], results: list[Any]) -> None:
    queue = group[0][2]["queue"]
    items: list[tuple[bytes, int, float, float, str | None, bool]] = []
    spans: list[tuple[int, str, dict[str, Any], int, int]] = []
    for i, name, parsed in group:
        try:
            own = [_item(dispatcher, parsed)] if name == "add" else [_item(dispatcher, m) for m in parsed["messages"]]
        except RestMQError as e:  # too large: this command alone fails
            results[i] = Failure(e)
            continue
        spans.append((i, name, parsed, len(items), len(items) + len(own)))
        items += own
    if not items:
        return
    numbers, ready = await _merger(dispatcher).call(("add", queue), items)
    # The ready length after item k is the final one less the ready adds after k.
    after = [0] * (len(items) + 1)
    for k in range(len(items) - 1, -1, -1):
        after[k] = after[k + 1] + (1 if numbers[k] > 0 and not items[k][3] else 0)
    for i, name, parsed, first, end in spans:
        length = ready - after[end] if parsed["len"] else None
        if name == "add":
            results[i] = add_answer(queue, parsed["value"], numbers[first], length)
        else:
            results[i] = add_many_answer(queue, numbers[first:end], length)


async def _deliveries(dispatcher: Dispatcher, group: list[Prepared], results: list[Any]) -> None:
    """Takes, or reserves with one lease: one script for the sum of their counts."""
    name, queue = group[0][1], group[0][2]["queue"]
    total = sum(int(parsed["count"] or 1) for _, _, parsed in group)
    messages = [m.to_dict() for m in await _merger(dispatcher).call((name, queue, group[0][2].get("lease")), total)]
    if name == "take":
        for m in messages:
            m["count"] = 0  # as a lone take answers: only soft gets count looks
    at = 0
    for i, _, parsed in group:
        want = int(parsed["count"] or 1)
        if parsed["count"] is not None:
            results[i] = messages[at:at + want]
        elif at < len(messages):
            results[i] = messages[at]
        else:
            results[i] = Failure(Empty("empty queue"))
        at += want


async def _acks(dispatcher: Dispatcher, group: list[Prepared], results: list[Any]) -> None:
    queue = group[0][2]["queue"]
    outcomes = await _merger(dispatcher).call(("ack", queue), [parsed["receipt"] for _, _, parsed in group])
    for (i, _, _), outcome in zip(group, outcomes):
        results[i] = Failure(outcome) if isinstance(outcome, RestMQError) else {"queue": queue, "acked": outcome}


RUNNERS: dict[str, Callable[[Any, list[Prepared], list[Any]], Any]] = {
    "add": _adds,
    "take": _deliveries,
    "reserve": _deliveries,
    "ack": _acks,
}


# -- across connections: one engine call per kind and queue per reactor turn ---------------------


class Merger:
    """Engine calls of one kind on one queue that runs of *different* connections ask for in the
    same reactor turn are merged into one: the first schedules the call for the end of the turn
    (``callLater(0)``: after every connection read in this turn has been handled), and each gets
    its own part of the answer back. Under load, 50 connections pipelining 16 commands each cost
    one script instead of 50; alone, a run waits no more than one reactor iteration. The merged
    call is one ``QueueEngine`` call: deadlines, late undo (#8) and errors apply to it whole, and
    a ``queue_full`` refusal (nothing applied) sends each run back to one-by-one."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.engine = dispatcher.engine
        #: Per key: how many items are gathered, and each part with the Deferred it waits on.
        self.pending: dict[Hashable, tuple[list[int], list[tuple[Any, defer.Deferred[Any]]]]] = {}

    def call(self, key: tuple[Any, ...], payload: Any) -> defer.Deferred[Any]:
        """``key``: (``"add"``, queue) with items, (``"take"``/``"reserve"``, queue, lease) with a
        count, (``"ack"``, queue) with receipt lists; fires with this payload's part. A call would
        pass :data:`MAX_ITEMS` sends what is gathered first, so no merged script grows unbounded."""
        d: defer.Deferred[Any] = defer.Deferred()
        size = payload if isinstance(payload, int) else sum(map(len, payload)) if key[0] == "ack" else len(payload)
        entry = self.pending.get(key)
        if entry is not None and entry[0][0] + size > MAX_ITEMS:
            self._flush(key)
            entry = None
        if entry is None:
            entry = self.pending[key] = ([0], [])
            self.engine.clock.callLater(0, self._flush, key)
        entry[0][0] += size
        entry[1].append((payload, d))
        return d

    def _flush(self, key: tuple[Any, ...]) -> None:
        entry = self.pending.pop(key, None)
        if entry is None:
            return  # sent early (it was full); a later batch may be sent by its own timer
        parts = entry[1]
        def failed(failure: Failure) -> None:
            for _, d in parts:
                if not d.called:
                    d.errback(failure)

        defer.ensureDeferred(self._run(key, parts)).addErrback(failed)

    async def _run(self, key: tuple[Any, ...], parts: list[tuple[Any, defer.Deferred[Any]]]) -> None:
        kind, queue = key[0], key[1]
        answers: list[Any]
        if kind == "add":
            items = [item for payload, _ in parts for item in payload]
            numbers, ready = await self.engine.add_counted(queue, items)
            answers, end, later = [], len(items), 0
            for payload, _ in reversed(parts):  # each part's ready length is taken at its end
                start = end - len(payload)
                answers.append((numbers[start:end], ready - later))
                for k in range(start, end):
                    if numbers[k] > 0 and not items[k][3]:
                        later += 1
                end = start
            answers.reverse()
        elif kind == "ack":
            outcomes = await self.engine.ack_each(queue, [receipts for payload, _ in parts for receipts in payload])
            answers, at = [], 0
            for payload, _ in parts:
                answers.append(outcomes[at:at + len(payload)])
                at += len(payload)
        else:
            total = sum(payload for payload, _ in parts)
            if kind == "take":
                messages = await self.engine.take(queue, total)
            else:
                messages = await self.engine.reserve(queue, total, key[2] or 0.0)
            answers, at = [], 0
            for payload, _ in parts:
                answers.append(messages[at:at + payload])
                at += payload
        for (_, d), answer in zip(parts, answers):
            d.callback(answer)


_MERGERS: WeakKeyDictionary[Dispatcher, Merger] = WeakKeyDictionary()


def _merger(dispatcher: Dispatcher) -> Merger:
    merger = _MERGERS.get(dispatcher)
    if merger is None:
        merger = _MERGERS[dispatcher] = Merger(dispatcher)
    return merger
