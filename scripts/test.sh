#!/usr/bin/env bash
# Set up with the test dependencies, then run the test suite (heavy tests marked `slow` are left to benchmarks/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export HF_HUB_OFFLINE=1
"${PYTHON:-python3}" -m pytest -q -m "not slow" "$@"
