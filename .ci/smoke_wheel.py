"""Smoke test of an installed wheel: run by the python of a clean venv, from outside the checkout.

Checks what an editable install hides: the Lua scripts and the dashboard's static files are in the
package, the twistd plugin is discovered, and serving needs only the runtime dependencies.
Exits non-zero, with the reason and the server's output, on the first failure. Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
DEADLINE = time.monotonic() + 50


def fail(reason: str, output: list[str] | None = None) -> None:
    sys.stderr.write(f"SMOKE FAILED: {reason}\n")
    if output:
        sys.stderr.write("---- server output ----\n" + "".join(output))
    sys.exit(1)


def http(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Server:
    """A server process whose output is collected; ``url`` once it logged its HTTP address."""

    def __init__(self, argv: list[str], cwd: str) -> None:
        self.output: list[str] = []
        self.address: str | None = None
        self.ready = threading.Event()
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            found = re.search(r"http listening on (\S+)", line)
            if found:
                self.address = found.group(1)
            if "engine ready" in line:
                self.ready.set()

    def wait_ready(self) -> str:
        while time.monotonic() < DEADLINE and self.proc.poll() is None:
            if self.ready.wait(0.1) and self.address:
                return f"http://{self.address}"
        fail(f"{self.proc.args[:3]} did not become ready (exit code {self.proc.poll()})", self.output)
        raise AssertionError  # not reached

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(max(1.0, DEADLINE - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("the server did not stop on SIGTERM", self.output)
            raise


def check(condition: bool, what: str, server: Server) -> None:
    if not condition:
        server.proc.kill()
        fail(what, server.output)
    print(f"ok  {what}")


def queue_round_trip(server: Server, base: str, queue: str) -> None:
    """add (Lua scripts found), take, reserve and ack over HTTP; the dashboard's page is served."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    status, body = http("POST", f"{base}/q/{queue}", b"value=hello", form)
    check((status, body) == (200, f"{queue}:1\r\n".encode()), f"add -> 200 {queue}:1 (got {status} {body!r})", server)
    status, body = http("GET", f"{base}/q/{queue}")
    check(status == 200 and json.loads(body)["value"] == "hello", f"take -> hello (got {status} {body!r})", server)
    http("POST", f"{base}/q/{queue}", b"value=work", form)
    status, body = http("GET", f"{base}/q/{queue}?lease=30")
    reserved = json.loads(body) if status == 200 else {}
    check(status == 200 and reserved.get("value") == "work" and "receipt" in reserved,
          f"reserve -> work with a receipt (got {status} {body!r})", server)
    status, body = http("POST", f"{base}/q/{queue}/ack", json.dumps({"receipt": reserved["receipt"]}).encode(),
                        {"content-type": "application/json"})
    check(status == 200, f"ack -> 200 (got {status} {body!r})", server)
    status, body = http("GET", f"{base}/q/{queue}")
    check(status == 204, f"queue empty after ack (got {status} {body!r})", server)
    status, body = http("GET", f"{base}/dashboard")
    check(status == 200 and b"<html" in body.lower(), f"GET /dashboard -> 200 HTML (got {status})", server)


def main() -> None:
    import restmq

    where = Path(restmq.__file__).resolve()
    print(f"restmq imported from {where}")
    if not str(where).startswith(str(Path(sys.prefix).resolve())):
        fail(f"restmq was imported from {where}, not from the venv {sys.prefix}")
    work = tempfile.mkdtemp(prefix="restmq-smoke-")
    listen = ["--http", "tcp:0:interface=127.0.0.1", "--line", "none"]

    serve = Server([str(BIN / "restmq"), "serve", "--data", f"{work}/serve-data", *listen], cwd=work)
    queue_round_trip(serve, serve.wait_ready(), "smoke")
    code = serve.stop()
    check(code == 0, f"restmq serve stops with 0 on SIGTERM (got {code})", serve)

    help_text = subprocess.run([str(BIN / "twistd"), "--help"], capture_output=True, text=True, timeout=30, cwd=work)
    if not re.search(r"^\s+restmq\s", help_text.stdout, re.M):
        fail("twistd --help does not list the restmq plugin", [help_text.stdout, help_text.stderr])
    print("ok  twistd --help lists restmq")

    twistd = Server([str(BIN / "twistd"), "-n", "--pidfile=", "restmq", "--data", f"{work}/twistd-data", *listen],
                    cwd=work)
    queue_round_trip(twistd, twistd.wait_ready(), "plugin")
    code = twistd.stop()
    check(code in (0, -signal.SIGTERM), f"twistd -n restmq stops on SIGTERM (got {code})", twistd)
    print(f"smoke test passed in {50 - (DEADLINE - time.monotonic()):.1f} s")


if __name__ == "__main__":
    main()
