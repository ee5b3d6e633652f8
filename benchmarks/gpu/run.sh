#!/usr/bin/env bash
# The GPU benchmark in one command, within 8 minutes: install what the machine lacks from
# the carried wheels, run the device tests (tests/test_devices.py) on the device, then
# bench.py. The report goes to benchmarks/gpu/RESULTS.md (RESULTS-cpu.md for a CPU
# device); with $OUT set, a copy of it and every log go under $OUT as well.
#
#   bash benchmarks/gpu/run.sh                       # GPU machine: cuda:0, ResNet-50, fp16
#   bash benchmarks/gpu/run.sh --device cpu --tiny   # the same run, end to end, on a CPU
#
# Any other flag goes to bench.py (python benchmarks/gpu/bench.py --help). Environment:
# PYTHON (default .venv/bin/python if present, else python3), WHEELS (default
# benchmarks/gpu/.wheels, filled by fetch_wheels.sh), SITE (where they are installed),
# LIMIT_S (the whole run's limit in seconds, default 480).
set -uo pipefail
cd "$(dirname "$0")/../.."
LIMIT_S=${LIMIT_S:-480}
WHEELS=${WHEELS:-benchmarks/gpu/.wheels}
SITE=${SITE:-/tmp/openbayes-gpu-site}
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
device=cuda:0
previous=
for arg in "$@"; do
    if [ "$previous" = --device ]; then device=$arg; fi
    previous=$arg
done
logs=${OUT:-$(mktemp -d)}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
say() { echo "[run.sh $((SECONDS))s] $*"; }

missing="import flask, gunicorn, uvicorn, uvicorn_worker, httptools, orjson"
if ! "$PYTHON" -c "$missing" 2>/dev/null; then
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        say "the server's packages are missing and $WHEELS has no wheels: run fetch_wheels.sh"
        exit 2
    fi
    say "installing $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || exit 2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "$missing; import openbayes_serving.server, torch, torchvision, msgpack, numpy" \
    || { say "the runtime does not import with $PYTHON"; exit 2; }
if command -v nvidia-smi >/dev/null; then nvidia-smi >"$logs/nvidia-smi.txt" 2>&1; fi

say "device tests on $device"
timeout 180 env OPENBAYES_TEST_DEVICE="$device" \
    "$PYTHON" -m pytest -q tests/test_devices.py >"$logs/tests.log" 2>&1
tests_rc=$?
tail -n 30 "$logs/tests.log"
summary=$(grep -E '[0-9]+ (passed|failed|errors?)' "$logs/tests.log" | tail -n 1 | tr -d '=' \
    | sed 's/^ *//; s/ *$//')
if [ "$tests_rc" = 124 ]; then summary="timed out after 180 s${summary:+ ($summary)}"; fi
summary="${summary:-no summary (exit $tests_rc), see tests.log} on $device"

budget=$((LIMIT_S - SECONDS - 90))  # a configuration that starts may take a minute more
say "benchmark, budget ${budget}s"
timeout $((LIMIT_S - SECONDS - 10)) "$PYTHON" benchmarks/gpu/bench.py --budget "$budget" \
    --tests "$summary" --out-dir "$logs" "$@" 2>&1 | tee "$logs/bench.log"
bench_rc=${PIPESTATUS[0]}
say "done: tests exit $tests_rc, benchmark exit $bench_rc; logs in $logs"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
