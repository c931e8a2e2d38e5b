#!/usr/bin/env sh
# RestMQ over HTTP with curl. Start a server first: restmq serve
set -eu
URL=${RESTMQ_URL:-http://127.0.0.1:8888}

# Add: the answer is the message key as plain text (the original RestMQ's answer).
curl -s -X POST -d value=hello "$URL/q/jobs"
# Add with a JSON body: 201 and a JSON answer.
curl -s -X POST -H 'content-type: application/json' -d '{"value": {"n": 1}, "priority": 0}' "$URL/q/jobs"; echo
# Take the next message (lowest priority first); an empty queue answers 204.
curl -s "$URL/q/jobs"; echo
curl -s "$URL/q/jobs"; echo
curl -s -o /dev/null -w 'empty queue -> HTTP %{http_code}\n' "$URL/q/jobs"
# The JSON protocol of the original RestMQ.
curl -s -X POST -d '{"cmd": "add", "queue": "jobs", "value": "via /queue"}' "$URL/queue"; echo
curl -s -X POST -d '{"cmd": "take", "queue": "jobs"}' "$URL/queue"; echo
# Stats and the queue's length.
curl -s "$URL/stats/jobs"; echo
