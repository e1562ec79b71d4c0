"""Test-wide settings: never reach a model hub; keep CPU thread counts predictable on small machines."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
