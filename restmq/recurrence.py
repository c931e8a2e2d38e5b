"""When a recurring schedule fires: its timing rule (cron or every), checked, and its next tick.

A schedule's ticks are instants in milliseconds since the Unix epoch, the same for every process
that computes them, so that all of them agree on which tick is due (the fire script compares the
stored tick, see restmq/engine/lua/sched.lua). ``every: N`` ticks at the multiples of N seconds
since the epoch; a cron expression ticks at its minutes in the schedule's IANA time zone (cronsim
evaluates it as Debian's cron does, DST transitions included). Pure: no Twisted, no Redis.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from restmq.errors import BadRequest
from restmq.wire.chunked import dumps

#: A schedule name: a letter or digit, then up to 127 letters, digits and ``. _ : -`` (it is a
#: path segment of /schedules/<name> and a word of the line protocol, so nothing to escape).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
NAME_RULE = "a schedule name is 1-128 letters, digits and . _ : - (starting with a letter or digit)"
#: Longest ``every``: a year, in seconds.
MAX_EVERY = 365 * 86400
DEFAULT_TZ = "UTC"


def check_name(name: Any) -> str:
    """``name`` if it is a valid schedule name, else ``bad_request`` saying the rule."""
    if not isinstance(name, str) or not NAME.match(name):
        shown = name[:140] if isinstance(name, str) else type(name).__name__
        raise BadRequest(f"invalid schedule name {shown!r}: {NAME_RULE}")
    return name


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (``Europe/Riga``), else ``bad_request``. UTC needs no zoneinfo
    database, so the default works on a system without one."""
    if name == DEFAULT_TZ:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(
            f"unknown time zone {name[:80]!r}: use an IANA name such as UTC or Europe/Riga "
            "(the system's zoneinfo database, or the tzdata package, must know it)"
        ) from None


@dataclass(frozen=True)
class Timing:
    """A schedule's rule: ``cron`` (five fields, minute granularity) or ``every`` seconds, and
    the time zone cron is read in."""

    cron: str | None
    every: int | None
    tz: str

    @classmethod
    def check(cls, cron: str | None, every: int | None, tz: str | None) -> Timing:
        """Refuse what would never fire, or fire ambiguously: both or neither of cron and every,
        a cron expression that is not five valid fields, an unknown zone."""
        if (cron is None) == (every is None):
            raise BadRequest("a schedule needs either cron or every (not both)")
        tz = tz or DEFAULT_TZ
        zone(tz)
        if cron is not None:
            cron = " ".join(cron.split())
            if len(cron.split()) != 5:
                raise BadRequest(
                    f"cron must have five fields (minute hour day-of-month month day-of-week), "
                    f"not {cron[:80]!r}"
                )
            try:
                CronSim(cron, datetime(2000, 1, 1, tzinfo=timezone.utc))
            except CronSimError as e:
                raise BadRequest(f"bad cron expression {cron[:80]!r}: {e}") from None
            except Exception:  # cronsim's own checks missed it: still the client's input
                raise BadRequest(f"bad cron expression {cron[:80]!r}") from None
            timing = cls(cron, None, tz)
            timing.next_after(0)  # never matches (Feb 30): refuse it now
            return timing
        return cls(None, every, tz)

    def next_after(self, ms: int) -> int:
        """The first tick strictly after ``ms`` (epoch milliseconds)."""
        if self.every is not None:
            step = self.every * 1000
            return (ms // step + 1) * step
        assert self.cron is not None
        start = datetime.fromtimestamp(ms / 1000, zone(self.tz))
        try:
            found = next(iter(CronSim(self.cron, start)))
        except StopIteration:
            raise BadRequest(f"cron expression {self.cron!r} never matches") from None
        except CronSimError as e:
            raise BadRequest(f"bad cron expression {self.cron!r}: {e}") from None
        return int(found.timestamp()) * 1000

    def to_dict(self) -> dict[str, Any]:
        """The rule as the commands answer it (only the rule's own field, and tz)."""
        rule: dict[str, Any] = {"cron": self.cron} if self.cron is not None else {"every": self.every}
        return {**rule, "tz": self.tz}


@dataclass(frozen=True)
class Schedule:
    """One schedule as stored in its queue's ``schedules`` hash: the definition (queue, value,
    timing) and its state (next tick, last fired tick, how many fires, the last message's n)."""

    name: str
    queue: str
    value: Any
    timing: Timing
    next_ms: int
    last_ms: int = 0
    fires: int = 0
    last_n: int = 0

    def definition(self) -> bytes:
        """The definition's JSON, the part of the record that only a set changes."""
        return dumps({"queue": self.queue, "value": self.value, **self.timing.to_dict()})

    def record(self) -> bytes:
        """The stored record: ``next_ms:last_ms:fires:last_n:`` then the definition JSON."""
        return b"%d:%d:%d:%d:" % (self.next_ms, self.last_ms, self.fires, self.last_n) + self.definition()

    @classmethod
    def parse(cls, name: str, record: bytes) -> Schedule:
        """Read a stored record back (written by :meth:`record` and sched.lua)."""
        next_ms, last_ms, fires, last_n, definition = record.split(b":", 4)
        found = json.loads(definition)
        timing = Timing(found.get("cron"), found.get("every"), found.get("tz", DEFAULT_TZ))
        return cls(name, found["queue"], found["value"], timing, int(next_ms), int(last_ms), int(fires), int(last_n))

    def to_dict(self) -> dict[str, Any]:
        """The commands' answer: the definition, the next tick and the last fire (ISO 8601 UTC
        and ms), the count of fires and the key of the last message added."""
        return {
            "name": self.name,
            "queue": self.queue,
            "value": self.value,
            **self.timing.to_dict(),
            "next": iso(self.next_ms),
            "next_ms": self.next_ms,
            "last": iso(self.last_ms) if self.last_ms else None,
            "last_ms": self.last_ms or None,
            "last_key": f"{self.queue}:{self.last_n}" if self.last_n else None,
            "fires": self.fires,
        }


def iso(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC (``2026-01-01T09:00:00Z``)."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
