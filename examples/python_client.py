"""RestMQ from Python with nothing but the standard library. Start a server first: restmq serve"""

import json
import os
import urllib.request

URL = os.environ.get("RESTMQ_URL", "http://127.0.0.1:8888")


def call(method: str, path: str, body: dict | None = None):
    """One JSON request; answers the decoded JSON (None for 204 No Content)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        URL + path, data=data, method=method,
        headers={"content-type": "application/json", "accept": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read()) if answer.status != 204 else None


print(call("POST", "/q/emails", {"value": {"to": "ada@example.org", "subject": "hi"}}))
print(call("POST", "/q/emails", {"messages": ["one", "two", {"value": "urgent", "priority": 0}]}))
print(call("GET", "/q/emails?count=10"))
print(call("GET", "/q/emails"))  # None: the queue is empty

# At-least-once: reserve hides a message for its lease; ack it when done, or it comes back.
call("POST", "/q/emails", {"value": "send the newsletter"})
job = call("GET", "/q/emails?lease=30")
print("working on", job["key"], "attempt", job["attempts"])
print(call("POST", "/q/emails/ack", {"receipt": job["receipt"]}))  # {'queue': 'emails', 'acked': 1}
