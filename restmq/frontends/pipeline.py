"""Ordered replies: one connection's requests run one at a time and are answered in request order.

Used by composition by every request/answer front end (line protocol, RESP, memcached), which only
parse their framing and encode their answers. What it guarantees:

- Pipelining: requests are read ahead, but they run one at a time in request order (``add q x``
  then ``take q`` sees that x, as in a Redis pipeline) and their answers are written in request
  order (a queue of slots); an answer known at once (``ping``, a parse error) waits its turn too.
- Back-pressure: at most ``max_pending`` answers (and, if set, ``max_bytes`` of requests not yet
  run) may be outstanding; beyond that the host is told to stop reading until some are written.
- Principal: each request is queued with the principal in force where it stands in the pipeline.
  A ``credential`` request (an ``auth``) may change it, so reading stops until it has run and what
  follows is queued under what it set. With :meth:`require_auth`, a connection that does not
  authenticate in time is told so by its host.
- Turns: :meth:`at_turn` runs something (a ``subscribe``) once every earlier answer is written,
  reading paused until then; :meth:`quit` answers and then closes once everything before it is
  written, and :meth:`finish` closes after the last answer (a half-closed client).
- Requests already read keep running after the client left (a fire-and-forget producer never
  loses its add); their answers are dropped.
- Coalescing: a request queued with :meth:`command` is a dispatcher command. When its turn comes,
  it and the commands queued right behind it with the same kind and queue (and principal) are
  handed to the dispatcher as one run (``execute_run``): runs of adds, takes, reserves or acks on
  one queue cost one script, each command still answered (or refused) on its own, in order (see
  restmq/coalesce.py). Within one read (:meth:`reading_batch`) nothing starts until the whole
  read is queued, so a pipeline that arrives in one read is one run from its first command.
- Writing: the answers ready at the head of the queue go out in one write.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq.coalesce import run_key
from restmq.ports import Dispatcher, Principal

log = Logger()

#: Most commands handed to the dispatcher as one run (as many as answers may be pending).
MAX_RUN = 1000

#: How a request runs when its turn comes: given the principal it was queued with, a Deferred of
#: the encoded answer (the host encodes its own errors; anything else is logged and answered with
#: the pipeline's ``internal`` bytes).
Run = Callable[[Principal], "defer.Deferred[bytes]"]


class Host(Protocol):
    """The connection a pipeline answers on."""

    def write(self, data: bytes) -> None:
        """Write an answer's bytes (never called once the connection is lost)."""

    def reading(self, pause: bool) -> None:
        """Stop or resume reading requests (and, on resume, read what is already buffered)."""

    def close(self) -> None:
        """Close the connection: a :meth:`Pipeline.quit` or :meth:`Pipeline.finish` came up."""


@dataclass(eq=False, slots=True)
class Slot:
    """One answer's place in the output order: its bytes once known, and what to do after writing."""

    data: bytes = b""
    ready: bool = False
    then: Callable[[], None] | None = None


@dataclass(eq=False, slots=True)
class Command:
    """A dispatcher command queued with :meth:`Pipeline.command`, which may run in one script with
    its neighbours. ``finish`` turns its answer (or its Failure) into the bytes to write;
    ``check``, when its turn comes, may answer instead of running it (bytes), e.g. a refusal that
    depends on the connection's state then, or ``b""`` for a take nobody is left to receive."""

    name: str
    args: Mapping[str, Any]
    finish: Callable[[Any], bytes]
    check: Callable[[], bytes | None] | None = None


@dataclass(eq=False, slots=True)
class _Queued:
    run: Run | None
    slot: Slot
    principal: Principal
    credential: bool
    size: int
    command: Command | None = None
    key: Hashable | None = None


