#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Two test processes (pytest-xdist), one file at a time each: most of a test's time here is spent
# waiting on Ray (process start-up, actor polls, HTTP), so two share 2 cores well; a file stays on
# one process so that its module fixtures (a Serve app, a trained model) are built once.
# TUNEFLEET_TEST_WORKERS=0 runs everything in this one process.
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=900 \
  -n "${TUNEFLEET_TEST_WORKERS:-2}" --dist loadfile "$@"
