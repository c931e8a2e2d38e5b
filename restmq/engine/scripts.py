"""The Lua scripts, loaded once and called by SHA; reloaded when Redis has forgotten them."""

from __future__ import annotations

from importlib import resources
import itertools
import time
from dataclasses import dataclass
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq.engine.calls import Progress
from restmq.errors import BackendUnavailable

log = Logger()

NAMES = (
    "add", "take", "read", "del", "purge", "len", "conf", "config", "stats", "subs", "ack", "nack",
    "touch", "redrive", "settle", "due", "retime", "replay", "find", "undo", "sched", "undue", "push",
    "pushed",
)


def source(name: str) -> str:
    """The text of ``lua/<name>.lua``, shipped inside the package."""
    return resources.files("restmq.engine").joinpath("lua", f"{name}.lua").read_text("utf-8")


#: The first line of a script that works on several queues at once: its roles repeat per queue.
PER_QUEUE = "-- KEYS per queue:"


def declared_keys(text: str) -> tuple[str, ...]:
    """The key roles a script declares on its first line (``-- KEYS: ready messages``), in the
    order it reads them as ``KEYS[1]``…: the script, not a second table, says what it touches.
    ``-- KEYS per queue: …`` declares a group of roles given once per queue, one after another."""
    first = text.split("\n", 1)[0]
    for marker in ("-- KEYS:", PER_QUEUE):
        if first.startswith(marker):
            return tuple(first[len(marker):].split())
    raise ValueError(f"a script must start with '-- KEYS: role …', not {first!r}")


def per_queue(text: str) -> bool:
    """Whether the script takes its declared keys once per queue (see :data:`PER_QUEUE`)."""
    return text.startswith(PER_QUEUE)


#: Inserted after the shared library: the last ARGV of every call is its deadline (ms on Redis's
#: clock, 0 for none), taken off ARGV so that scripts never see it. A script that starts after its
#: deadline changes nothing: its caller has stopped waiting (see ``calls.py``).
DEADLINE_CHECK = """
local DEADLINE = tonumber(table.remove(ARGV))
if DEADLINE > 0 and now_ms() > DEADLINE then
  return redis.error_reply('DEADLINE the caller stopped waiting before redis ran this call')
end
"""


def assemble(text: str, defaults: dict[str, int]) -> str:
    """The script Redis runs: its declared keys by role (``K.ready`` …), the event channel
    (``ARGV[1]`` of every script), the settings' defaults, the shared library, the deadline check,
    then its body."""
    roles = declared_keys(text)
    settings = ", ".join(f"{name} = {value}" for name, value in sorted(defaults.items()))
    if per_queue(text):
        # K is the current queue's keys; the script moves it along with ``K = group(g)`` for
        # g = 1 … GROUPS (the shared functions see the change: K is their upvalue).
        names = ", ".join(f"'{role}'" for role in roles)
        keys = (
            f"local ROLES = {{{names}}}\nlocal GROUPS = #KEYS / #ROLES\n"
            "local function group(g)\n  local t = {}\n"
            "  for i, role in ipairs(ROLES) do t[role] = KEYS[(g - 1) * #ROLES + i] end\n"
            "  return t\nend\nlocal K = group(1)\n"
        )
    else:
        keys = "local K = {" + ", ".join(f"{role} = KEYS[{i}]" for i, role in enumerate(roles, 1)) + "}\n"
    return (
        f"{keys}local CHANNEL = ARGV[1]\nlocal DEFAULT = {{{settings}}}\n"
        + source("_lib")
        + DEADLINE_CHECK
        + text
    )


class Scripts:
    """Calls scripts by name with EVALSHA, loading them again on NOSCRIPT (Redis restarted or flushed).

    ``defaults`` are the queue settings' defaults (ms for times) that scripts use when a queue has
    not set its own.
    """

    def __init__(self, defaults: dict[str, int]) -> None:
        texts = {name: source(name) for name in NAMES}
        self._source = {name: assemble(text, defaults) for name, text in texts.items()}
        self._sha: dict[str, str] = {}
        #: Script name -> the QueueKeys fields it takes, in order.
        self.keys = {name: declared_keys(text) for name, text in texts.items()}

    async def load(self, redis: Any) -> None:
        """Load every script; called at start and after a NOSCRIPT answer."""
        for name, text in self._source.items():
            sha = await redis.script_load(text)
            self._sha[name] = sha.decode() if isinstance(sha, bytes) else sha
        log.debug("lua scripts loaded count={count}", count=len(self._sha))

    def call(
        self,
        redis: Any,
        name: str,
        keys: list[str],
        args: list[Any],
        deadline: int = 0,
        replicated: Replicated | None = None,
    ) -> defer.Deferred[Any]:
        """Run script ``name`` unless Redis reaches it after ``deadline`` (ms on Redis's clock; 0:
        none); one retry after reloading when Redis answers NOSCRIPT. With ``replicated``, the
        answer comes only once enough replicas have the write (WAIT).

        The common case is a plain Deferred chain (no coroutine): this is every command's path.
        """
        sha = self._sha.get(name)
        if sha is None:
            return defer.ensureDeferred(self._reload_and_call(redis, name, keys, args, deadline, replicated))
        command = (b"EVALSHA", sha, len(keys), *keys, *args, deadline)
        d = send_replicated(redis, replicated, command) if replicated else send(redis, *command)

        def noscript(failure: Failure) -> Any:
            if failure.check(txredisapi.ResponseError) and str(failure.value).startswith("NOSCRIPT"):
                log.info("redis forgot the lua scripts; loading them again")
                return defer.ensureDeferred(self._reload_and_call(redis, name, keys, args, deadline, replicated))
            return failure

        return d.addErrback(noscript)

    async def _reload_and_call(
        self, redis: Any, name: str, keys: list[str], args: list[Any], deadline: int, replicated: Replicated | None
    ) -> Any:
        await self.load(redis)
        command = (b"EVALSHA", self._sha[name], len(keys), *keys, *args, deadline)
        return await (send_replicated(redis, replicated, command) if replicated else send(redis, *command))


