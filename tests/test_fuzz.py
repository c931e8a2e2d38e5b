"""A short pass of the atheris fuzzer over every parser's kept corpus (the long run is by hand:
``python fuzz/fuzz.py``, see its docstring)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


#: The byte-level targets run fast; the structure-aware ones build deep values, so get fewer inputs.
BYTE_TARGETS = ["line", "resp", "memcache", "http_body", "collectd", "text_files"]
STRUCTURED_TARGETS = ["args", "json_doc", "xmlrpc", "numbers"]


@pytest.mark.parametrize(("targets", "runs"), [(BYTE_TARGETS, 3000), (STRUCTURED_TARGETS, 200)],
                         ids=["bytes", "structured"])
def test_every_parser_survives_a_short_fuzzing_pass(targets, runs):
    """Each fuzz target runs its corpus plus a few hundred to 3,000 generated inputs without an
    exception it does not promise (hostile nesting, digits, NaN included for the structured ones)."""
    pytest.importorskip("atheris")
    from fuzz.targets import TARGETS

    assert set(BYTE_TARGETS + STRUCTURED_TARGETS) == set(TARGETS)
    done = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz.py"), *targets, "--runs", str(runs), "--no-save", "--jobs", "2"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "CRASH" not in done.stdout
