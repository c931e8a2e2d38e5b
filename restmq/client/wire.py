"""What every RestMQ client shares: the JSON protocol body, the mapping of an answer to a result
or a :class:`~restmq.errors.RestMQError`, and the command methods written once (:class:`Commands`)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from restmq.errors import BackendUnavailable, RestMQError, from_code

DEFAULT_URL = "http://127.0.0.1:8888"
JSON_TYPE = "application/json"



def request_body(name: str, args: dict[str, Any]) -> bytes:
    """The JSON protocol body for command ``name``: ``{"cmd": name, ...}`` without ``None`` args."""
    body = {"cmd": name}
    body.update((k, v) for k, v in args.items() if v is not None)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def result_of(status: int, body: bytes) -> Any:
    """The command's result from an HTTP answer, or raise the RestMQError it carries.

    ``POST /queue`` answers a failed command with 200 and ``{"error", "code"}``; other failures
    (400 unreadable request, 503 Redis away, ...) carry the same body with their status.
    """
    try:
        answer = json.loads(body) if body.strip() else None
    except ValueError:
        answer = None
        if status == 200:
            raise RestMQError(f"the server answered something that is not JSON: {body[:200]!r}")
    if isinstance(answer, dict) and isinstance(answer.get("error"), str) and isinstance(answer.get("code"), str):
        fields = {k: v for k, v in answer.items() if k not in ("error", "code")}
        raise from_code(answer["code"], answer["error"], **fields)
    if status != 200:
        text = body[:200].decode("utf-8", "replace").strip()
        raise RestMQError(f"HTTP {status} from the server: {text}", status=status)
    return answer


def unreachable(url: str, error: Any) -> BackendUnavailable:
    """The error for a server that cannot be reached at all."""
    return BackendUnavailable(f"cannot reach RestMQ at {url}: {error}", url=url)


def _base(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path prefix)`` of a server URL."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"RestMQ URL must be http:// or https://, not {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname or "127.0.0.1", port, parts.path.rstrip("/")


class Commands:
    """The command methods, written once: each calls ``self.call(name, **args)``, which answers
    the result (:class:`RestMQ`) or a Deferred of it (:class:`TxRestMQ`)."""

    def call(self, name: str, /, **args: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def add(self, queue: str, value: Any, priority: int | None = None, ttl: float | None = None,
            delay: float | None = None, dedup: str | None = None, unique: bool | None = None) -> Any:
        """Add one message: ``{"queue", "value", "key"}`` (plus ``"duplicate": true`` when a
        ``dedup`` or ``unique`` hit added nothing)."""
        return self.call("add", queue=queue, value=value, priority=priority, ttl=ttl, delay=delay, dedup=dedup,
                         unique=unique)

    def find(self, queue: str, value: Any) -> Any:
        """The key of the held ``unique`` message with this value: ``{"queue", "key"}`` (key None if none)."""
        return self.call("find", queue=queue, value=value)

    def add_many(self, queue: str, messages: list[Any]) -> Any:
        """Add up to 1000 messages (values or ``{"value", priority, ttl, delay, dedup}``): ``{"keys"}``."""
        return self.call("add_many", queue=queue, messages=list(messages))

    def take(self, queue: str, count: int | None = None, wait: float | None = None) -> Any:
        """Remove the next message (raises Empty), or a list of up to ``count`` (maybe empty)."""
        return self.call("take", queue=queue, count=count, wait=wait)

    def reserve(self, queue: str, count: int | None = None, lease: float | None = None,
                wait: float | None = None) -> Any:
        """Lease the next message (with its ``receipt``; raises Empty), or a list when ``count``."""
        return self.call("reserve", queue=queue, count=count, lease=lease, wait=wait)

    def ack(self, queue: str, receipt: str | list[str]) -> Any:
        """Acknowledge reserved messages by receipt (one or a list): ``{"acked": n}``."""
        return self.call("ack", queue=queue, receipt=receipt)

    def nack(self, queue: str, receipt: str, delay: float | None = None, error: str | None = None) -> Any:
        """Give a reserved message back now or after ``delay``: ``{"nacked": n}``."""
        return self.call("nack", queue=queue, receipt=receipt, delay=delay, error=error)

    def touch(self, queue: str, receipt: str, lease: float | None = None) -> Any:
        """Extend a reservation's lease from now: ``{"lease_until"}``."""
        return self.call("touch", queue=queue, receipt=receipt, lease=lease)

    def peek(self, queue: str, count: int | None = None, state: str | None = None) -> Any:
        """Look without delivering (``state`` ready|reserved|delayed|dead); raises Empty without count."""
        return self.call("peek", queue=queue, count=count, state=state)

    def get(self, queue: str, key: str | None = None) -> Any:
        """The message with ``key``, or (without) the original soft get of the next message."""
        return self.call("get", queue=queue, key=key)

    def delete(self, queue: str, key: str) -> Any:
        """Delete one message by key (command ``del``): ``{"queue", "deleted", "key"}``."""
        return self.call("del", queue=queue, key=key)

    def purge(self, queue: str) -> Any:
        """Empty the queue and end its streams: ``{"queue", "status", "purged"}``."""
        return self.call("purge", queue=queue)

    def len(self, queue: str) -> Any:
        """The queue's counts: ``{"ready", "reserved", "delayed", "dead", ...}``."""
        return self.call("len", queue=queue)

    def list(self) -> Any:
        """Every queue with its lengths: ``{"queues": {...}, "count"}``."""
        return self.call("list")

    def stats(self, queue: str | None = None) -> Any:
        """Server statistics, or one queue's counters."""
        return self.call("stats", queue=queue)

    def state(self, queue: str | None = None) -> Any:
        """Whether a queue is running or paused."""
        return self.call("state", queue=queue)

    def pause(self, queue: str) -> Any:
        """Stop delivering from ``queue`` (adds still accepted): ``{"state"}``."""
        return self.call("pause", queue=queue)

    def resume(self, queue: str) -> Any:
        """Deliver again: ``{"state"}``."""
        return self.call("resume", queue=queue)

    def policy(self, queue: str, policy: str | None = None) -> Any:
        """Get, or set (``broadcast``/``roundrobin``), how streams share messages."""
        return self.call("policy", queue=queue, policy=policy)

    def config(self, queue: str, max_attempts: int | None = None, lease: float | None = None,
               dedup_window: float | None = None, max_length: int | None = None) -> Any:
        """A queue's settings; sets those given."""
        return self.call("config", queue=queue, max_attempts=max_attempts, lease=lease,
                         dedup_window=dedup_window, max_length=max_length)

    def redrive(self, queue: str, count: int | None = None) -> Any:
        """Move dead-letter messages back to the queue: ``{"moved": n}``."""
        return self.call("redrive", queue=queue, count=count)

    def health(self) -> Any:
        """Whether Redis answers and how safely it keeps data."""
        return self.call("health")

    # -- recurring schedules (docs/push-and-schedules.md) --

    def schedule_set(self, name: str, queue: str, value: Any, cron: str | None = None,
                     every: int | None = None, tz: str | None = None) -> Any:
        """Create or replace schedule ``name`` (cron or every seconds): the schedule with its next fire."""
        return self.call("schedule_set", name=name, queue=queue, value=value, cron=cron, every=every, tz=tz)

    def schedule_get(self, name: str) -> Any:
        """One schedule, with its next and last fire."""
        return self.call("schedule_get", name=name)

    def schedules(self) -> Any:
        """``{"schedules": [...], "count"}``: every schedule whose queue the caller may read."""
        return self.call("schedule_ls")

    def schedule_rm(self, name: str) -> Any:
        """Delete a schedule: ``{"name", "deleted": 1, "queue"}``."""
        return self.call("schedule_rm", name=name)
