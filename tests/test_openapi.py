"""GET /openapi.json: the generated OpenAPI 3.1 document, and schemathesis run against a live Site."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import threads

import restmq
from restmq.commands import COMMANDS
from restmq.errors import ERRORS
from restmq.frontends.http.openapi import ROUTES, build_document

#: The "Routes" table of docs/http.md, operation by operation.
README_ROUTES = {
    ("post", "/q/{queue}"), ("get", "/q/{queue}"), ("delete", "/q/{queue}"), ("get", "/q"),
    ("post", "/q/{queue}/ack"), ("post", "/q/{queue}/nack"), ("post", "/q/{queue}/touch"),
    ("get", "/q/{queue}/config"), ("put", "/q/{queue}/config"), ("post", "/q/{queue}/redrive"),
    ("put", "/q/{queue}/push"), ("get", "/q/{queue}/push"), ("delete", "/q/{queue}/push"),
    ("get", "/q/{queue}/peek"), ("get", "/q/{queue}/{n}"), ("delete", "/q/{queue}/{n}"),
    ("post", "/queue"), ("get", "/queue"), ("post", "/"), ("get", "/"), ("get", "/c/{queue}"),
    ("get", "/stats"), ("get", "/stats/{queue}"), ("get", "/control/{queue}"), ("post", "/control/{queue}"),
    ("get", "/p/{queue}"), ("post", "/p/{queue}"), ("get", "/health"), ("get", "/dashboard"),
    ("get", "/j/{queue}"), ("get", "/static/comet.html"), ("post", "/RPC2"), ("post", "/xmlrpc"),
    ("get", "/metrics"), ("get", "/openapi.json"), ("post", "/collectd/data"), ("post", "/collectd/event"),
    ("get", "/schedules"), ("put", "/schedules/{name}"), ("get", "/schedules/{name}"), ("delete", "/schedules/{name}"),
}

#: Operations schemathesis does not call: streams never end (and /ws/ needs a WebSocket client).
NOT_FUZZED = {"GET /c/{queue}", "GET /sse/{queue}", "GET /ws/{queue}"}


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def base(site_url: str) -> str:
    """The base URL of a RestMQ Site on a free loopback port."""
    return site_url


def test_document_is_valid_openapi_31():
    """The document validates against the OpenAPI 3.1 meta-schema and schemathesis loads it."""
    import schemathesis
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    doc = build_document()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["version"] == restmq.__version__
    errors = [str(e) for e in OPENAPI_31_VALIDATOR.iter_errors(doc)]
    assert errors == []
    schema = schemathesis.openapi.from_dict(copy.deepcopy(doc))
    schema.validate()
    assert all(result.ok() for result in schema.get_all_operations())


def test_document_covers_every_route_and_command():
    """Every route of docs/http.md is an operation, and POST /queue offers one body per command."""
    doc = build_document()
    operations = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert README_ROUTES <= operations, README_ROUTES - operations
    # Served (docs/http.md) but not rows of its Routes table:
    assert operations - README_ROUTES == {("get", "/control"), ("get", "/sse/{queue}"), ("get", "/ws/{queue}")}
    assert {(r.method, r.path) for r in ROUTES} == operations
    bodies = doc["paths"]["/queue"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    cmds = [doc["components"]["schemas"][b["$ref"].rsplit("/", 1)[1]]["properties"]["cmd"]["const"] for b in bodies]
    assert sorted(cmds) == sorted(COMMANDS)


def test_arguments_come_from_the_command_table():
    """Kinds, bounds, choices, defaults and required flags of the table show up in the schemas."""
    doc = build_document()
    schemas = doc["components"]["schemas"]
    add = schemas["cmd_add"]
    assert add["required"] == ["cmd", "queue", "value"]
    assert add["properties"]["priority"] == {
        "type": "integer", "minimum": 0, "maximum": 9, "default": 5, "description": "0-9, lower is served first",
    }
    assert schemas["cmd_peek"]["properties"]["state"]["enum"] == ["ready", "reserved", "delayed", "dead"]
    take = {p["name"]: p for p in doc["paths"]["/q/{queue}"]["get"]["parameters"]}
    assert take["queue"]["in"] == "path"
    assert take["count"]["schema"]["maximum"] == 1000
    assert take["wait"]["schema"]["maximum"] == 60.0
    assert "lease" in take
    assert set(schemas["Error"]["properties"]["code"]["enum"]) == set(ERRORS)
    assert "204" in doc["paths"]["/q/{queue}"]["get"]["responses"]


@pytest_twisted.ensureDeferred
async def test_served_document_is_the_generated_one(base):
    """GET /openapi.json answers the generated document as JSON."""
    response = await treq.get(base + "/openapi.json", persistent=False)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["application/json; charset=utf-8"]
    assert json.loads(await response.content()) == build_document()


def _cap_waits(node: Any, cap: float) -> None:
    """Lower every ``wait`` argument's maximum so a fuzzed long poll ends quickly."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "wait" and isinstance(value, dict) and "maximum" in value:
                value["maximum"] = cap
            _cap_waits(value, cap)
        if node.get("name") == "wait" and isinstance(node.get("schema"), dict):
            node["schema"]["maximum"] = cap
    elif isinstance(node, list):
        for item in node:
            _cap_waits(item, cap)


