"""Errors as data: every failure a client can see has a stable code and a human message.

Front ends map ``code`` to their framing (HTTP status, XML-RPC fault, error line) in one table each;
nothing else about an error is front-end specific.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class RestMQError(Exception):
    """A failure with a stable ``code`` that clients can match on, and extra ``fields`` for context."""

    code = "internal"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        """The error as the JSON body every front end sends: ``{"error", "code"}`` plus fields."""
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        body.update(self.fields)
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadRequest(RestMQError):
    code = "bad_request"


class BadQueueName(RestMQError):
    code = "bad_queue_name"


class UnknownCommand(RestMQError):
    code = "unknown_command"


class Empty(RestMQError):
    code = "empty"


class NotFound(RestMQError):
    code = "not_found"


class StaleReceipt(RestMQError):
    code = "stale_receipt"


class TooLarge(RestMQError):
    code = "too_large"


class QueueFull(RestMQError):
    code = "queue_full"


class Unauthorized(RestMQError):
    code = "unauthorized"


class Forbidden(RestMQError):
    code = "forbidden"


class Misdirected(RestMQError):
    """HTTP only: the Host header names another server (DNS rebinding); see --allowed-hosts."""

    code = "misdirected"


class BackendUnavailable(RestMQError):
    code = "backend_unavailable"


class LimitExceeded(RestMQError):
    """A server limit (connections, subscribers, queues, slow clients): try later or elsewhere."""

    code = "limit_exceeded"


ERRORS: dict[str, type[RestMQError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        BadQueueName,
        UnknownCommand,
        Empty,
        NotFound,
        StaleReceipt,
        TooLarge,
        QueueFull,
        Unauthorized,
        Forbidden,
        BackendUnavailable,
        LimitExceeded,
    )
}


#: What a client is told of a failure nobody planned for: no traceback, no exception text.
INTERNAL_MESSAGE = "internal error"


def internal(failure: Failure | None, why: str, **fields: Any) -> RestMQError:
    """The one answer to an unexpected exception: it is a bug, so it is logged here with its
    traceback (``failure``, or the exception being handled when None) under ``why`` (a log format
    with named ``fields``), and the client gets only ``internal error`` (code ``internal``)."""
    log.failure(why, failure, **fields)
    return RestMQError(INTERNAL_MESSAGE)


def from_code(code: str, message: str, **fields: Any) -> RestMQError:
    """Rebuild an error from its wire form (used by clients of the HTTP API)."""
    return ERRORS.get(code, RestMQError)(message, **fields)
