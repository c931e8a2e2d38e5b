"""Send syslog lines to RestMQ's syslog receiver, then read them back over HTTP.

Start a server with the receiver on: restmq serve --syslog tcp:25000:interface=127.0.0.1
Each line lands on queue syslogd:<your address> as the JSON text of
{"line", "host", "tstamp", "facility", "severity"}.
"""

import json
import os
import socket
import time
import urllib.request

URL = os.environ.get("RESTMQ_URL", "http://127.0.0.1:8888")

with socket.create_connection(("127.0.0.1", int(os.environ.get("RESTMQ_SYSLOG_PORT", "25000")))) as s:
    s.sendall(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8\n")
    s.sendall(b"a line without a priority\n")
time.sleep(0.2)  # the receiver answers nothing: give it a moment to store the lines

for _ in range(2):
    with urllib.request.urlopen(f"{URL}/q/syslogd:127.0.0.1") as answer:
        record = json.loads(json.loads(answer.read())["value"])
        print(record["facility"], record["severity"], record["line"])
