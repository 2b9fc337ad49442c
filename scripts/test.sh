#!/usr/bin/env bash
# The project's whole test run: docs up to date, lint, types, unit tests (Pulumi mocks, pure
# renderers, policy pack) and the real-parts tier (loop devices, a network-namespace test host with
# sshd and dockerd, a real vLLM server, the openai client). Needs root for the real tier and the
# set-up from scripts/setup.sh. With CI=true a skipped test counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

stage() { printf '\n[test %(%H:%M:%S)T] %s\n' -1 "$*"; }

stage "set-up (apt packages, .venv, the vLLM CPU build; idempotent)"
./scripts/setup.sh test

stage "generated docs are current"
.venv/bin/python tools/gen_docs.py --check
stage "ruff"
.venv/bin/ruff check .
stage "mypy"
.venv/bin/mypy
# Each example is its own program (five `__main__` modules cannot share one mypy run).
for example in examples/*/__main__.py; do .venv/bin/mypy --no-error-summary "$example"; done
stage "unit tests"
.venv/bin/python -m pytest -q tests/unit "$@"
stage "real-parts tests ($(df -h --output=avail "$PWD" | tail -1 | tr -d ' ') free on this disk; the vLLM test image needs about 6 GiB)"
.venv/bin/python -m pytest -q -m real tests/real --durations=15 "$@"
stage "all tests passed"
