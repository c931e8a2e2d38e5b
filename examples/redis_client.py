"""RestMQ through the Redis protocol with redis-py (run: restmq serve --resp tcp:6380:interface=127.0.0.1).

RestMQ is a queue, not a list: whichever end a client pushes and pops, the oldest message comes first.
"""

import redis

r = redis.Redis(port=6380)  # RESP3 (redis-py's default) and protocol=2 both work
r.rpush("emails", "ada@example.org", "bob@example.org")
print(r.lpop("emails"))  # b'ada@example.org'
print(r.blpop(["emails", "sms"], timeout=5))  # (b'emails', b'bob@example.org')

print(r.sadd("tags", "red", "green", "red"))  # 2: a queued value is added once
print(r.sismember("tags", "red"))  # 1

pipe = r.pipeline(transaction=False)  # MULTI/EXEC is refused: use a plain pipeline
for n in range(3):
    pipe.rpush("emails", f"user{n}@example.org")
pipe.llen("emails")
print(pipe.execute())  # [1, 2, 3, 3]
