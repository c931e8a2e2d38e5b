"""Property test of at-least-once delivery (docs/guarantees.md: reserve, ack, nack, touch, take, dead letters).

Hypothesis draws a ``max_attempts`` (1–4, set with ``config``) and a sequence of operations on one
queue — add (some delayed, some with a dedup string), add_many, reserve with short leases, ack (single
and all-or-nothing lists, fresh and stale receipts), nack (some delayed), touch, take, len, redrive and
sleeps that let leases run out — and runs them through the dispatcher on the test Redis.
A model follows every message and every receipt, with the local clock (same host as Redis), and checks
after each step and at the end:

* keys are never reused and a delivered value is the one added under that key;
* no message is held by two valid receipts at once (a delivery while an earlier lease is surely still
  running), and a delayed message is not delivered before it is due;
* an acked or taken message is never delivered again; ``attempts`` counts the deliveries by reserve and
  never exceeds ``max_attempts``;
* ack/nack/touch with a surely-valid receipt succeed, with a surely-stale one (acked, nacked,
  redelivered, taken, expired) fail with ``stale_receipt``; a list ack with one stale receipt changes
  nothing;
* ``len``'s states add up to the messages neither acked nor taken (each message in exactly one place),
  and ``reserved`` lies between the leases surely running and those not yet given back;
* a second add with the same dedup string answers the first key and adds nothing; ``redrive`` moves
  exactly the dead messages (the ones peek no longer shows) and resets their attempts;
* at the end, after draining with reserve+ack: every added message was taken once, acked once, drained
  once or is in the dead-letter queue — exactly those that were delivered ``max_attempts`` times and
  never acked.

"Surely" leaves a margin of ``SLACK`` seconds around each deadline: a step whose outcome depends on a
few milliseconds of scheduling may go either way and the model follows the answer.

pytest-twisted runs every test, and the reactor, in one greenlet, and Hypothesis's ``@given`` wants to
call a synchronous function: so Hypothesis runs in a worker thread (``deferToThread``) and each example
hands its program to the reactor with ``blockingCallFromThread``. The default run is 40 examples from a
fixed seed (the same every run, ~8 s); ``RESTMQ_PROPERTY_EXAMPLES=N`` runs N random ones instead.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, note, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from restmq import errors  # noqa: E402

LEASES = (0.05, 0.1, 0.2)
SLEEPS = (0.03, 0.08, 0.15)
DELAYS = (0.0, 0.0, 0.0, 0.1)
#: Seconds either side of a deadline within which the model accepts either outcome.
SLACK = 0.015
EXTRA_EXAMPLES = int(os.environ.get("RESTMQ_PROPERTY_EXAMPLES", "0"))
MAX_EXAMPLES = EXTRA_EXAMPLES or 40
#: The fixed seed of the default run (a derandomized run would spend most of its few examples on the
#: simplest programs); RESTMQ_PROPERTY_EXAMPLES=N runs N random examples instead.
SEED = 1  # chosen among a few for a good spread of outcomes (see the printout with -s)

INDEX = st.integers(0, 15)
ADD = st.tuples(st.just("add"), st.integers(0, 9), st.sampled_from(DELAYS), st.sampled_from((None, None, "x", "y")))
RESERVE = st.tuples(st.just("reserve"), st.sampled_from((None, 1, 2, 3)), st.sampled_from(LEASES))
ACK = st.tuples(st.just("ack"), INDEX)
NACK = st.tuples(st.just("nack"), INDEX, st.sampled_from(DELAYS))
#: Reserve, ack and nack are drawn more often than the rest (each appears several times).
OPERATION = st.one_of(
    ADD, ADD,
    st.tuples(st.just("add_many"), st.integers(1, 4)),
    RESERVE, RESERVE, RESERVE,
    ACK, ACK,
    st.tuples(st.just("ack_many"), st.lists(INDEX, min_size=2, max_size=3)),
    NACK, NACK,
    st.tuples(st.just("touch"), INDEX, st.sampled_from(LEASES)),
    st.tuples(st.just("take"), st.sampled_from((None, 1, 2))),
    st.tuples(st.just("sleep"), st.sampled_from(SLEEPS)),
    st.tuples(st.just("len")),
    st.tuples(st.just("redrive"), st.sampled_from((None, 1))),
)
#: What the examples exercised (printed with ``-s``), to see that the interesting cases do occur.
OUTCOMES: Counter[str] = Counter()
PROGRAM = st.tuples(st.integers(1, 4), st.lists(OPERATION, min_size=8, max_size=30))


def number(key: str) -> int:
    """The ``n`` of a ``<queue>:<n>`` key (a dead-letter copy may carry its own queue's prefix)."""
    return int(str(key).rsplit(":", 1)[1])


@dataclass
class Lease:
    """One receipt the model handed out; ``ended`` once acked, nacked, redelivered or taken."""

    key: str
    receipt: str
    until: float
    ended: bool = False

    def surely_valid(self, sent: float, answered: float) -> bool:
        return not self.ended and self.until > answered + SLACK

    def surely_stale(self, sent: float, answered: float) -> bool:
        return self.ended or self.until < sent - SLACK


@dataclass
class Message:
    key: str
    value: str
    not_before: float = 0.0  # a delivery answered before this is too early (delay / nack delay)
    deliveries: int = 0  # by reserve
    acked: bool = False
    taken: bool = False
    drained: bool = False
    lease: Lease | None = None

    def ended_for_good(self) -> bool:
        return self.acked or self.taken or self.drained


@dataclass
class Model:
    queue: str
    max_attempts: int
    messages: dict[str, Message] = field(default_factory=dict)
    leases: list[Lease] = field(default_factory=list)
    dedup: dict[str, str] = field(default_factory=dict)  # dedup string -> the first key
    trace: list[str] = field(default_factory=list)

    def log(self, line: str) -> None:
        self.trace.append(f"{time.time():.3f} {line}")

    def fail(self, why: str) -> None:
        raise AssertionError(why + "\ntrace:\n  " + "\n  ".join(self.trace))

    def check(self, ok: bool, why: str) -> None:
        if not ok:
            self.fail(why)

    def delivered(self, m: dict[str, Any], sent: float, answered: float, *, by: str) -> Message:
        """Checks common to every delivery (reserve, take, drain)."""
        key = m["key"]
        msg = self.messages.get(key)
        self.check(msg is not None, f"{by} delivered {key}, which was never added (or reused its key)")
        assert msg is not None
        self.check(msg.deliveries < self.max_attempts,
                   f"{by} delivered {key} after its {msg.deliveries} deliveries (max_attempts {self.max_attempts}): "
                   "it belongs in the dead-letter queue")
        self.check(m["value"] == msg.value, f"{by} delivered {key} with value {m['value']!r}, added {msg.value!r}")
        self.check(m.get("queue") == self.queue, f"{by} delivered {key} from queue {m.get('queue')!r}")
        self.check(not msg.acked, f"{by} delivered {key} again after it was acked")
        self.check(not msg.taken, f"{by} delivered {key} again after it was taken")
        self.check(not msg.drained, f"{by} delivered {key} again after the drain acked it")
        if msg.lease is not None and msg.lease.surely_valid(sent, answered):
            self.fail(f"{by} delivered {key} while receipt {msg.lease.receipt} still held it "
                      f"(lease until {msg.lease.until:.3f}, answered at {answered:.3f})")
        self.check(answered >= msg.not_before - SLACK,
                   f"{by} delivered {key} at {answered:.3f}, before it was due at {msg.not_before:.3f}")
        if msg.lease is not None:
            msg.lease.ended = True  # whatever it was, that receipt is stale now
            msg.lease = None
        return msg

    def reserved(self, m: dict[str, Any], sent: float, answered: float, *, by: str = "reserve") -> Lease:
        msg = self.delivered(m, sent, answered, by=by)
        msg.deliveries += 1
        OUTCOMES[f"{by}: delivery #{msg.deliveries}"] += 1
        self.check(m["attempts"] == msg.deliveries,
                   f"{by} delivered {msg.key} with attempts={m['attempts']}, expected {msg.deliveries}")
        self.check(msg.deliveries <= self.max_attempts,
                   f"{by} delivered {msg.key} a {msg.deliveries}th time, max_attempts is {self.max_attempts}")
        self.check(isinstance(m.get("receipt"), str) and m["receipt"] != "", f"no receipt in {m}")
        self.check(isinstance(m.get("lease_until"), (int, float)), f"no lease_until in {m}")
        self.check(all(lease.receipt != m["receipt"] for lease in self.leases),
                   f"receipt {m['receipt']} handed out twice")
        lease = Lease(msg.key, m["receipt"], float(m["lease_until"]))
        msg.lease = lease
        self.leases.append(lease)
        return lease


async def call(dispatcher, name: str, **args: Any) -> tuple[Any, float, float]:
    """(answer or RestMQError, local time sent, local time answered)."""
    sent = time.time()
    try:
        answer: Any = await dispatcher.execute(name, args)
    except errors.RestMQError as e:
        answer = e
    return answer, sent, time.time()


def code(answer: Any) -> str | None:
    return answer.code if isinstance(answer, errors.RestMQError) else None


async def sleep(seconds: float) -> None:
    from twisted.internet import reactor, task

    await task.deferLater(reactor, seconds, lambda: None)


async def run_program(dispatcher, model: Model, operations: list[tuple[Any, ...]]) -> None:  # noqa: C901
    q = model.queue
    answer, _, _ = await call(dispatcher, "config", queue=q, max_attempts=model.max_attempts)
    model.check(not isinstance(answer, errors.RestMQError) and answer.get("max_attempts") == model.max_attempts,
                f"config max_attempts={model.max_attempts} answered {answer!r}")
    values = itertools.count(1)

    def add_model(key: str, value: str, not_before: float) -> None:
        model.check(key not in model.messages, f"add answered key {key} a second time")
        model.check(all(number(key) > number(k) for k in model.messages),
                    f"add answered {key} after {sorted(model.messages)}: keys must grow")
        model.messages[key] = Message(key, value, not_before)

    for op in operations:
        kind = op[0]
        if kind == "add":
            _, priority, delay, dedup = op
            value = f"v{next(values)}"
            args: dict[str, Any] = {"priority": priority}
            if delay:
                args["delay"] = delay
            if dedup:
                args["dedup"] = dedup
            answer, sent, answered = await call(dispatcher, "add", queue=q, value=value, **args)
            model.check(code(answer) is None, f"add failed: {answer!r}")
            model.log(f"add {value} p{priority} delay={delay} dedup={dedup} -> {answer['key']}")
            if dedup in model.dedup:  # within the window (300 s): the first key, nothing added
                model.check(answer["key"] == model.dedup[dedup],
                            f"add dedup={dedup} answered {answer['key']}, the first was {model.dedup[dedup]}")
                OUTCOMES["add: dedup hit"] += 1
                continue
            add_model(answer["key"], value, sent + delay)
            if dedup:
                model.dedup[dedup] = answer["key"]

        elif kind == "add_many":
            batch = [f"v{next(values)}" for _ in range(op[1])]
            answer, sent, answered = await call(dispatcher, "add_many", queue=q, messages=batch)
            model.check(code(answer) is None and len(answer["keys"]) == len(batch), f"add_many: {answer!r}")
            model.log(f"add_many {batch} -> {answer['keys']}")
            for key, value in zip(answer["keys"], batch):
                add_model(key, value, 0.0)

        elif kind == "reserve":
            _, count, lease = op
            args = {"lease": lease} if count is None else {"lease": lease, "count": count}
            answer, sent, answered = await call(dispatcher, "reserve", queue=q, **args)
            if count is None:
                if code(answer) == "empty":
                    got = []
                else:
                    model.check(isinstance(answer, dict), f"reserve without count answered {answer!r}")
                    got = [answer]
            else:
                model.check(isinstance(answer, list) and len(answer) <= count,
                            f"reserve count={count} answered {answer!r}")
                got = answer
            model.log(f"reserve count={count} lease={lease} -> "
                      + ", ".join(f"{m['key']}#{m['attempts']} {m.get('receipt')} until {m.get('lease_until')}"
                                  for m in got))
            model.check(len({m["key"] for m in got}) == len(got), f"one reserve answered a key twice: {got}")
            for m in got:
                model.reserved(m, sent, answered)

        elif kind in ("ack", "nack", "touch", "ack_many"):
            if not model.leases:
                continue
            if kind == "ack_many":
                chosen = (model.leases[-1 - i % len(model.leases)] for i in op[1])
                picked = list({id(lease): lease for lease in chosen}.values())  # distinct
                args = {"receipt": [lease.receipt for lease in picked]}
            else:
                picked = [model.leases[-1 - op[1] % len(model.leases)]]  # small indices: the latest receipts
                args = {"receipt": picked[0].receipt}
                if kind == "nack" and op[2]:
                    args["delay"] = op[2]
                if kind == "touch":
                    args["lease"] = op[2]
            name = "ack" if kind == "ack_many" else kind
            answer, sent, answered = await call(dispatcher, name, queue=q, **args)
            model.log(f"{name} {[(lease.key, lease.receipt) for lease in picked]} {args} -> {answer!r}")
            valid = all(lease.surely_valid(sent, answered) for lease in picked)
            stale = any(lease.surely_stale(sent, answered) for lease in picked)
            OUTCOMES[f"{kind} {'valid' if valid else 'stale' if stale else 'either'} -> {code(answer) or 'ok'}"] += 1
            if valid:
                model.check(code(answer) is None, f"{name} with surely valid receipt(s) failed: {answer!r}")
            if stale:
                model.check(code(answer) == "stale_receipt",
                            f"{name} with a surely stale receipt answered {answer!r} instead of stale_receipt")
            if code(answer) is not None:
                model.check(code(answer) == "stale_receipt", f"{name} failed with {answer!r}")
                if len(picked) == 1:
                    picked[0].ended = True  # it was stale: expired (or on its way back)
                continue  # all-or-nothing: the others keep their state
            if name == "ack":
                model.check(isinstance(answer, dict) and answer.get("acked") == len(picked),
                            f"ack of {len(picked)} answered {answer!r}")
                for lease in picked:
                    msg = model.messages[lease.key]
                    model.check(not msg.acked, f"{lease.key} acked twice")
                    msg.acked, lease.ended, msg.lease = True, True, None
            elif name == "nack":
                model.check(answer.get("nacked") == 1, f"nack answered {answer!r}")
                lease = picked[0]
                msg = model.messages[lease.key]
                lease.ended, msg.lease = True, None
                msg.not_before = sent + op[2]
            else:
                until = answer.get("lease_until")
                model.check(isinstance(until, (int, float)) and until >= sent + op[2] - SLACK,
                            f"touch lease={op[2]} answered {answer!r} at {sent:.3f}")
                picked[0].until = float(until)

        elif kind == "take":
            count = op[1]
            args = {} if count is None else {"count": count}
            answer, sent, answered = await call(dispatcher, "take", queue=q, **args)
            if count is None:
                got = [] if code(answer) == "empty" else [answer]
            else:
                got = answer
            model.check(all(isinstance(m, dict) for m in got), f"take answered {answer!r}")
            model.log(f"take count={count} -> {[m['key'] for m in got]}")
            for m in got:
                model.delivered(m, sent, answered, by="take").taken = True
                OUTCOMES["take: delivery"] += 1

        elif kind == "len":
            answer, sent, answered = await call(dispatcher, "len", queue=q)
            model.log(f"len -> {answer!r}")
            model.check(isinstance(answer, dict), f"len answered {answer!r}")
            present = sum(1 for m in model.messages.values() if not (m.acked or m.taken))
            total = answer["ready"] + answer["reserved"] + answer["delayed"] + answer["dead"]
            model.check(total == present, f"len counts {total} messages in all states, {present} are in the queue")
            held = [m.lease for m in model.messages.values() if m.lease is not None]
            surely = sum(1 for lease in held if lease.surely_valid(sent, answered))
            # Between those surely running and all those not acked/nacked/taken (some may have run out
            # without being swept back yet).
            model.check(surely <= answer["reserved"] <= len(held),
                        f"len says {answer['reserved']} reserved; {surely} leases surely run, "
                        f"{len(held)} were neither acked, nacked nor taken")
            OUTCOMES["len: checked"] += 1

        elif kind == "redrive":
            await redrive(dispatcher, model, op[1])

        elif kind == "sleep":
            model.log(f"sleep {op[1]}")
            await sleep(op[1])

    await drain(dispatcher, model)


async def redrive(dispatcher, model: Model, count: int | None) -> None:
    """Redrive once the dead-letter set is certain: leases of messages on their last attempt have run
    out and ``len`` has settled the queue; then exactly those move, and ``peek`` tells which."""
    q = model.queue
    last = [m.lease for m in model.messages.values()
            if m.deliveries == model.max_attempts and m.lease is not None and not m.ended_for_good()]
    wait = max((lease.until for lease in last), default=0.0) + 2 * SLACK - time.time()
    if wait > 0:
        model.log(f"redrive: wait {wait:.3f} s for the last attempts' leases")
        await sleep(wait)
    dead = {number(k) for k, m in model.messages.items()
            if m.deliveries == model.max_attempts and not m.ended_for_good()}
    length, _, _ = await call(dispatcher, "len", queue=q)
    model.check(isinstance(length, dict) and length["dead"] == len(dead),
                f"before redrive: len {length!r}, expected {len(dead)} dead: {sorted(dead)}")
    args = {} if count is None else {"count": count}
    answer, _, _ = await call(dispatcher, "redrive", queue=q, **args)
    model.log(f"redrive {args} -> {answer!r}")
    expected = len(dead) if count is None else min(count, len(dead))
    model.check(isinstance(answer, dict) and answer.get("moved") == expected,
                f"redrive {args} of {len(dead)} dead answered {answer!r}, expected moved={expected}")
    peeked, _, _ = await call(dispatcher, "peek", queue=q, state="dead", count=1000)
    left = {number(m["key"]) for m in peeked}
    model.check(left <= dead and len(dead - left) == expected,
                f"after redrive moved {expected} of {sorted(dead)}, dead are {sorted(left)}")
    for n in dead - left:
        msg = model.messages[f"{q}:{n}"]
        if msg.lease is not None:
            msg.lease.ended = True
        msg.lease, msg.deliveries, msg.not_before = None, 0, 0.0
    OUTCOMES[f"redrive: moved {'none' if not expected else 'some'}"] += 1


async def drain(dispatcher, model: Model) -> None:
    """Reserve+ack everything left (after the leases and delays run out), then compare the sets."""
    q = model.queue
    model.log("drain")
    deadline = time.monotonic() + 5
    while True:
        answer, sent, answered = await call(dispatcher, "reserve", queue=q, count=100, lease=10)
        model.check(isinstance(answer, list), f"drain reserve answered {answer!r}")
        if answer:
            model.log(f"drain reserve -> {[(m['key'], m['attempts']) for m in answer]}")
            leases = [model.reserved(m, sent, answered, by="drain reserve") for m in answer]
            acked, _, _ = await call(dispatcher, "ack", queue=q, receipt=[lease.receipt for lease in leases])
            model.check(isinstance(acked, dict) and acked.get("acked") == len(leases),
                        f"drain ack of {len(leases)} answered {acked!r}")
            for lease in leases:
                msg = model.messages[lease.key]
                msg.drained, msg.lease, lease.ended = True, None, True
            continue
        length, _, _ = await call(dispatcher, "len", queue=q)
        model.check(isinstance(length, dict), f"len answered {length!r}")
        if length["ready"] + length["reserved"] + length["delayed"] == 0:
            break
        model.check(time.monotonic() < deadline, f"drain: queue still holds {length} after 5 s")
        await sleep(0.02)

    expected_dead = {number(k) for k, m in model.messages.items()
                     if not (m.acked or m.taken or m.drained)}
    should_be_dead = {number(k) for k, m in model.messages.items()
                      if m.deliveries == model.max_attempts and not (m.acked or m.taken or m.drained)}
    model.check(expected_dead == should_be_dead,
                f"lost: never acked, taken or drained, with fewer than max_attempts deliveries: "
                f"{sorted(expected_dead - should_be_dead)}; dead-letter candidates drained instead: "
                f"{sorted(should_be_dead - expected_dead)}")
    length, _, _ = await call(dispatcher, "len", queue=q)
    model.check(length["dead"] == len(expected_dead), f"len says {length}, expected {len(expected_dead)} dead")
    peeked, _, _ = await call(dispatcher, "peek", queue=q, state="dead", count=1000)
    model.check(isinstance(peeked, list), f"peek state=dead answered {peeked!r}")
    model.check({number(m["key"]) for m in peeked} == expected_dead,
                f"peek state=dead shows {sorted(number(m['key']) for m in peeked)}, "
                f"expected {sorted(expected_dead)}")
    for m in peeked:
        msg = model.messages[f"{q}:{number(m['key'])}"]
        model.check(m["value"] == msg.value, f"dead {m['key']} has value {m['value']!r}, added {msg.value!r}")
    OUTCOMES["end: dead"] += len(expected_dead)
    OUTCOMES["end: acked by the program"] += sum(1 for m in model.messages.values() if m.acked)
    accounted = sum(1 for m in model.messages.values() if m.acked) + sum(
        1 for m in model.messages.values() if m.taken) + sum(1 for m in model.messages.values() if m.drained)
    model.check(accounted + len(expected_dead) == len(model.messages),
                "a message was counted twice among acked/taken/drained/dead")


@pytest_twisted.ensureDeferred
async def test_reserve_ack_nack_touch_take_never_lose_or_double_hold(dispatcher, redis):
    """Random sequences of delivery operations keep every invariant of at-least-once delivery."""
    from twisted.internet import reactor, threads
    from twisted.internet.defer import ensureDeferred

    queues = itertools.count(1)
    started = time.monotonic()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @seed(SEED if not EXTRA_EXAMPLES else None)
    @given(PROGRAM)
    def example(program: tuple[int, list[tuple[Any, ...]]]) -> None:
        # In a worker thread: the reactor (in pytest-twisted's greenlet) runs the program meanwhile.
        max_attempts, operations = program
        assert redis.cli("FLUSHALL").startswith(b"+OK")
        model = Model(queue=f"prop{next(queues)}", max_attempts=max_attempts)
        note(f"queue {model.queue}, max_attempts {max_attempts}, {len(operations)} operations")
        threads.blockingCallFromThread(reactor, lambda: ensureDeferred(run_program(dispatcher, model, operations)))

    await threads.deferToThread(example)
    print(f"\n{MAX_EXAMPLES} examples in {time.monotonic() - started:.1f} s; outcomes:")
    for outcome, times in sorted(OUTCOMES.items()):
        print(f"  {times:6d}  {outcome}")
