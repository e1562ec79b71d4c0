#!/usr/bin/env bash
# The main job on the embedded default: set up, then benchmark the default memories
# (write throughput, read latency, bytes per env, growth in T, batch scaling) into runs/bench-memory/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
"${PYTHON:-python3}" -m embodimem doctor
"${PYTHON:-python3}" -m embodimem bench memory --config configs/bench_memory.yaml --out runs/bench-memory "$@"
