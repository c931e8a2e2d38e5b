"""The Lua scripts, loaded once and called by SHA; reloaded when Redis has forgotten them."""

from __future__ import annotations

from importlib import resources
import itertools
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

NAMES = (
    "add", "take", "read", "del", "purge", "len", "conf", "config", "stats", "subs", "ack", "nack",
    "touch", "redrive", "settle", "due", "retime", "replay", "find",
)


def source(name: str) -> str:
    """The text of ``lua/<name>.lua``, shipped inside the package."""
    return resources.files("restmq.engine").joinpath("lua", f"{name}.lua").read_text("utf-8")


def declared_keys(text: str) -> tuple[str, ...]:
    """The key roles a script declares on its first line (``-- KEYS: ready messages``), in the
    order it reads them as ``KEYS[1]``…: the script, not a second table, says what it touches."""
    first = text.split("\n", 1)[0]
    if not first.startswith("-- KEYS:"):
        raise ValueError(f"a script must start with '-- KEYS: role …', not {first!r}")
    return tuple(first[len("-- KEYS:"):].split())


def assemble(text: str, defaults: dict[str, int]) -> str:
    """The script Redis runs: its declared keys by role (``K.ready`` …), the event channel
    (``ARGV[1]`` of every script), the settings' defaults, the shared library, then its body."""
    roles = declared_keys(text)
    keys = ", ".join(f"{role} = KEYS[{i}]" for i, role in enumerate(roles, 1))
    settings = ", ".join(f"{name} = {value}" for name, value in sorted(defaults.items()))
    return (
        f"local K = {{{keys}}}\nlocal CHANNEL = ARGV[1]\nlocal DEFAULT = {{{settings}}}\n"
        + source("_lib")
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

    def call(self, redis: Any, name: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        """Run script ``name``; one retry after reloading when Redis answers NOSCRIPT.

        The common case is a plain Deferred chain (no coroutine): this is every command's path.
        """
        sha = self._sha.get(name)
        if sha is None:
            return defer.ensureDeferred(self._reload_and_call(redis, name, keys, args))
        d = send(redis, b"EVALSHA", sha, len(keys), *keys, *args)

        def noscript(failure: Failure) -> Any:
            if failure.check(txredisapi.ResponseError) and str(failure.value).startswith("NOSCRIPT"):
                log.info("redis forgot the lua scripts; loading them again")
                return defer.ensureDeferred(self._reload_and_call(redis, name, keys, args))
            return failure

        return d.addErrback(noscript)

    async def _reload_and_call(self, redis: Any, name: str, keys: list[str], args: list[Any]) -> Any:
        await self.load(redis)
        return await send(redis, b"EVALSHA", self._sha[name], len(keys), *keys, *args)


_turn = itertools.count()


def send(redis: Any, *command: Any) -> defer.Deferred[Any]:
    """Send one command on a connected pool connection, round robin.

    txredisapi's handler method goes through an inlineCallbacks connection wait and a wrapper
    closure per call, about a fifth of a queue add's cost. While a connection is up we write to it
    directly; with none up (Redis away) the handler's path waits for a reconnect, and the caller's
    timeout bounds that wait.
    """
    pool = getattr(getattr(redis, "_factory", None), "pool", None)
    if pool:
        connection = pool[next(_turn) % len(pool)]
        if connection.connected:
            return connection.execute_command(*command)  # type: ignore[no-any-return]
    return redis.execute_command(*command)  # type: ignore[no-any-return]
