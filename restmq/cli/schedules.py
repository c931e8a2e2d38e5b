"""``restmq schedule set|get|ls|rm``: recurring schedules from the command line (docs/push-and-schedules.md)."""

from __future__ import annotations

import json
from typing import Any

from twisted.python import usage

from restmq.cli.client import EXIT_OK, ClientOptions, show
from restmq.cli.queues import table

ACTIONS = ("set", "get", "ls", "rm")


def _when(schedule: dict[str, Any]) -> str:
    return schedule.get("cron") or f"every {schedule.get('every')}s"


class ScheduleOptions(ClientOptions):
    synopsis = "set|get|ls|rm [NAME] [options]"
    longdesc = (
        "Manage recurring schedules: each tick adds VALUE to QUEUE once, however many servers run. "
        "set NAME --queue Q --value V (--cron '*/5 * * * *' | --every SECONDS) [--tz Europe/Riga]; "
        "get NAME; ls; rm NAME. Setting or deleting needs the admin right on the queue."
    )
    optParameters: list[list[Any]] = [
        ["queue", "q", None, "set: the queue each fire adds to."],
        ["value", "v", None, "set: the message each fire adds (text, or JSON with --json-value)."],
        ["cron", "c", None, "set: five-field cron expression, minute granularity (or --every)."],
        ["every", "e", None, "set: seconds between fires, at least 1 (or --cron).", int],
        ["tz", None, None, "set: IANA time zone the cron expression is read in (default UTC)."],
    ]
    optFlags: list[list[Any]] = [["json-value", None, "set: parse --value as JSON."]]

    def parseArgs(self, action: str, name: str | None = None) -> None:  # type: ignore[override]
        if action not in ACTIONS:
            raise usage.UsageError(f"unknown schedule action {action!r}: use {', '.join(ACTIONS)}")
        if (name is None) != (action == "ls"):
            raise usage.UsageError("ls takes no NAME" if action == "ls" else f"{action} needs a NAME")
        self.action, self.name = action, name

    def postOptions(self) -> None:
        if self.action == "set" and (self["queue"] is None or self["value"] is None):
            raise usage.UsageError("set needs --queue and --value (and --cron or --every)")

    def run(self, mq: Any) -> int:
        if self.action == "ls":
            answer = mq.schedules()
            rows = [[s["name"], s["queue"], _when(s), s["tz"], s["next"], s.get("last") or "-", s["fires"]]
                    for s in answer.get("schedules", [])]
            self.out(answer, lambda: table(["name", "queue", "when", "tz", "next", "last", "fires"], rows))
            return EXIT_OK
        if self.action == "rm":
            answer = mq.schedule_rm(self.name)
            self.out(answer, f"deleted {self.name}")
            return EXIT_OK
        if self.action == "get":
            answer = mq.schedule_get(self.name)
        else:
            value: Any = self["value"]
            if self["json-value"]:
                try:
                    value = json.loads(value)
                except ValueError as e:
                    raise usage.UsageError(f"--value is not JSON: {e}") from None
            answer = mq.schedule_set(self.name or "", self["queue"], value, cron=self["cron"],
                                     every=self["every"], tz=self["tz"])
        self.out(answer, lambda: f"{answer['name']}: {_when(answer)} ({answer['tz']}) -> {answer['queue']}  "
                                 f"next {answer['next']}  last {answer.get('last') or '-'}  "
                                 f"value {show(answer['value'])}")
        return EXIT_OK
