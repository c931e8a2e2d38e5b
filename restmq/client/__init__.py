"""Python clients for a RestMQ server: :class:`RestMQ` (blocking) and :class:`TxRestMQ`
(Twisted, Deferreds).

Both speak the JSON protocol (``POST /queue`` with ``{"cmd": name, ...args}``) and share the
command methods (:class:`Commands`), the request body (:func:`request_body`) and the mapping of an
answer to a result or a :class:`~restmq.errors.RestMQError` subclass (:func:`result_of`), so they
behave the same::

    from restmq.client import RestMQ

    mq = RestMQ("http://127.0.0.1:8888")
    mq.add("jobs", {"n": 1})            # {"queue": "jobs", "value": {"n": 1}, "key": "jobs:1"}
    msg = mq.reserve("jobs", lease=60)  # raises restmq.errors.Empty when there is nothing
    mq.ack("jobs", msg["receipt"])
    for message in mq.subscribe("jobs"):  # COMET: each new message until the queue is purged
        ...

Arguments given as ``None`` are not sent (the server's defaults apply). Answers are the JSON
shapes of docs/commands.md, as dicts and lists.

Two more APIs for code written against other queues: :class:`Queue`, the standard library's
``queue.Queue`` interface over one RestMQ queue with at-least-once delivery (works across
processes), and :class:`QueueClient`, ZenQueue's ``push``/``pull`` client over the line protocol.
"""

from restmq.client.blocking import RestMQ, Subscription
from restmq.client.line import QueueClient, Timeout
from restmq.client.queue import Queue
from restmq.client.tx import TxRestMQ
from restmq.client.wire import DEFAULT_URL, request_body, result_of

__all__ = [
    "RestMQ", "TxRestMQ", "Subscription", "Queue", "QueueClient", "Timeout", "request_body", "result_of",
    "DEFAULT_URL",
]
