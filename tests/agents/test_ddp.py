"""DD-PPO: two gloo processes on CPU, each with half the data, average to the single-process gradient."""

from __future__ import annotations

import os

import gymnasium as gym
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embodimem.agents.ppo.distributed import DistInfo, allreduce_gradients
from embodimem.agents.ppo.policy import MemoryPolicy, PolicyConfig

SPACE = gym.spaces.Box(-1, 1, (5,))
ACTIONS = gym.spaces.Discrete(3)


def make_policy() -> MemoryPolicy:
    torch.manual_seed(0)
    return MemoryPolicy(PolicyConfig(memory="fifo", memory_args={"capacity": 4}, feature_dim=8, hidden=16, heads=2),
                        SPACE, ACTIONS)


def make_data(n: int = 4, T: int = 6):
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(n, T, 5, generator=g)
    first = torch.zeros(n, T, dtype=torch.bool)
    first[:, 0] = True
    first[1, 3] = True
    actions = torch.randint(0, 3, (n, T), generator=g)
    adv = torch.randn(n, T, generator=g)
    return obs, first, actions, adv


def loss_on(policy: MemoryPolicy, rows: slice) -> torch.Tensor:
    obs, first, actions, adv = (x[rows] for x in make_data())
    logits, values = policy.evaluate({"": obs}, policy.init_memory(obs.shape[0]), first)
    lp = torch.distributions.Categorical(logits=logits).log_prob(actions)
    return (-(lp * adv)).mean() + 0.5 * (values - adv).pow(2).mean()


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    policy = make_policy()
    half = 4 // world
    loss_on(policy, slice(rank * half, (rank + 1) * half)).backward()
    allreduce_gradients(policy, DistInfo(rank=rank, world_size=world))
    if rank == 0:
        torch.save({n: p.grad for n, p in policy.named_parameters()}, out)
    dist.destroy_process_group()


def test_two_process_average_equals_single_process_gradient(tmp_path):
    out = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    policy = make_policy()
    loss_on(policy, slice(0, 4)).backward()
    for name, p in policy.named_parameters():
        torch.testing.assert_close(ddp[name], p.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_single_process_allreduce_is_a_no_op():
    policy = make_policy()
    loss_on(policy, slice(0, 4)).backward()
    before = {n: p.grad.clone() for n, p in policy.named_parameters()}
    allreduce_gradients(policy, DistInfo())
    assert all(torch.equal(before[n], p.grad) for n, p in policy.named_parameters())
    assert os.environ.get("WORLD_SIZE", "1") == "1"
