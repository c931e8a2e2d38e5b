"""The test layers table (tests/conftest.py LAYERS): every test file has a layer, every entry names a
real file or test, and every layer is a declared marker."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import LAYERS, SLOW, SLOW_LAYERS

TESTS = Path(__file__).parent


@cache
def defined_tests(file: str) -> frozenset[str]:
    """The names of the test functions a test file defines at its top level."""
    tree = ast.parse((TESTS / file).read_text("utf-8"))
    return frozenset(
        node.name for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    )


def test_every_test_file_has_a_layer() -> None:
    """Each tests/test_*.py is in LAYERS, so that `-m <layer>` and `-m "not slow"` see its tests."""
    missing = sorted(p.name for p in TESTS.glob("test_*.py") if p.name not in LAYERS)
    assert not missing, (
        f"test files without a layer: {', '.join(missing)}. Add each to LAYERS in tests/conftest.py "
        f"as pure, engine, frontend, process or chaos (and to SLOW if it is slow)"
    )


@pytest.mark.parametrize("entry", sorted(LAYERS) + sorted(SLOW))
def test_every_entry_names_a_test_file_or_one_of_its_tests(entry: str) -> None:
    """A LAYERS or SLOW entry names an existing test file, or ``file::test`` a test it defines."""
    file, _, test = entry.partition("::")
    assert (TESTS / file).is_file(), f"{entry}: no tests/{file}"
    if test:
        assert test in defined_tests(file), f"{entry}: tests/{file} defines no {test}"


def test_every_layer_is_a_declared_marker(pytestconfig: pytest.Config) -> None:
    """The layers and ``slow`` are markers declared in pyproject.toml (the suite runs --strict-markers)."""
    declared = {line.split(":", 1)[0].strip() for line in pytestconfig.getini("markers")}
    assert set(LAYERS.values()) == {"pure", "engine", "frontend", "process", "chaos"}
    assert set(LAYERS.values()) | {"slow"} <= declared
    assert SLOW_LAYERS <= set(LAYERS.values())


def test_this_test_is_marked_pure(request: pytest.FixtureRequest) -> None:
    """The hook marks each collected test with its file's layer."""
    assert {m.name for m in request.node.iter_markers()} >= {"pure"}
    assert request.node.get_closest_marker("slow") is None
