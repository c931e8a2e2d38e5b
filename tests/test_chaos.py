"""The chaos suite's short run (chaos/chaos.py --short): RestMQ killed -9 five times, an external and
an embedded Redis twice each, under a mixed load; Redis stalled twice and frozen once with SIGSTOP;
every promise checked
(the long run is by hand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_chaos_short_run_keeps_every_promise(tmp_path):
    """Nothing acknowledged is lost, nothing acked comes back, nothing is in two places, 503 within 1 s, recovery within 2 s."""
    out = tmp_path / "chaos.json"
    done = subprocess.run([sys.executable, str(ROOT / "chaos" / "chaos.py"), "--short", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    results = {r["scenario"]: r for r in json.loads(out.read_text())["results"]}
    assert results["kill-restmq"]["kills"] == 5 and results["kill-restmq"]["lost"] == 0
    assert results["kill-redis (always)"]["lost"] == 0
    assert results["kill-embedded-redis"]["lost"] == 0
    assert results["freeze-redis"]["health_while_frozen"] == 503
    stall = results["stall-redis"]
    assert stall["kills"] == 2 and stall["lost"] == 0 and stall["applied_late"] == 0
    full = results["disk-full (always)"]
    assert full.get("skipped") or (full["lost"] == 0 and full["refused"] == 503 and full["reads_while_full"] == 200)
