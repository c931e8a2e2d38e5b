"""RestMQ through the memcached protocol with pymemcache, Kestrel style (run:
restmq serve --memcache tcp:22133:interface=127.0.0.1)."""

from pymemcache.client.base import Client

mc = Client(("127.0.0.1", 22133), default_noreply=False)  # wait for STORED and errors
mc.set("mail", "to=ada@example.org")  # queued
print(mc.get("mail"))  # b'to=ada@example.org' (taken: at-most-once)

mc.set("mail", "to=bob@example.org")
job = mc.get("mail/t=5000/open")  # reserved for this connection, waiting up to 5 s
print(job)  # if this process dies now, the message goes back to the queue at once
mc.get("mail/close")  # done: acknowledged and deleted
print(mc.get("mail/t=200"))  # None: empty after 0.2 s

print(mc.add("users", "ada"), mc.add("users", "ada"))  # True False: add skips a value already queued
print(mc.delete("users"))  # True: purged
