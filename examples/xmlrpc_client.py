"""RestMQ over XML-RPC with the standard library. Start a server first: restmq serve"""

import os
import xmlrpc.client

rpc = xmlrpc.client.ServerProxy(os.environ.get("RESTMQ_URL", "http://127.0.0.1:8888") + "/RPC2")

print(rpc.set("tasks", "original method: set"))  # the original RestMQ's set -> the key
print(rpc.restmq.add("tasks", "new method: restmq.add"))
print(rpc.get("tasks"))  # the original get: takes one {"key", "value", "count"}
print(rpc.restmq.take("tasks"))
try:
    rpc.restmq.take("tasks")
except xmlrpc.client.Fault as fault:
    print("fault:", fault.faultString)  # "empty: empty queue"
