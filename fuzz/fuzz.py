"""Coverage-guided fuzzing of RestMQ's parsers with atheris (libFuzzer).

    .venv/bin/python fuzz/fuzz.py                      # every target, 200,000 inputs each
    .venv/bin/python fuzz/fuzz.py resp --runs 1000000  # one target
    .venv/bin/python fuzz/fuzz.py --runs 5000 --no-save  # a quick pass (CI): the kept corpus is read, not grown
    .venv/bin/python fuzz/fuzz.py --minimize           # shrink the kept corpus to what adds coverage
    nice -n 19 .venv/bin/python fuzz/fuzz.py --runs 2000000 --max-time 1200 --jobs 2 --log fuzz.log
                                                       # the long run: two at a time, counts logged

Each target runs in its own process over its corpus (``fuzz/corpus/<target>/``, kept in the repo;
new inputs that reach new code are added there unless ``--no-save``). A crash (an exception the
codec does not promise) stops that target, leaves ``crash-*`` in ``fuzz/crashes/`` and makes the
exit status 1. Prints inputs run and seconds per target.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def child(target: str) -> None:
    """Inside the fuzzing process: instrument RestMQ, then hand the target to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["restmq"]):
        from fuzz.targets import TARGETS  # noqa: PLC0415
    # libFuzzer re-runs argv[0] for a merge: the wrapper that runs this target again.
    os.environ.update(RESTMQ_FUZZ_TARGET=target, RESTMQ_FUZZ_PYTHON=sys.executable)
    atheris.Setup([str(HERE / "run_target"), *sys.argv[1:]], TARGETS[target])
    atheris.Fuzz()


def run(target: str, runs: int, save: bool, max_len: int, max_time: int = 0) -> tuple[bool, int, float]:
    corpus = HERE / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    scratch = None
    dirs = [str(corpus)]
    if not save:
        scratch = tempfile.mkdtemp(prefix=f"fuzz-{target}-")
        dirs = [scratch, str(corpus)]  # libFuzzer writes new inputs into the first directory only
    argv = [sys.executable, __file__, "--child", target, f"-runs={runs}", f"-max_len={max_len}",
            f"-artifact_prefix={crashes}/{target}-", "-print_final_stats=1",
            *([f"-max_total_time={max_time}"] if max_time else []), *dirs]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    seconds = time.monotonic() - started
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    executed = re.findall(r"stat::number_of_executed_units:\s*(\d+)", done.stderr)
    ok = done.returncode == 0
    if not ok:
        sys.stderr.write(done.stderr[-4000:])
    return ok, int(executed[-1]) if executed else 0, seconds


def minimize(target: str) -> tuple[int, int]:
    """Keep only the corpus inputs that reach code no smaller set reaches (libFuzzer's merge)."""
    corpus = HERE / "corpus" / target
    before = len(list(corpus.iterdir()))
    fresh = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-min-"))
    argv = [sys.executable, __file__, "--child", target, "-merge=1", str(fresh), str(corpus)]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if done.returncode != 0 or not any(fresh.iterdir()):
        shutil.rmtree(fresh, ignore_errors=True)
        return before, before
    shutil.rmtree(corpus)
    shutil.move(str(fresh), str(corpus))
    return before, len(list(corpus.iterdir()))


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--child":
        target = sys.argv[2]
        sys.argv = [sys.argv[0], *sys.argv[3:]]
        child(target)
        return 0
    from fuzz.targets import TARGETS

    p = argparse.ArgumentParser(description="Fuzz RestMQ's parsers with atheris.")
    p.add_argument("targets", nargs="*", help=f"targets (default all): {', '.join(TARGETS)}")
    p.add_argument("--runs", type=int, default=200_000, help="inputs per target (default 200000)")
    p.add_argument("--max-len", type=int, default=4096, help="longest input in bytes (default 4096)")
    p.add_argument("--no-save", action="store_true", help="do not add new inputs to the kept corpus")
    p.add_argument("--minimize", action="store_true", help="shrink the kept corpus to what adds coverage, then stop")
    p.add_argument("--max-time", type=int, default=0, help="seconds per target at most (default: no limit)")
    p.add_argument("--jobs", type=int, default=1, help="targets fuzzed at the same time (default 1)")
    p.add_argument("--log", help="also append each target's line and the total to this file")
    args = p.parse_args(argv)
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.minimize:
        for target in args.targets or list(TARGETS):
            before, after = minimize(target)
            print(f"{target:12} corpus {before} -> {after} inputs")
        return 0
    total, failed = 0, []

    def say(text: str) -> None:
        print(text, flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} {text}\n")

    say(f"{'target':12} {'inputs':>10} {'seconds':>8} {'inputs/s':>9}  result")
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {
            pool.submit(run, target, args.runs, not args.no_save, args.max_len, args.max_time): target
            for target in args.targets or list(TARGETS)
        }
        for future in as_completed(futures):
            target = futures[future]
            ok, executed, seconds = future.result()
            total += executed
            say(f"{target:12} {executed:10d} {seconds:8.1f} {executed / seconds if seconds else 0:9.0f}  "
                f"{'ok' if ok else 'CRASH (see fuzz/crashes/)'}")
            if not ok:
                failed.append(target)
    say(f"{'all':12} {total:10d}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
