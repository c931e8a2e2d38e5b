"""twistd plugin: ``twistd restmq …``. Imports nothing of RestMQ so plugin discovery stays cheap."""

from twisted.application.service import ServiceMaker

restmq = ServiceMaker(
    "RestMQ",
    "restmq.tap",
    "A Redis-backed message queue over HTTP, XML-RPC, a line, Redis and memcached protocols.",
    "restmq",
)
