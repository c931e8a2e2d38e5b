"""CORS: off unless --cors names the origins whose pages may call RestMQ."""

from __future__ import annotations

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.python import usage

from restmq.frontends.http.routes import build_site
from restmq.tap import parse


@pytest_twisted.async_yield_fixture
async def cors_site(dispatcher):
    """A Site allowing one origin, and one with CORS off (the default): their base URLs."""
    ports = [
        reactor.listenTCP(0, build_site(dispatcher, reactor=reactor, cors=cors), interface="127.0.0.1")
        for cors in (("https://app.example.org",), ())
    ]
    yield [f"http://127.0.0.1:{p.getHost().port}" for p in ports]
    for p in ports:
        await p.stopListening()


@pytest_twisted.ensureDeferred
async def test_cors_headers_only_for_allowed_origins(cors_site):
    """An allowed origin gets Access-Control-Allow-Origin (with credentials); another origin, or a server without --cors, gets none."""
    allowed, off = cors_site
    ok = await treq.get(allowed + "/health", headers={"origin": "https://app.example.org"}, persistent=False)
    assert ok.headers.getRawHeaders("access-control-allow-origin") == ["https://app.example.org"]
    assert ok.headers.getRawHeaders("access-control-allow-credentials") == ["true"]
    other = await treq.get(allowed + "/health", headers={"origin": "https://evil.example"}, persistent=False)
    assert other.headers.getRawHeaders("access-control-allow-origin") is None
    default = await treq.get(off + "/health", headers={"origin": "https://app.example.org"}, persistent=False)
    assert default.headers.getRawHeaders("access-control-allow-origin") is None


@pytest_twisted.ensureDeferred
async def test_cors_preflight_is_answered_for_allowed_origins_only(cors_site):
    """A preflight OPTIONS from an allowed origin answers 204 with the methods and headers; others get no CORS headers."""
    allowed, _ = cors_site
    pre = {"origin": "https://app.example.org", "access-control-request-method": "POST",
           "access-control-request-headers": "authorization, content-type"}
    answer = await treq.request("OPTIONS", allowed + "/q/jobs", headers=pre, persistent=False)
    assert answer.code == 204
    assert "POST" in answer.headers.getRawHeaders("access-control-allow-methods")[0]
    assert "authorization" in answer.headers.getRawHeaders("access-control-allow-headers")[0]
    refused = await treq.request("OPTIONS", allowed + "/q/jobs", headers={**pre, "origin": "https://evil.example"},
                                 persistent=False)
    assert refused.headers.getRawHeaders("access-control-allow-origin") is None and refused.code >= 400


def test_cors_option_takes_origins_or_star():
    """--cors takes a comma list of origins or *; anything else is a usage error."""
    assert parse(["--cors", "https://a.example, http://localhost:3000/"]).cors == (
        "https://a.example", "http://localhost:3000")
    assert parse(["--cors", "*"]).cors == ("*",) and parse([]).cors == ()
    with pytest.raises(usage.UsageError):
        parse(["--cors", "javascript:alert(1)"])
