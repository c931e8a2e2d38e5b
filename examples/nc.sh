#!/usr/bin/env sh
# RestMQ's line protocol with nc: one command per line, one JSON answer per line.
# Start a server first: restmq serve   (line protocol on 127.0.0.1:8889)
printf 'add chat hello world\nlen chat\n{"cmd": "take", "queue": "chat"}\nping\nquit\n' \
    | nc -q 2 127.0.0.1 "${RESTMQ_LINE_PORT:-8889}" 2>/dev/null \
    || printf 'add chat hello world\nlen chat\n{"cmd": "take", "queue": "chat"}\nping\nquit\n' \
    | nc 127.0.0.1 "${RESTMQ_LINE_PORT:-8889}"