_turn = itertools.count()

#: Most commands one connection takes in one reactor turn (see :func:`_pick`). Measured with
#: bench/throughput.py (HTTP take, 16 connections): 1 (plain round robin) 71-76 % of the bare
#: handler, 2: 76 %, 4: 82 %, unbounded: 72-76 % with the server idle a sixth of the time.
STICKY_COMMANDS = 4


def _unsent(connection: Any) -> int:
    """Bytes written to ``connection`` that its transport has not sent yet: Twisted buffers every
    write until the reactor's next write pass, so this is what was written in this turn (or is
    still backed up). 0 when the transport does not say (then every command goes round robin)."""
    return int(getattr(connection.transport, "_tempDataLen", 0) or 0)


def _pick(redis: Any) -> Any:
    """A connected pool connection for the next command, or None when none is up.

    The connection that took the previous command takes this one too while that command has not
    left yet, up to :data:`STICKY_COMMANDS` commands: the commands of one reactor turn then go
    out in a few writes on a few sockets and their answers come back in a few reads, instead of
    a write, a read and two epoll changes per command (a sixth of an HTTP take's CPU). Not all
    on one connection: Redis starts on the first group while the next ones are still on their
    way, and this process answers the first while Redis runs the rest. Otherwise the next
    connection, round robin.
    """
    factory: Any = getattr(redis, "_factory", None)
    pool = getattr(factory, "pool", None)
    if not pool:
        return None
    # Kept on the pool's factory (the connection that took the last command, and how many it took
    # in a row), so that it goes when the pool goes.
    last = getattr(factory, "restmq_last", None)
    if last is not None:
        connection, taken = last
        if taken < STICKY_COMMANDS and connection.connected and _unsent(connection):
            factory.restmq_last = (connection, taken + 1)
            return connection
    connection = pool[next(_turn) % len(pool)]
    if not connection.connected:
        return None
    factory.restmq_last = (connection, 1)
    return connection


def send(redis: Any, *command: Any) -> defer.Deferred[Any]:
    """Send one command on a connected pool connection (see :func:`_pick`).

    txredisapi's handler method goes through an inlineCallbacks connection wait and a wrapper
    closure per call, about a fifth of a queue add's cost. While a connection is up we write to it
    directly; with none up (Redis away) the handler's path waits for a reconnect, and the caller's
    timeout bounds that wait.
    """
    connection = _pick(redis)
    if connection is not None:
        return connection.execute_command(*command)
    return redis.execute_command(*command)


@dataclass
class Replicated:
    """A write answered only once ``replicas`` replicas have it: ``WAIT`` is sent after the
    script's answer, with the time left before ``until`` (``time.monotonic()``), so that it never
    outlasts its caller; ``progress`` records that the write itself was applied."""

    replicas: int
    until: float
    progress: Progress


def send_replicated(redis: Any, replicated: Replicated, command: tuple[Any, ...]) -> defer.Deferred[Any]:
    """Send one write, then ``WAIT`` on the same connection (WAIT counts the writes of its own
    connection): the answer is the write's, given only once enough replicas acknowledged it;
    otherwise ``backend_unavailable`` (the write may or may not survive a failover, so the client
    should retry)."""
    if getattr(type(redis), "cluster", False):  # a cluster client: the write's master, redirections followed
        return redis.on_connection(command, lambda connection: _write_and_wait(connection, replicated, command))
    connection = _pick(redis)
    if connection is not None:
        return _write_and_wait(connection, replicated, command)
    waiting = redis._factory.getConnection(peek=True)  # none up: wait for one (the caller bounds it)
    return waiting.addCallback(_write_and_wait, replicated, command)


def _write_and_wait(connection: Any, replicated: Replicated, command: tuple[Any, ...]) -> defer.Deferred[Any]:
    def written(reply: Any) -> Any:
        replicated.progress.applied = True
        wait_ms = max(int((replicated.until - time.monotonic()) * 1000), 1)
        return connection.execute_command(b"WAIT", replicated.replicas, wait_ms).addCallback(acknowledged, reply, wait_ms)

    def acknowledged(acks: Any, reply: Any, wait_ms: int) -> Any:
        if int(acks) < replicated.replicas:
            raise BackendUnavailable(
                f"written, but only {int(acks)} of {replicated.replicas} replicas acknowledged it within {wait_ms} ms",
                applied="unknown",
            )
        return reply

    return connection.execute_command(*command).addCallback(written)
