#!/usr/bin/env bash
# Build the sdist and the wheel (the wheel from the sdist, as `python -m build` does), install the
# wheel into a clean venv outside the checkout, and run .ci/smoke_wheel.py from there.
# Usage: .ci/smoke_wheel.sh [PYTHON]   (PYTHON: the interpreter that runs `build`; default .venv's)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-$root/.venv/bin/python}"
work="$(mktemp -d /tmp/restmq-wheel.XXXXXX)"
trap 'rm -rf "$work"' EXIT

"$python" -m pip install -q build
"$python" -m build --outdir "$work/dist" "$root" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
ls "$work/dist"/restmq-*.tar.gz >/dev/null && wheel=$(ls "$work/dist"/restmq-*.whl)
echo "== built $(cd "$work/dist" && echo *)"

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$wheel"
cp "$root/.ci/smoke_wheel.py" "$work/"
cd "$work"   # nothing of the checkout on sys.path
timeout 90 "$work/venv/bin/python" "$work/smoke_wheel.py"