def _describe(error: BaseException) -> str:
    """A failure's text, with each failed check of a group (schemathesis reports one per check)."""
    parts = [str(error)]
    for sub in getattr(error, "exceptions", ()):
        parts.append(f"  - {type(sub).__name__}: {sub}")
    return "\n".join(parts)[:4000]


def run_schemathesis(
    doc: dict[str, Any], base_url: str, max_examples: int, mode: str = "positive"
) -> list[tuple[str, str]]:
    """Fuzz every operation (blocking; run it in a thread) with valid (``positive``) or invalid
    (``negative``) requests: answers (operation, failure text) pairs."""
    import schemathesis
    from schemathesis import GenerationMode
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    generation = GenerationMode.NEGATIVE if mode == "negative" else GenerationMode.POSITIVE
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[tuple[str, str]] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in NOT_FUZZED:
            continue

        try:
            strategy = operation.as_strategy(generation_mode=generation)
        except Exception as e:  # noqa: BLE001 - nothing invalid to generate for this operation
            if mode == "negative":
                continue
            raise AssertionError(f"{operation.label}: {e}") from e

        @given(case=strategy)
        @settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(base_url=base_url, checks=checks, timeout=10)

        try:
            check()
        except Unsatisfiable:
            if mode != "negative":  # an operation without inputs has no invalid requests
                failures.append((operation.label, "no example could be generated"))
        except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - schemathesis's FailureGroup
            failures.append((operation.label, _describe(e)))
    return failures


@pytest_twisted.ensureDeferred
async def test_schemathesis_finds_no_server_errors(base):
    """schemathesis against a live Site: no 5xx, and statuses, content types and bodies as documented."""
    doc = build_document()
    _cap_waits(doc, 0.05)
    started = time.monotonic()
    failures = await threads.deferToThread(run_schemathesis, doc, base, 25)
    assert time.monotonic() - started < 60
    assert failures == [], "\n\n".join(f"{label}:\n{text}" for label, text in failures)


@pytest_twisted.ensureDeferred
async def test_schemathesis_invalid_requests_get_no_server_errors(base):
    """schemathesis's invalid (negative) requests are refused as documented, never with a 5xx."""
    doc = build_document()
    _cap_waits(doc, 0.05)
    started = time.monotonic()
    failures = await threads.deferToThread(run_schemathesis, doc, base, 25, "negative")
    assert time.monotonic() - started < 60
    assert failures == [], "\n\n".join(f"{label}:\n{text}" for label, text in failures)