class Pipeline:
    """The ordered-replies machinery of one connection (see the module docstring)."""

    def __init__(
        self,
        host: Host,
        *,
        max_pending: int = 1000,
        max_bytes: int = 0,
        internal: bytes = b"",
        dispatcher: Dispatcher | None = None,
        frontend: str = "other",
    ) -> None:
        self.host = host
        #: Where :meth:`command` requests run, labelled ``frontend`` in the latency metrics.
        self.dispatcher = dispatcher
        self.frontend = frontend
        #: Answers that may be outstanding before the host stops reading.
        self.max_pending = max_pending
        #: Bytes of requests not yet run beyond which the host stops reading (0: no bound).
        self.max_bytes = max_bytes
        #: What a request whose run failed unexpectedly is answered.
        self.internal = internal
        #: The principal requests are queued with from now on (the last accepted credential).
        self.principal: Principal = None
        #: A quit or end of input was seen: nothing more is read.
        self.closing = False
        #: The connection is lost: nothing more is written.
        self.gone = False
        self._out: deque[Slot] = deque()
        self._calls: deque[_Queued] = deque()
        self._bytes = 0
        self._credentials = 0  # credential requests queued or running: reading waits for them
        self._held = 0  # at_turn callbacks waiting for their turn
        self._running = False
        self._dispatching = False
        self._flushing = False
        self._holding = 0  # inside reading_batch(): queue, but start nothing yet
        self._auth_deadline: IDelayedCall | None = None

    @property
    def idle(self) -> bool:
        """Nothing queued, running or unwritten, and not closing."""
        return not (self._out or self._calls or self._running or self.closing)

    # -- principal ----------------------------------------------------------------------------

    def authenticated(self, principal: Principal) -> None:
        """A credential was accepted: it is the principal of the requests queued from now on."""
        self.principal = principal
        if self._auth_deadline is not None and self._auth_deadline.active():
            self._auth_deadline.cancel()

    def require_auth(self, clock: IReactorTime, seconds: float, expired: Callable[[], None]) -> None:
        """Call ``expired`` if no credential is accepted within ``seconds`` (0: never), unless the
        connection is closing or gone by then."""
        if not seconds:
            return

        def check() -> None:
            if self.principal is None and not self.closing and not self.gone:
                expired()

        self._auth_deadline = clock.callLater(seconds, check)

    # -- requests -----------------------------------------------------------------------------

    def call(self, run: Run, *, credential: bool = False, size: int = 0) -> None:
        """Queue a request with the principal in force here; ``credential``: it may change the
        principal, so reading waits until it has run; ``size``: its bytes, for ``max_bytes``."""
        if credential:
            self._credentials += 1
        slot = Slot()
        self._bytes += size
        self._push(slot)
        self._calls.append(_Queued(run, slot, self.principal, credential, size))
        self._next_call()

    def command(self, command: Command, *, size: int = 0) -> None:
        """Queue a dispatcher command (needs ``dispatcher``); it may run coalesced with the
        commands queued right behind it (see the module docstring)."""
        slot = Slot()
        self._bytes += size
        self._push(slot)
        key = run_key(command.name, command.args)
        self._calls.append(_Queued(None, slot, self.principal, False, size, command, key))
        self._next_call()

    @contextmanager
    def reading_batch(self) -> Iterator[None]:
        """Around the handling of one read: requests are queued but start only at the end, so
        that the commands of one read can be coalesced from the first."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if not self._holding:
                self._next_call()

    def answer(self, data: bytes) -> None:
        """An answer known now, written in order after those still pending."""
        self._push(Slot(data, ready=True))

    def slot(self) -> Slot:
        """A place in the output for an answer that :meth:`fill` gives later."""
        slot = Slot()
        self._push(slot)
        return slot

    def fill(self, slot: Slot, data: bytes) -> None:
        slot.data, slot.ready = data, True
        self._flush()

    def at_turn(self, then: Callable[[], None]) -> None:
        """Run ``then`` once every earlier answer is written; reading pauses until it has run."""
        self._held += 1

        def turn() -> None:
            self._held -= 1
            then()

        self._push(Slot(ready=True, then=turn))

    def quit(self, last: bytes) -> None:
        """Answer ``last`` after every earlier answer, then close; read nothing more."""
        self.closing = True
        self._push(Slot(last, ready=True, then=self.host.close))

    def finish(self) -> None:
        """The client sent everything it will: answer what is pending, then close."""
        if not self.closing:
            self.closing = True
            self._push(Slot(b"", ready=True, then=self.host.close))

    def lost(self) -> None:
        """The connection is gone: drop unwritten answers (queued requests still run)."""
        self.gone = True
        self._out.clear()
        if self._auth_deadline is not None and self._auth_deadline.active():
            self._auth_deadline.cancel()

    def _next_call(self) -> None:
        """Run queued requests one at a time (a run of commands counts as one), so their effects
        happen in request order too."""
        if self._dispatching or self._holding:
            return  # a request finished synchronously inside the loop below: it continues
        self._dispatching = True
        try:
            while self._calls and not self._running:
                queued = self._calls.popleft()
                self._running = True
                if queued.run is None:
                    self._run_commands(queued)
                    continue
                d = defer.maybeDeferred(queued.run, queued.principal)
                d.addErrback(self._failed)
                d.addCallback(self._call_done, queued)
        finally:
            self._dispatching = False

    def _run_commands(self, head: _Queued) -> None:
        """Run ``head`` and the commands queued right behind it with its key and principal as one
        run; commands whose ``check`` answers are answered in place and run nothing."""
        run = [head]
        if head.key is not None:
            while (
                self._calls
                and len(run) < MAX_RUN
                and self._calls[0].key == head.key
                and self._calls[0].principal is head.principal
            ):
                run.append(self._calls.popleft())
        answers: list[bytes | None] = []
        todo: list[_Queued] = []
        for queued in run:
            assert queued.command is not None
            try:
                early = queued.command.check() if queued.command.check is not None else None
            except Exception:
                log.failure("request failed unexpectedly")
                early = self.internal
            answers.append(early)
            if early is None:
                todo.append(queued)
        assert self.dispatcher is not None
        if not todo:
            self._run_done([], run, answers)
            return
        if len(todo) == 1:
            command = todo[0].command
            assert command is not None
            d = self.dispatcher.execute(command.name, command.args, head.principal, frontend=self.frontend)
            d.addBoth(lambda outcome: [outcome])
        else:
            d = self.dispatcher.execute_run(
                [(q.command.name, q.command.args) for q in todo if q.command is not None],
                head.principal,
                frontend=self.frontend,
            )
        d.addErrback(lambda failure: [failure] * len(todo))
        d.addCallback(self._run_done, run, answers)

    def _run_done(self, outcomes: list[Any], run: list[_Queued], answers: list[bytes | None]) -> None:
        pending = iter(outcomes)
        for queued, early in zip(run, answers):
            data = early
            if data is None:
                assert queued.command is not None
                try:
                    data = queued.command.finish(next(pending))
                except Exception:
                    log.failure("request failed unexpectedly")
                    data = self.internal
            self._bytes -= queued.size
            queued.slot.data, queued.slot.ready = data, True
        self._running = False
        with self.reading_batch():  # what a resumed read queues starts as one run
            self._flush()

    def _failed(self, failure: Failure) -> bytes:
        log.failure("request failed unexpectedly", failure)
        return self.internal

    def _call_done(self, data: bytes, queued: _Queued) -> None:
        self._running = False
        self._bytes -= queued.size
        if queued.credential:
            self._credentials -= 1
        queued.slot.data, queued.slot.ready = data, True
        with self.reading_batch():
            self._flush()

    # -- writing in order ---------------------------------------------------------------------

    def _push(self, slot: Slot) -> None:
        self._out.append(slot)
        if (
            slot.ready
            or self._credentials
            or len(self._out) >= self.max_pending
            or (self.max_bytes and self._bytes > self.max_bytes)
        ):
            self._flush()  # a pending slot at the back writes nothing: only back-pressure may change

    def _flush(self) -> None:
        """Write every answer at the head of the queue that is ready; stop at the first pending."""
        if self._flushing:
            return  # the outer loop picks up whatever was pushed meanwhile
        self._flushing = True
        chunks: list[bytes] = []
        try:
            while self._out and self._out[0].ready:
                slot = self._out.popleft()
                if self.gone:
                    continue
                if slot.data:
                    chunks.append(slot.data)
                if slot.then is not None:
                    if chunks:  # what comes before a turn is written before it
                        self.host.write(b"".join(chunks))
                        chunks = []
                    slot.then()
            if chunks and not self.gone:
                self.host.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        finally:
            self._flushing = False
        self.update_reading()

    def update_reading(self) -> None:
        """Tell the host to pause reading while a turn or a credential waits, or too much is
        outstanding; to resume otherwise."""
        if self.gone or self.closing:
            return
        self.host.reading(
            self._held > 0
            or self._credentials > 0
            or len(self._out) >= self.max_pending
            or bool(self.max_bytes and self._bytes > self.max_bytes)
        )
