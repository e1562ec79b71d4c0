"""The Adaptive Memory Allocator: bandit mechanics, determinism, and convergence on a task family whose
best eviction policy per task is known (rewards come from running the real ``place`` memory)."""

from __future__ import annotations

import io

import pytest
import torch

from embodimem.memory import make_memory
from embodimem.memory.allocator import AdaptiveMemoryAllocator, AllocatorConfig
from embodimem.memory.place import POLICIES


def test_greedy_is_argmax_with_ties_to_the_lower_arm():
    ama = AdaptiveMemoryAllocator(AllocatorConfig(num_tasks=3, epsilon_start=0.0, epsilon_end=0.0))
    ama.q.copy_(torch.tensor([[0.1, 0.5, 0.5, 0.2], [0.0, 0.0, 0.0, 0.0], [0.3, 0.1, 0.2, 0.9]]))
    task = torch.tensor([0, 1, 2, 2])
    assert ama.select(task).tolist() == [1, 0, 3, 3]
    assert ama.greedy(task).tolist() == [1, 0, 3, 3]


def test_incremental_mean_and_constant_step_size():
    ama = AdaptiveMemoryAllocator(AllocatorConfig(num_tasks=2, initial_value=5.0))
    rewards = [1.0, 2.0, 6.0, 3.0]
    ama.update(torch.tensor([1, 1]), torch.tensor([2, 2]), torch.tensor(rewards[:2]))
    ama.update(torch.tensor([1, 0, 1]), torch.tensor([2, 0, 2]), torch.tensor([rewards[2], 7.0, rewards[3]]))
    assert ama.q[1, 2].item() == pytest.approx(sum(rewards) / 4)
    assert ama.q[0, 0].item() == pytest.approx(7.0) and ama.q[0, 1].item() == 5.0  # untouched arms keep Q0
    assert ama.n[1, 2].item() == 4 and ama.n.sum().item() == 5
    lr = AdaptiveMemoryAllocator(AllocatorConfig(num_tasks=1, lr=0.5))
    lr.update(torch.tensor([0, 0]), torch.tensor([3, 3]), torch.tensor([1.0, 3.0]))  # one step to the batch mean
    lr.update(torch.tensor([0]), torch.tensor([3]), torch.tensor([4.0]))
    assert lr.q[0, 3].item() == pytest.approx(0.5 * 2.0 + 0.5 * (4.0 - 1.0))


def test_epsilon_anneals_linearly():
    ama = AdaptiveMemoryAllocator(AllocatorConfig(epsilon_start=1.0, epsilon_end=0.2, anneal_steps=4))
    eps = []
    for _ in range(6):
        eps.append(ama.epsilon)
        ama.select(torch.tensor([0]))
    assert eps == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.2])


def test_seeded_and_resumable():
    cfg = AllocatorConfig(num_tasks=4, epsilon_start=0.5, epsilon_end=0.5, seed=3)
    a, b = AdaptiveMemoryAllocator(cfg), AdaptiveMemoryAllocator(cfg)
    task = torch.arange(4).repeat(8)
    draws_a = [a.select(task) for _ in range(3)]
    assert all(torch.equal(x, b.select(task)) for x in draws_a)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    c = AdaptiveMemoryAllocator(cfg)
    c.load_state_dict(torch.load(buf, weights_only=False))
    assert torch.equal(a.select(task), c.select(task)) and c.selects.item() == a.selects.item()


def test_bad_inputs():
    for kw, field in [({"num_tasks": 0}, "num_tasks"), ({"num_arms": 5}, "num_arms"),
                      ({"epsilon_end": 1.5}, "epsilon_end"), ({"lr": 0.0}, "lr"),
                      ({"anneal_steps": -1}, "anneal_steps")]:
        with pytest.raises(ValueError, match=field):
            AdaptiveMemoryAllocator(AllocatorConfig(**kw))
    ama = AdaptiveMemoryAllocator(AllocatorConfig(num_tasks=2))
    with pytest.raises(ValueError, match=r"task id out of range \[0, 2\)"):
        ama.select(torch.tensor([2]))
    with pytest.raises(ValueError, match="int64"):
        ama.select(torch.tensor([0.0]))
    with pytest.raises(ValueError, match="arm out of range"):
        ama.update(torch.tensor([0]), torch.tensor([4]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="finite"):
        ama.update(torch.tensor([0]), torch.tensor([1]), torch.tensor([float("nan")]))


# ----- a task family with a known best eviction policy per task ----------------------------------------------
# Episodes of T steps over P places (place 0 is a hub visited 60% of the time) into a place memory holding
# L entries. Reward = fraction of the task's important entries still held at the end:
#   task 0 "recent":  the last L steps          -> fifo keeps exactly those
#   task 1 "first":   the first L-1 steps       -> lifo keeps exactly those
#   task 2 "rare":    steps at non-hub places   -> mvfo evicts from the hub first
#   task 3 "hub":     steps at the hub          -> lvfo evicts from rarely visited places first
BEST = [POLICIES.index(p) for p in ("fifo", "lifo", "mvfo", "lvfo")]
P, L, T = 4, 6, 24


def episode_rewards(mem, task: torch.Tensor, policy: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Run B episodes (row b with eviction policy[b]) and score row b on task[b]: float [B]."""
    B = task.shape[0]
    place = torch.where(torch.rand(B, T, generator=g) < 0.6, 0, torch.randint(1, P, (B, T), generator=g))
    x = torch.randn(B, T, 1, 4, generator=g)
    state = mem.init_state(B)
    with torch.no_grad():
        for t in range(T):
            state = mem.write(state, x[:, t], place=place[:, t], policy=policy)
    ids = state["ids"].reshape(B, -1)
    held = torch.zeros(B, T + 1, dtype=torch.bool).scatter_(1, torch.where(ids >= 0, ids, T), True)[:, :T]
    ar = torch.arange(T).expand(B, T)
    important = torch.stack([ar >= T - L, ar < L - 1, place != 0, place == 0], 1)[torch.arange(B), task]  # [B,T]
    return (important & held).sum(1) / important.sum(1).clamp(max=L).clamp(min=1)


def test_allocator_converges_to_the_best_policy_per_task():
    mem = make_memory("place", dim=4, tokens_per_step=1, num_places=P, place_capacity=L, capacity=L, top_k=1, heads=1)
    g = torch.Generator().manual_seed(0)
    # the known answer, measured exhaustively: every (task, policy) on the same 256 episodes
    table = torch.zeros(4, 4)
    for a in range(4):
        for task in range(4):
            gg = torch.Generator().manual_seed(100)
            table[task, a] = episode_rewards(mem, torch.full((256,), task), torch.full((256,), a), gg).mean()
    assert table.argmax(1).tolist() == BEST
    assert (table[range(4), BEST][:, None] - table).topk(2, dim=1).values[:, 1].min() > 0.2  # clear margins
    cfg = AllocatorConfig(num_tasks=4, epsilon_start=1.0, epsilon_end=0.1, anneal_steps=20, seed=0)
    ama = AdaptiveMemoryAllocator(cfg)
    for _ in range(40):
        task = torch.randint(0, 4, (64,), generator=g)
        arm = ama.select(task)
        ama.update(task, arm, episode_rewards(mem, task, arm, g))
    assert ama.greedy(torch.arange(4)).tolist() == BEST
    assert (ama.q - table).abs().max() < 0.25  # the value estimates approach the true means
