#!/usr/bin/env bash
# Soak test on demand: HOURS (default 1) of the debug recipe, SIGKILLed at random moments and resumed,
# checking checkpoints and metrics after every kill (scripts/soak.py). CI runs a short form
# (tests/reliability/test_soak.py). Usage: scripts/soak.sh [HOURS] [extra soak.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
hours="${1:-1}"
shift || true
exec "${PYTHON:-.venv/bin/python}" scripts/soak.py --hours "$hours" --work output/soak --reference "$@"
