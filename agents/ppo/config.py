"""Typed configs for PPO training and evaluation (the CLI and configs/*.yaml are built from these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embodimem.agents.ppo.policy import PolicyConfig  # noqa: F401  (re-exported)


@dataclass
class TrainConfig:
    """PPO with a memory policy over vectorized envs; one rank's share when run under torchrun."""

    env: str = "embodimem/TMaze-v0"  # gymnasium id (embodimem/... ids register on import)
    env_args: dict[str, int | float | bool | str] = field(default_factory=dict)  # gymnasium.make kwargs
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    num_envs: int = 8  # envs per rank
    num_steps: int = 64  # rollout steps per env per update
    chunk_len: int = 16  # truncated-BPTT chunk; memory state is saved at each chunk start
    total_steps: int = 200_000  # env steps over all ranks
    lr: float = 5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    epochs: int = 4
    minibatches: int = 4
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    seed: int = 0
    device: str = "cpu"
    threads: int = 1  # torch threads per rank (1 is fastest for small nets on few cores)
    vectorization: str = "sync"  # sync | async (gymnasium vector envs, autoreset SAME_STEP)
    run_dir: Path | None = None  # default runs/<name>-<timestamp>
    name: str = "ppo"
    checkpoint_every: int = 20  # updates between checkpoints (and one at the end)
    resume: bool = False  # continue the run in run_dir from its latest checkpoint
    progress: bool = True

    def validate(self) -> None:
        for f in ("num_envs", "num_steps", "chunk_len", "total_steps", "epochs", "minibatches", "checkpoint_every"):
            if getattr(self, f) <= 0:
                raise ValueError(f"TrainConfig.{f} must be > 0, got {getattr(self, f)}")
        if self.num_steps % self.chunk_len:
            raise ValueError(f"TrainConfig.num_steps={self.num_steps} must be a multiple of chunk_len={self.chunk_len}")
        seqs = self.num_envs * (self.num_steps // self.chunk_len)
        if seqs % self.minibatches:
            raise ValueError(f"TrainConfig: {seqs} sequences per update (num_envs * num_steps/chunk_len) "
                             f"are not divisible by minibatches={self.minibatches}")
        if self.vectorization not in ("sync", "async"):
            raise ValueError(f"TrainConfig.vectorization must be 'sync' or 'async', got {self.vectorization!r}")
        if self.resume and self.run_dir is None:
            raise ValueError("TrainConfig.resume needs run_dir (the run to continue)")
        # names are checked before anything is written
        from embodimem.memory import available_memories

        if self.policy.memory != "none" and self.policy.memory not in available_memories():
            raise ValueError(f"unknown memory {self.policy.memory!r}; valid: none, {', '.join(available_memories())}")
        if self.env.startswith("embodimem/"):
            from embodimem.envs import resolve_env_id

            resolve_env_id(self.env)


@dataclass
class EvalConfig:
    """Evaluate a checkpoint: per-episode seeds start_seed + i, metrics per episode and summarized."""

    run_dir: Path = Path("runs/ppo")  # a training run (its config.yaml and checkpoints/)
    checkpoint: Path | None = None  # default: the run's latest checkpoint
    episodes: int = 32
    num_envs: int = 8
    start_seed: int = 10_000  # disjoint from training seeds
    deterministic: bool = False  # greedy actions instead of sampling (sampling is the reported default)
    videos: int = 2  # mp4s of the first episodes, with metrics overlaid
    device: str = "cpu"
    threads: int = 1  # torch threads (more threads than free cores makes small nets many times slower)
    out: Path | None = None  # default: <run_dir>/eval
