"""A short pass of the atheris fuzzer over every parser's kept corpus (the long run is by hand:
``python fuzz/fuzz.py``, 200,000 inputs per target)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_parser_survives_a_short_fuzzing_pass():
    """Each fuzz target runs its corpus plus 3,000 mutated inputs without an exception it does not promise."""
    pytest.importorskip("atheris")
    done = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz.py"), "--runs", "3000", "--no-save"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "CRASH" not in done.stdout
