"""PPO with memory: replay equals rollout for every memory, it learns a memory task, exact resume, errors."""

from __future__ import annotations

import functools
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from recall_env import CueRecall

from embodimem.agents.ppo import PolicyConfig, TrainConfig
from embodimem.agents.ppo.policy import MemoryPolicy
from embodimem.agents.ppo.rollout import Rollout
from embodimem.agents.ppo.train import first_epoch_ratio_check, train
from embodimem.memory import available_memories, memory_config_class
from embodimem.memory.cognitive import CognitiveMemory
from embodimem.memory.pyramid import PyramidMemory


def small_memory_args(name: str) -> dict:
    """The memory's example() sizes (minus dim/tokens, which the policy sets)."""
    ex = memory_config_class(name).example().to_dict()
    return {k: v for k, v in ex.items() if k not in ("name", "dim", "tokens_per_step", "check_finite")}


def fake_space(name: str) -> gym.spaces.Dict:
    """A vector observation plus whatever geometry the memory's example inputs carry."""
    spaces = {"obs": gym.spaces.Box(-1, 1, (5,), np.float32)}
    if name != "none":
        cfg = memory_config_class(name).example()
        from embodimem.memory import make_memory

        _, kw = make_memory(cfg).example_inputs(1, 1, torch.Generator().manual_seed(0))
        for k, v in kw.items():
            spaces[k] = gym.spaces.Box(-np.inf, np.inf, tuple(v.shape[2:]), np.float32)
    return gym.spaces.Dict(spaces)


def _replay_error(policy: MemoryPolicy, name: str) -> float:
    """Roll the policy out over random inputs, then replay in chunks: max |ratio - 1| of the first epoch."""
    B, T, L = 3, 8, 4
    ro = Rollout(T, B, L)
    g = torch.Generator().manual_seed(1)
    geo_seq = {}
    if name != "none":
        _, geo_seq = policy.memory.example_inputs(B, T, g)
    mem = policy.init_memory(B)
    is_first = torch.ones(B, dtype=torch.bool)
    for t in range(T):
        if t % L == 0:
            ro.chunk_states.append({k: v.clone() for k, v in mem.items()})
        obs = {"obs": torch.randn(B, 5, generator=g), **{k: v[:, t] for k, v in geo_seq.items()}}
        ro.store_obs(t, obs)
        ro.is_first[t] = is_first
        with torch.no_grad():
            logits, value, mem = policy.act(obs, mem, is_first)
        a = torch.distributions.Categorical(logits=logits).sample()
        ro.actions[t], ro.logprobs[t] = a, torch.distributions.Categorical(logits=logits).log_prob(a)
        is_first = torch.rand(B, generator=g) < 0.2
    return first_epoch_ratio_check(policy, ro, torch.device("cpu"))


@pytest.mark.parametrize("name", ["none", *available_memories()])
def test_replay_reproduces_rollout_logprobs(name):
    """Chunked replay through memory.forward gives the rollout's log-probs exactly (ratio 1 before updates)."""
    torch.manual_seed(0)
    args = {} if name == "none" else small_memory_args(name)
    pcfg = PolicyConfig(memory=name, memory_args=args, feature_dim=8, hidden=16, heads=2)
    if name != "none":
        ex = memory_config_class(name).example()
        pcfg.feature_dim, pcfg.vector_tokens = ex.dim, ex.tokens_per_step
    policy = MemoryPolicy(pcfg, fake_space(name), gym.spaces.Discrete(3)).eval()
    assert _replay_error(policy, name) < 1e-4


@pytest.mark.parametrize("name", ["fifo", "kv_window"])
def test_pooled_memory_tokens_write_one_token_per_step_and_replay_exactly(name):
    torch.manual_seed(0)
    pcfg = PolicyConfig(memory=name, memory_args=small_memory_args(name), feature_dim=8, hidden=16, heads=2,
                        vector_tokens=3, memory_tokens="pooled")
    policy = MemoryPolicy(pcfg, fake_space(name), gym.spaces.Discrete(3)).eval()
    assert policy.memory.config.tokens_per_step == 1
    enc = policy._encode(torch.randn(2, 5))
    assert enc.tokens.shape[1] == 3
    torch.testing.assert_close(policy._written(enc), enc.tokens.mean(1, keepdim=True))
    assert _replay_error(policy, name) < 1e-4
    with pytest.raises(ValueError, match="memory_tokens"):
        MemoryPolicy(PolicyConfig(memory=name, memory_tokens="mean"), fake_space(name), gym.spaces.Discrete(3))


