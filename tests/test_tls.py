"""TLS: RestMQ's listeners on ``ssl:`` endpoints, and Redis reached over TLS with a password."""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from restmq.backend.connect import connect
from restmq.backend.redisconf import parse_redis_url
from restmq.errors import BadRequest
from tests.conftest import free_port, redis_binary
from tests.test_backend import stop, within
from tests.test_process import Server, serve_argv, servers  # noqa: F401  (fixture)


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "restmq test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_redis(tmp_path, cert):
    """A redis-server speaking only TLS, with a password: its port."""
    cert_path, key_path = cert
    port = free_port()
    proc = subprocess.Popen(
        [redis_binary(), "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert_path),
         "--tls-key-file", str(key_path), "--tls-ca-cert-file", str(cert_path), "--tls-auth-clients", "no",
         "--requirepass", "secret", "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
         "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "TLS redis-server did not start"
            time.sleep(0.05)
    yield port
    stop(proc)


def test_rediss_url_options_are_checked(cert):
    """ssl_ca_certs must name a file and needs rediss://; ssl_cert_reqs is required or none."""
    cert_path, _ = cert
    target = parse_redis_url(f"rediss://:pw@127.0.0.1:6380/2?ssl_ca_certs={cert_path}")
    assert (target.tls, target.ca_certs, target.verify, target.db) == (True, str(cert_path), True, 2)
    assert parse_redis_url("rediss://127.0.0.1?ssl_cert_reqs=none").verify is False
    for url, why in [
        (f"redis://127.0.0.1?ssl_ca_certs={cert_path}", "need a rediss://"),
        ("rediss://127.0.0.1?ssl_ca_certs=/no/such.pem", "not a readable file"),
        ("rediss://127.0.0.1?ssl_cert_reqs=maybe", "required or none"),
    ]:
        with pytest.raises(BadRequest, match=why):
            parse_redis_url(url)


@pytest_twisted.ensureDeferred
async def test_rediss_with_password_verifies_the_server_certificate(tls_redis, cert):
    """rediss:// with the CA and the password works; without trusting the CA, or with a wrong password, it does not."""
    cert_path, _ = cert
    good = await connect(parse_redis_url(f"rediss://:secret@127.0.0.1:{tls_redis}/0?ssl_ca_certs={cert_path}"),
                         poolsize=1)
    try:
        assert await within(good.set("k", "v"), 5) == b"OK"
        assert await within(good.get("k"), 5) == b"v"
    finally:
        await good.disconnect()
    unchecked = await connect(parse_redis_url(f"rediss://:secret@127.0.0.1:{tls_redis}/0?ssl_cert_reqs=none"),
                              poolsize=1)
    try:
        assert await within(unchecked.get("k"), 5) == b"v"
    finally:
        await unchecked.disconnect()
    for url in (f"rediss://:secret@127.0.0.1:{tls_redis}/0",  # self-signed: not trusted by the system
                f"rediss://:wrong@127.0.0.1:{tls_redis}/0?ssl_cert_reqs=none"):
        with pytest.raises(Exception):
            client = await connect(parse_redis_url(url), poolsize=1, wait=1.0)
            try:
                await within(client.get("k"), 2)
            finally:
                await client.disconnect()


def test_serve_over_tls_listeners_on_a_tls_redis_with_password(tmp_path, servers, tls_redis, cert):  # noqa: F811
    """restmq serve with ssl: HTTP and line listeners on a rediss:// Redis: curl and an ssl socket work, plain TCP does not."""
    cert_path, key_path = cert
    tls = f"privateKey={key_path}:certKey={cert_path}"
    server = Server(serve_argv(tmp_path / "data", "--redis",
                               f"rediss://:secret@127.0.0.1:{tls_redis}/0?ssl_ca_certs={cert_path}",
                               "--http", f"ssl:0:interface=127.0.0.1:{tls}",
                               "--line", f"ssl:0:interface=127.0.0.1:{tls}"), cwd=tmp_path)
    servers.append(server)
    server.wait_for("engine ready")
    if "line" not in server.addresses:
        server.wait_for("line listening")
    https = server.addresses["http"]
    added = subprocess.run(["curl", "-sS", "--cacert", str(cert_path), "-d", "value=over tls",
                            f"https://{https}/q/secure"], capture_output=True, text=True, timeout=20)
    assert added.returncode == 0 and added.stdout.strip() == "secure:1", added.stderr
    context = ssl.create_default_context(cafile=str(cert_path))
    host, port = server.addresses["line"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"take secure\nquit\n")
            lines = s.makefile("rb").read().splitlines()
    assert json.loads(lines[0])["value"] == "over tls"
    plain = http.client.HTTPConnection(*https.rsplit(":", 1), timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        plain.request("GET", "/health")
        plain.getresponse()
    assert server.stop() == 0


def test_resp_memcache_and_syslog_over_tls_with_their_own_clients(tmp_path, servers, redis, cert):  # noqa: F811
    """--resp, --memcache and --syslog on ssl: endpoints: redis-py with ssl, pymemcache with a TLS context and an ssl socket work."""
    import redis as redis_py
    from pymemcache.client.base import Client

    cert_path, key_path = cert
    tls = f"privateKey={key_path}:certKey={cert_path}"
    server = Server(serve_argv(tmp_path / "data", "--redis", redis.url, "--line", "none",
                               "--resp", f"ssl:0:interface=127.0.0.1:{tls}",
                               "--memcache", f"ssl:0:interface=127.0.0.1:{tls}",
                               "--syslog", f"ssl:0:interface=127.0.0.1:{tls}"), cwd=tmp_path)
    servers.append(server)
    server.wait_for("engine ready")
    while not {"resp", "memcache", "syslog"} <= set(server.addresses):
        server.wait_for("listening")
    host, port = server.addresses["resp"].rsplit(":", 1)
    r = redis_py.Redis(host=host, port=int(port), ssl=True, ssl_ca_certs=str(cert_path), protocol=2)
    assert r.rpush("secure", "a", "b") == 2 and r.lpop("secure") == b"a"
    r.close()
    host, port = server.addresses["memcache"].rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(cert_path))
    mc = Client((host, int(port)), tls_context=context, default_noreply=False)
    assert mc.set("secure", "c") is True
    assert mc.get("secure") == b"b" and mc.get("secure") == b"c"
    mc.close()
    host, port = server.addresses["syslog"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"<13>Nov 23 12:00:00 web app: over tls\n")
    for _ in range(50):
        status, body = request_json(server.url("/q/syslogd:127.0.0.1"))
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200 and "over tls" in body["value"]
    assert server.stop() == 0


def request_json(url: str) -> tuple[int, Any]:
    from tests.test_process import http as request

    status, raw = request("GET", url)
    return status, (json.loads(raw) if status == 200 else None)
