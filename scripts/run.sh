#!/usr/bin/env bash
# The main job on the embedded default: set up, then a short PPO run with the `recurrent` memory on the
# MiniWorld delayed-cue T-maze (configs/tmaze.yaml) on CPU, its evaluation on held-out seeds (summary printed,
# per-episode metrics and mp4s written) and its learning curve. Extra arguments go to `embodimem train`
# (e.g. --policy.memory fifo --total-steps 300000). Everything lands in runs/tmaze-<timestamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
PY="${PYTHON:-python3}"
RUN="runs/tmaze-$(date +%Y%m%d-%H%M%S)"
"$PY" -m embodimem doctor   # which optional backends this machine has
"$PY" -m embodimem train --config configs/tmaze.yaml --total-steps "${STEPS:-100000}" --run-dir "$RUN" "$@"
"$PY" -m embodimem eval --run-dir "$RUN" --episodes 32 --videos 2
"$PY" -m embodimem plot --runs "$RUN" --out "$RUN/curves.png"
echo "run directory: $RUN (metrics.jsonl, checkpoints/, eval/summary.json, eval/per_episode.jsonl, eval/videos/, curves.png)"
