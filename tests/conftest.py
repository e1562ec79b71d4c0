"""Test-wide settings: never reach a model hub; one torch thread (tiny ops stall for ms each when 2 threads
contend on a small, busy machine — a 10^4-step contract test went from ~190 s to ~10 s)."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)
