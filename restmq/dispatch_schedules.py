"""The dispatcher's schedule commands (``schedule_set|get|ls|rm``, docs/push-and-schedules.md).

Kept apart from :mod:`restmq.dispatch` because their rights depend on a queue that is not in
their arguments: a schedule's target queue is read from Redis, then the caller is judged on it
(admin to change or delete a schedule, read to see one), and a listing shows only the schedules
whose queue the caller may read, by the same rule as every other listing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from restmq.auth import permits
from restmq.errors import NotFound
from restmq.ports import TRUSTED, Authorizer, Principal
from restmq.recurrence import Schedule, Timing

if TYPE_CHECKING:
    from restmq.engine import QueueEngine

#: The schedule commands: the dispatcher hands them the caller, as it does to listings.
SCHEDULE_COMMANDS = frozenset({"schedule_set", "schedule_get", "schedule_ls", "schedule_rm"})


class ScheduleCommands:
    """Mixed into :class:`restmq.dispatch.Dispatcher`: its ``_cmd_schedule_*`` handlers."""

    engine: QueueEngine
    authorize: Authorizer | None

    def _encode(self, value: Any) -> bytes:
        """The Dispatcher's: a message's JSON, refused over the size limit."""
        raise NotImplementedError

    def _judge(self, principal: Principal, right: str, queue: str) -> None:
        if self.authorize is not None and principal is not TRUSTED:
            self.authorize(principal, right, queue)

    async def _found(self, name: str, principal: Principal, right: str) -> Schedule:
        """Schedule ``name`` if the caller has ``right`` on its queue (else forbidden, as for a
        command on that queue); not_found when there is none."""
        schedule = await self.engine.schedules.get(name)
        if schedule is None:
            raise NotFound(f"no schedule {name!r}")
        self._judge(principal, right, schedule.queue)
        return schedule

    async def _cmd_schedule_set(
        self, name: str, queue: str, value: Any, cron: str | None, every: int | None, tz: str | None,
        principal: Principal,
    ) -> dict[str, Any]:
        """The queue's admin right was checked by the dispatcher; moving a schedule needs admin on
        the queue it leaves too. The first tick is the first one after now."""
        timing = Timing.check(cron, every, tz)
        self._encode(value)  # the same size limit as an add's
        old = await self.engine.schedules.queue_of(name)
        if old is not None and old != queue:
            self._judge(principal, "admin", old)
        now = self.engine.schedules.now_ms(self.engine.clock.seconds())
        schedule = Schedule(name, queue, value, timing, timing.next_after(now))
        return (await self.engine.schedules.put(schedule)).to_dict()

    async def _cmd_schedule_get(self, name: str, principal: Principal) -> dict[str, Any]:
        return (await self._found(name, principal, "read")).to_dict()

    async def _cmd_schedule_rm(self, name: str, principal: Principal) -> dict[str, Any]:
        await self._found(name, principal, "admin")
        removed = await self.engine.schedules.remove(name)
        if removed is None:
            raise NotFound(f"no schedule {name!r}")
        return {"name": name, "deleted": 1, "queue": removed.queue}

    async def _cmd_schedule_ls(self, principal: Principal) -> dict[str, Any]:
        schedules = await self.engine.schedules.all()
        if self.authorize is not None and principal is not TRUSTED:
            authorize = self.authorize
            schedules = [s for s in schedules if permits(authorize, principal, "read", s.queue)]
        return {"schedules": [s.to_dict() for s in schedules], "count": len(schedules)}