def _cfg(tmp_path, memory, total, **kw):
    return TrainConfig(env="CueRecall", num_envs=8, num_steps=32, chunk_len=8, total_steps=total, lr=1e-3,
                       policy=PolicyConfig(memory=memory, feature_dim=32, hidden=32), run_dir=tmp_path / memory,
                       progress=False, checkpoint_every=kw.pop("checkpoint_every", 1000), **kw)


def test_memory_agent_solves_cue_recall_and_memoryless_cannot(tmp_path):
    res = {}
    for memory in ("recurrent", "none"):
        torch.manual_seed(0)
        res[memory] = train(_cfg(tmp_path, memory, 16_000), env_fns=[CueRecall for _ in range(8)])["success_rate"]
    assert res["recurrent"] >= 0.9, res
    assert res["none"] <= 0.7, res  # chance is 0.5: the cue is gone at the decision step


def test_resume_is_exact_with_picklable_envs(tmp_path):
    full = _cfg(tmp_path, "fifo", 3 * 256, checkpoint_every=1)
    train(full, env_fns=[CueRecall for _ in range(8)])
    ckpts = sorted((full.run_dir / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 3
    # a second run dir holding only the first checkpoint, resumed to the same total
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(full.run_dir, resumed_dir)
    for p in sorted((resumed_dir / "checkpoints").glob("*.pt"))[1:]:
        p.unlink()
    cfg2 = _cfg(tmp_path, "fifo", 3 * 256, checkpoint_every=1)
    cfg2.run_dir, cfg2.resume = resumed_dir, True
    out = train(cfg2, env_fns=[CueRecall for _ in range(8)])
    assert out["update"] == 3 and out["global_step"] == 3 * 256
    a = torch.load(ckpts[-1], weights_only=True)
    b = torch.load(sorted((resumed_dir / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["extra"]["obs"][""], b["extra"]["obs"][""])


# memories whose write updates a donated state in place: class, small config for a vector observation, tokens
DONATING = {"pyramid": (PyramidMemory, {"capacities": [2, 2, 3], "strides": [4, 2, 1]}, 4),
            "cognitive": (CognitiveMemory, {"capacity": 4, "read_layers": 1, "num_heads": 2, "ffn_mult": 2,
                                            "time_dim": 8}, 3)}


@pytest.mark.parametrize("memory", sorted(DONATING))
def test_donated_rollouts_match_functional_ones(tmp_path, monkeypatch, memory):
    """The rollout donates its memory state to ``act`` (updated in place); the chunk-start states saved for
    truncated BPTT must not change with it, so training gives exactly what functional acts give."""
    cls, args, tokens = DONATING[memory]
    donated = []
    write, act = cls.write, MemoryPolicy.act

    @functools.wraps(write)  # keeps write's signature, which tells the policy that it takes ``donate``
    def spy(self, state, item, **kw):
        donated.append(kw.get("donate", False))
        return write(self, state, item, **kw)

    def run(name):
        cfg = _cfg(tmp_path / name, memory, 2 * 256, checkpoint_every=1)
        cfg.policy.memory_args, cfg.policy.vector_tokens = args, tokens
        donated.clear()
        train(cfg, env_fns=[CueRecall for _ in range(8)])
        return torch.load(sorted((cfg.run_dir / "checkpoints").glob("*.pt"))[-1], weights_only=True)

    monkeypatch.setattr(cls, "write", spy)
    a = run("donated")
    assert any(donated), "the rollout donates its memory state"
    def functional_act(self, obs, mem, is_first, donate=False):
        return act(self, obs, mem, is_first)

    monkeypatch.setattr(MemoryPolicy, "act", functional_act)
    b = run("functional")
    assert not any(donated)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["extra"]["memory"]:
        assert torch.equal(a["extra"]["memory"][k], b["extra"]["memory"][k]), k


def test_incompatible_checkpoint_names_the_field(tmp_path):
    cfg = _cfg(tmp_path, "fifo", 256, checkpoint_every=1)
    train(cfg, env_fns=[CueRecall for _ in range(8)])
    cfg.resume, cfg.policy.feature_dim = True, 16
    with pytest.raises(ValueError, match="policy.feature_dim"):
        train(cfg, env_fns=[CueRecall for _ in range(8)])


def test_bad_names_list_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="recurrent"):
        MemoryPolicy(PolicyConfig(memory="nope"), gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="capacty"):
        MemoryPolicy(PolicyConfig(memory="fifo", memory_args={"capacty": 3}), gym.spaces.Box(-1, 1, (3,)),
                     gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="unknown env"):
        train(TrainConfig(env="embodimem/NoSuchEnv-v0", run_dir=tmp_path / "x", progress=False))
    with pytest.raises(ValueError, match="chunk_len"):
        TrainConfig(num_steps=30, chunk_len=8).validate()


def test_evaluate_writes_per_episode_and_summary(tmp_path):
    import json

    from embodimem.agents.ppo.config import EvalConfig
    from embodimem.agents.ppo.evaluate import evaluate

    cfg = _cfg(tmp_path, "recurrent", 256, checkpoint_every=1)
    train(cfg, env_fns=[CueRecall for _ in range(8)])
    ev = EvalConfig(run_dir=cfg.run_dir, episodes=9, num_envs=4, videos=1, start_seed=100)
    s1 = evaluate(ev, env_fn=CueRecall)
    lines = (cfg.run_dir / "eval" / "per_episode.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert [r["episode_ix"] for r in recs] == list(range(9)) and [r["seed"] for r in recs] == list(range(100, 109))
    summary = json.loads((cfg.run_dir / "eval" / "summary.json").read_text())
    assert summary["episodes"] == 9 and 0 <= summary["success_ci95"][0] <= summary["success"] <= summary["success_ci95"][1]
    assert summary["success"] == sum(r["success"] for r in recs) / 9
    # per-episode seeds make the result independent of how many envs run side by side
    ev2 = EvalConfig(run_dir=cfg.run_dir, episodes=9, num_envs=2, videos=0, start_seed=100, deterministic=True,
                     out=tmp_path / "e2")
    ev3 = EvalConfig(run_dir=cfg.run_dir, episodes=9, num_envs=5, videos=0, start_seed=100, deterministic=True,
                     out=tmp_path / "e3")
    a, b = evaluate(ev2, env_fn=CueRecall), evaluate(ev3, env_fn=CueRecall)
    assert a["success"] == b["success"] and a["return"] == b["return"]
    assert isinstance(s1["videos"], list) and len(s1["videos"]) == 1


def test_evaluate_reports_the_navigation_metrics_of_miniworld_episodes(tmp_path):
    """SPL, soft-SPL and nDTW arrive in info["metrics"] on an episode's last step; eval records and summarises them."""
    import json

    from embodimem.agents.ppo.config import EvalConfig
    from embodimem.agents.ppo.evaluate import evaluate

    cfg = TrainConfig(env="embodimem/TMaze-v0", env_args={"delay": 0, "max_steps": 12, "obs_width": 16,
                                                           "obs_height": 16, "stop_action": False},
                      num_envs=2, num_steps=16, chunk_len=16, total_steps=32, minibatches=2, run_dir=tmp_path / "run",
                      progress=False, policy=PolicyConfig(memory="none", feature_dim=8, hidden=8, encoder_depth=2))
    train(cfg)
    s = evaluate(EvalConfig(run_dir=cfg.run_dir, episodes=3, num_envs=2, videos=0))
    recs = [json.loads(x) for x in (cfg.run_dir / "eval" / "per_episode.jsonl").read_text().splitlines()]
    for k in ("spl", "soft_spl", "ndtw", "sdtw"):
        assert all(k in r for r in recs) and k in s and f"{k}_ci95" in s
    assert all(r["length"] == 12 and not r["success"] and r["spl"] == 0.0 for r in recs)  # 12 steps cannot reach an arm
    assert all(0.0 <= r["soft_spl"] <= 1.0 and 0.0 <= r["ndtw"] <= 1.0 for r in recs)
