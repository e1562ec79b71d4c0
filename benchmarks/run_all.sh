#!/usr/bin/env bash
# Every benchmark behind the README's numbers, in the order they were run; results land in benchmarks/<kind>/.
# On a 2-core CPU machine this takes about 15-25 minutes. `python benchmarks/tables.py` prints the README tables.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
python -m embodimem bench memory --config configs/bench_memory.yaml --out benchmarks/memory
python -m embodimem bench memory --memory all --episode-lengths 100 1000 10000 --batch-sizes 1 8 --dim 64 \
    --tokens-per-step 4 --read-reps 20 --out benchmarks/memory-all
python -m embodimem bench attention --out benchmarks/attention
python -m embodimem bench video-banks --out benchmarks/video-banks
python -m embodimem bench spatial --out benchmarks/spatial
python -m embodimem bench envs --out benchmarks/envs
python -m embodimem bench ppo --repeats 3 --out benchmarks/ppo
# The agents tables: one process per core fills each grid (they merge into one JSON; re-running resumes).
python benchmarks/memory_agents.py --config configs/popgym_repeat_previous.yaml --memories none recurrent hcam kv_window \
    --seeds 0 1 2 --out benchmarks/agents
python benchmarks/memory_agents.py --config configs/popgym_repeat_previous.yaml --memories fifo --memory-args fifo:capacity=8 \
    --seeds 0 1 2 --out benchmarks/agents
