"""The schedule routes (docs/push-and-schedules.md): ``/schedules`` and ``/schedules/<name>``.

Framing only, over :meth:`Front.run`: ``GET /schedules`` lists (``schedule_ls``); ``PUT
/schedules/<name>`` with a JSON object (or a form) sets (``schedule_set``, the path's name wins
over the body's); ``GET`` and ``DELETE /schedules/<name>`` read and delete one.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from restmq.frontends.http.common import DELETE, GET, PUT, Answer, Endpoint, Front, args_with_body, callback_of, query, queue_name
from restmq.wire import form

ANSWER = Answer()


class Schedules(Endpoint):
    """``/schedules``: ``GET`` lists them; ``/schedules/<name>`` is one schedule."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self if not path else ScheduleEndpoint(self.front, queue_name(path))

    def render_GET(self, request: Request) -> int:
        args = form.command_args(query(request))
        return self.front.run(request, "schedule_ls", args, ANSWER, callback_of(request))


class ScheduleEndpoint(Endpoint):
    """``/schedules/<name>``: ``PUT`` creates or replaces it, ``GET`` shows it, ``DELETE`` removes it."""

    methods = (GET, PUT, DELETE)

    def __init__(self, front: Front, name: str) -> None:
        super().__init__(front)
        self.name = name

    def _run(self, request: Request, command: str, args: dict[str, Any]) -> int:
        args["name"] = self.name
        return self.front.run(request, command, args, ANSWER, callback_of(request))

    def render_GET(self, request: Request) -> int:
        return self._run(request, "schedule_get", form.command_args(query(request)))

    def render_DELETE(self, request: Request) -> int:
        return self._run(request, "schedule_rm", form.command_args(query(request)))

    def render_PUT(self, request: Request) -> int:
        args, _ = args_with_body(request)
        return self._run(request, "schedule_set", args)
