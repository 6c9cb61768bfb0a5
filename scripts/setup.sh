#!/usr/bin/env bash
# Create .venv and install tunefleet with its test tools.
# torch is installed first, pinned to the CPU build on a machine without a GPU, so that the
# `torch` requirement of the package is already met and pip never pulls the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q "torch>=2.4"
  else
    .venv/bin/python -m pip install -q "torch==2.13.0" \
      || .venv/bin/python -m pip install -q "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
.venv/bin/python -m pip install -q -e ".[dev]"
# Headless Chromium (Debian's package) for the test that opens a sweep's report page in a browser
# (tests/test_report.py). Installed only where it is missing, as root or through passwordless sudo.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "setup: could not install chromium with apt-get; tests/test_report.py's browser test needs it" >&2
fi
