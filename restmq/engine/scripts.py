"""The Lua scripts, loaded once and called by SHA; reloaded when Redis has forgotten them."""

from __future__ import annotations

from importlib import resources
from typing import Any

import txredisapi
from twisted.logger import Logger

log = Logger()

NAMES = ("add", "take", "read", "del", "purge", "len", "conf", "stats")


def source(name: str) -> str:
    """The text of ``lua/<name>.lua``, shipped inside the package."""
    return resources.files("restmq.engine").joinpath("lua", f"{name}.lua").read_text("utf-8")


class Scripts:
    """Calls scripts by name with EVALSHA, loading them again on NOSCRIPT (Redis restarted or flushed)."""

    def __init__(self) -> None:
        self._source = {name: source(name) for name in NAMES}
        self._sha: dict[str, str] = {}

    async def load(self, redis: Any) -> None:
        """Load every script; called at start and after a NOSCRIPT answer."""
        for name, text in self._source.items():
            sha = await redis.script_load(text)
            self._sha[name] = sha.decode() if isinstance(sha, bytes) else sha
        log.debug("lua scripts loaded count={count}", count=len(self._sha))

    async def call(self, redis: Any, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name``; one retry after reloading when Redis answers NOSCRIPT."""
        if name not in self._sha:
            await self.load(redis)
        try:
            return await redis.evalsha(self._sha[name], keys, args)
        except txredisapi.ScriptDoesNotExist:
            log.info("redis forgot the lua scripts; loading them again")
            await self.load(redis)
            return await redis.evalsha(self._sha[name], keys, args)
