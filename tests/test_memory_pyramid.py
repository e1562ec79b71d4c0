"""pyramid (VideoChat-Online's Pyramid Memory Bank) against the per-stream list reference and brute force."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from embodimem.bench.reference.pyramid_lists import PyramidListReference, PyramidLists
from embodimem.memory import make_memory
from embodimem.memory.pyramid import PyramidConfig
from embodimem.memory.resample import grid_avg_pool, grid_bilinear
from embodimem.memory.state import clone_state, states_equal

CONFIGS = {
    "example": PyramidConfig.example(),
    "zero-mid": PyramidConfig(dim=6, tokens_per_step=16, grid=(4, 4), capacities=(2, 0, 3), strides=(4, 2, 1)),
    "cap1": PyramidConfig(dim=5, tokens_per_step=16, grid=(4, 4), capacities=(1, 1, 2), strides=(3, 2, 1)),
    "odd-grids": PyramidConfig(dim=4, tokens_per_step=24, grid=(4, 6), capacities=(2, 3, 2), strides=(3, 2, 1),
                               level_grids=((4, 6), (3, 3), (1, 2))),
    "two-levels": PyramidConfig(dim=4, tokens_per_step=9, capacities=(3, 4), strides=(2, 1)),
}


def stream(B: int, T: int, N: int, D: int, seed: int, p_reset: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, N, D, generator=g)
    is_first = torch.rand(B, T, generator=g) < p_reset
    is_first[:, 0] = True
    return x, is_first


def held_frames(r, b: int) -> list[tuple[int, torch.Tensor, int, int]]:
    """(frame id, tokens [n,D], level, entry level) of each frame in readout row b, in readout order."""
    m = r.mask[b]
    ids, lvl, ent, tok = r.source_ids[b][m], r.extras["level"][b][m], r.extras["entry_level"][b][m], r.tokens[b][m]
    out, i = [], 0
    while i < ids.numel():
        j = i
        while j < ids.numel() and ids[j] == ids[i]:
            j += 1
        out.append((int(ids[i]), tok[i:j], int(lvl[i]), int(ent[i])))
        i = j
    return out


def ref_frames(bank: PyramidLists) -> list[tuple[int, torch.Tensor, int, int]]:
    toks, ids = bank.output_by_time_order()
    where = {i: (l, e) for i, l, e in bank.held()}
    return [(i, tk[0], *where[i]) for i, tk in zip(ids, toks)]


@pytest.mark.parametrize("name,donate", [(n, False) for n in CONFIGS] + [("example", True), ("zero-mid", True)])
def test_matches_list_reference_with_resets(name, donate):
    cfg = CONFIGS[name]
    mem = make_memory(cfg)
    B, T = 3, 30
    x, is_first = stream(B, T, cfg.tokens_per_step, cfg.dim, seed=list(CONFIGS).index(name))
    # frame ids restart at 0 after each reset; row 2 skips ids (gaps of 1-3)
    gaps = torch.ones(B, T, dtype=torch.long)
    gaps[2] = torch.randint(1, 4, (T,), generator=torch.Generator().manual_seed(5))
    t_ids = torch.zeros(B, T, dtype=torch.long)
    for t in range(1, T):
        t_ids[:, t] = torch.where(is_first[:, t], 0, t_ids[:, t - 1] + gaps[:, t])
    ref = PyramidListReference(cfg, B)
    state = mem.init_state(B)
    for t in range(T):
        state = mem.reset(state, is_first[:, t])
        state = mem.write(state, x[:, t], t=t_ids[:, t], donate=donate)
        ref.write(x[:, t], t=t_ids[:, t], is_first=is_first[:, t])
        r = mem.read(state)
        for b in range(B):
            got, want = held_frames(r, b), ref_frames(ref.banks[b])
            assert [f[0] for f in got] == [f[0] for f in want], (t, b)
            assert [f[2:] for f in got] == [f[2:] for f in want], (t, b)
            for (_, a, _, _), (_, w, _, _) in zip(got, want):
                torch.testing.assert_close(a, w, atol=1e-5, rtol=1e-5)


def test_invariants_budget_unique_sorted_newest():
    cfg = PyramidConfig(dim=8, tokens_per_step=64, capacities=(2, 2, 5), strides=(8, 4, 1))
    mem = make_memory(cfg)
    assert cfg.grids == ((8, 8), (4, 4), (2, 2)) and cfg.token_budget == 2 * 64 + 2 * 16 + 5 * 4
    B, T = 4, 60
    x, is_first = stream(B, T, 64, 8, seed=1, p_reset=0.05)
    state, step = mem.init_state(B), torch.zeros(B, dtype=torch.long)
    for t in range(T):
        r, state = mem.step(state, x[:, t], is_first=is_first[:, t])
        step = torch.where(is_first[:, t], 0, step + 1)
        assert r.tokens.shape == (B, cfg.token_budget, 8)
        assert int(r.mask.sum(1).max()) <= cfg.token_budget
        for b in range(B):
            m = r.mask[b]
            assert bool(m[: int(m.sum())].all()), "valid tokens come first"
            ids = r.source_ids[b][m]
            assert bool((ids[1:] >= ids[:-1]).all()), "sorted by frame id"
            frames = held_frames(r, b)
            assert len({f[0] for f in frames}) == len(frames), "each frame id at most once"
            assert frames[-1][0] == int(step[b]), "the newest frame is present"
            assert sum(f[1].shape[0] for f in frames) == int(m.sum())
            for fid, tok, lvl, ent in frames:  # tokens match the level's grid; a frame only moves down
                assert tok.shape[0] == cfg.grids[lvl][0] * cfg.grids[lvl][1] and lvl >= ent


def test_entry_level_follows_id_schedule():
    mem = make_memory(PyramidConfig(dim=4))  # release defaults: 16x16 grid, strides 8/4/1, 2/2/12
    ids = torch.arange(0, 33)
    want = torch.tensor([0 if i % 8 == 0 else 1 if i % 4 == 0 else 2 for i in range(33)])
    assert torch.equal(mem.entry_level(ids), want)
    odd = make_memory(PyramidConfig(dim=4, capacities=(1, 1, 1), strides=(3, 2, 5)))  # ids matching none -> last
    assert odd.entry_level(torch.tensor([0, 1, 2, 3, 4, 5, 7])).tolist() == [0, 2, 1, 0, 1, 2, 2]


def test_evicted_frame_is_brute_force_choice_and_moves_down():
    cfg = PyramidConfig(dim=6, tokens_per_step=16, grid=(4, 4), capacities=(4, 3), strides=(1, 1))
    mem = make_memory(cfg)
    g = torch.Generator().manual_seed(0)
    state = mem.init_state(2)
    xs = torch.randn(6, 2, 16, 6, generator=g)
    xs[3, 1] = xs[2, 1] + 0.01 * torch.randn(16, 6, generator=g)  # row 1: frames 2 and 3 nearly equal
    for t in range(4):
        state = mem.write(state, xs[t])
    before = [[f[0] for f in held_frames(mem.read(state), b)] for b in range(2)]
    assert before == [[0, 1, 2, 3]] * 2
    state = mem.write(state, xs[4])
    r = mem.read(state)
    for b in range(2):
        keys = xs[:4, b].mean(1)  # brute force: every adjacent pair of level 0, in time order
        sims = [float(F.cosine_similarity(keys[i], keys[i + 1], dim=0)) for i in range(3)]
        evicted = max(range(3), key=lambda i: (sims[i], -i))
        frames = {f[0]: f for f in held_frames(r, b)}
        assert frames[evicted][2] == 1, "the earlier frame of the most similar pair moved to level 1"
        want = F.interpolate(xs[evicted, b].t().reshape(1, 6, 4, 4), size=(2, 2), mode="bilinear",
                             align_corners=False).flatten(2)[0].t()
        torch.testing.assert_close(frames[evicted][1], want)
        assert sorted(f[0] for f in frames.values() if f[2] == 0) == sorted({0, 1, 2, 3, 4} - {evicted})
    assert frames[2][2] == 1  # row 1's near-duplicate pair (2, 3) lost its earlier frame


def test_ties_evict_the_earliest_pair():
    mem = make_memory(PyramidConfig(dim=3, tokens_per_step=4, capacities=(3, 5), strides=(1, 1)))
    state = mem.init_state(1)
    for _ in range(4):  # identical frames: every adjacent pair ties
        state = mem.write(state, torch.ones(1, 4, 3))
    frames = held_frames(mem.read(state), 0)
    assert [(f[0], f[2]) for f in frames] == [(0, 1), (1, 0), (2, 0), (3, 0)]


def test_capacity_zero_level_holds_nothing_and_release_defect():
    cfg = CONFIGS["zero-mid"]
    mem = make_memory(cfg)
    x, is_first = stream(1, 40, 16, 6, seed=2, p_reset=0.0)
    state = mem.init_state(1)
    for t in range(40):
        state = mem.write(state, x[:, t])
        levels = [f[2] for f in held_frames(mem.read(state), 0)]
        assert 1 not in levels and len(levels) <= 5
    # a frame scheduled for the empty level (id % 2 == 0, not % 4) passes on at level 2's grid
    assert any(f[3] == 1 and f[2] == 2 for f in held_frames(mem.read(state), 0))
    released = PyramidLists(cfg.capacities, cfg.grids, cfg.strides, released=True)
    for t in range(40):
        released.update(x[0, t].t().reshape(1, 6, 4, 4), t)
    assert len(released.groups[1]["frames"]) >= 10, "the released code's capacity-0 level grows without bound"


def test_clear_and_reset():
    mem = make_memory(PyramidConfig.example())
    x, _ = stream(2, 9, 16, 8, seed=3)
    state = mem.init_state(2)
    for t in range(9):
        state = mem.write(state, x[:, t])
    empty = mem.clear(state)
    assert states_equal(empty, mem.init_state(2)) and not bool(mem.read(empty).mask.any())
    half = mem.reset(state, torch.tensor([True, False]))
    r = mem.read(half)
    assert not bool(r.mask[0].any()) and torch.equal(r.mask[1], mem.read(state).mask[1])
    state = mem.write(half, x[:, 0], t=torch.tensor([0, 9]))  # a reset row restarts its ids at 0
    assert held_frames(mem.read(state), 0)[0][0] == 0
    released = PyramidLists((1, 1), ((2, 2), (1, 1)), (1, 1), released=True)
    with pytest.raises(AttributeError):
        released.clear()  # the released clear() touches an attribute that does not exist


def test_functional_write_leaves_input_untouched_and_donate_matches():
    mem = make_memory(PyramidConfig.example())
    x, _ = stream(3, 20, 16, 8, seed=4)
    a = mem.init_state(3)
    for t in range(12):
        a = mem.write(a, x[:, t])
    snapshot = clone_state(a)
    b = mem.write(a, x[:, 12])
    assert states_equal(a, snapshot), "write mutated its input"
    d = mem.write(clone_state(a), x[:, 12], donate=True)
    assert states_equal(b, d)


def test_top_k_read_matches_brute_force():
    cfg = dataclasses.replace(PyramidConfig.example(), read_top_k=3)
    mem = make_memory(cfg)
    x, _ = stream(2, 15, 16, 8, seed=6)
    state = mem.init_state(2)
    for t in range(15):
        state = mem.write(state, x[:, t])
    q = torch.randn(2, 5, 8)
    full, top = mem.read(state, top_k=0), mem.read(state, q)
    for b in range(2):
        frames = held_frames(full, b)
        score = {f[0]: float(F.cosine_similarity(f[1].mean(0), q[b].mean(0), dim=0)) for f in frames}
        best = sorted(score, key=lambda i: (-score[i], i))[:3]
        got = held_frames(top, b)
        assert [f[0] for f in got] == sorted(best), "top-k frames, kept in time order"
        w = top.weights[b][top.mask[b]]
        assert torch.allclose(w, torch.tensor([score[f[0]] for f in got for _ in range(f[1].shape[0])]), atol=1e-5)
    assert not bool(top.tokens[~top.mask].any()), "unselected frames are zeroed"
    with pytest.raises(ValueError, match="query"):
        mem.read(state)  # top-k needs a query


def test_bad_inputs_raise():
    mem = make_memory(PyramidConfig.example())
    state = mem.init_state(2)
    with pytest.raises(ValueError, match="grid"):
        mem.write(state, torch.randn(2, 2, 8, 8))  # a [B,h,w,D] grid that is not 4x4
    state = mem.write(state, torch.randn(2, 4, 4, 8))  # the right grid is accepted
    with pytest.raises(ValueError, match="tokens"):
        mem.write(state, torch.randn(2, 9, 8))
    with pytest.raises(ValueError, match="query"):
        mem.read(state, torch.randn(2, 3, 7))
    s = mem.write(state, torch.randn(2, 16, 8), t=torch.tensor([3, 2]))
    for bad in ([4, -1], [4, 2], [2, 5]):  # negative; repeated on row 1; decreasing on row 0
        with pytest.raises(ValueError, match="strictly increase"):
            mem.write(s, torch.randn(2, 16, 8), t=torch.tensor(bad))
    with pytest.raises(ValueError, match="integer"):
        mem.write(state, torch.randn(2, 16, 8), t=torch.tensor([1.0, 2.0]))
    for kw, field in [({"capacities": (2, 2, 0)}, "capacities"), ({"capacities": (2, -1, 3)}, "capacities"),
                      ({"strides": (4, 1)}, "strides"), ({"grid": (4, 3)}, "grid"),
                      ({"level_grids": ((4, 4), (8, 8), (1, 1))}, "level_grids"), ({"read_top_k": -1}, "read_top_k")]:
        with pytest.raises(ValueError, match=field):
            make_memory(dataclasses.replace(PyramidConfig.example(), **kw))
    strip = PyramidConfig(dim=4, tokens_per_step=12)  # not a square and no grid given: a 1 x 12 row of tokens
    assert strip.grids == ((1, 12), (1, 6), (1, 3)) and make_memory(strip).input_grid == (1, 12)


def test_bytes_per_stream_constant_in_T():
    mem = make_memory(PyramidConfig.example())
    x, _ = stream(2, 40, 16, 8, seed=7, p_reset=0.0)
    state, sizes = mem.init_state(2), []
    for t in range(40):
        state = mem.write(state, x[:, t])
        sizes.append(mem.stats(state)["bytes"])
    assert len(set(sizes)) == 1 and sizes[0] == mem.bound_bytes(2)
    assert mem.stats(state)["frames_held_mean"] == 7.0


def test_resample_helpers_match_torch():
    g = torch.Generator().manual_seed(8)
    for src, dst in [((16, 16), (8, 8)), ((16, 16), (4, 4)), ((9, 9), (3, 3)), ((6, 9), (2, 3)), ((5, 7), (3, 2))]:
        x = torch.randn(2, 3, src[0] * src[1], 5, generator=g)
        img = x.reshape(6, *src, 5).permute(0, 3, 1, 2)
        want_pool = F.adaptive_avg_pool2d(img, dst).permute(0, 2, 3, 1).reshape(2, 3, -1, 5)
        want_bil = F.interpolate(img, size=dst, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        torch.testing.assert_close(grid_avg_pool(x, src, dst), want_pool)
        torch.testing.assert_close(grid_bilinear(x, src, dst), want_bil.reshape(2, 3, -1, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cfg = PyramidConfig.example()
    cpu, gpu = make_memory(cfg), make_memory(cfg).cuda()
    x, is_first = stream(3, 25, 16, 8, seed=9)
    r_cpu, _ = cpu(cpu.init_state(3), x, is_first=is_first)
    r_gpu, _ = gpu(gpu.init_state(3, device="cuda"), x.cuda(), is_first=is_first.cuda())
    assert torch.equal(r_cpu.source_ids, r_gpu.source_ids.cpu())
    torch.testing.assert_close(r_cpu.tokens, r_gpu.tokens.cpu(), atol=1e-5, rtol=1e-5)


def test_video_banks_bench_smoke(tmp_path):
    import json

    from embodimem.bench.video_banks import Config, format_table, run

    cfg = Config(banks=["pyramid", "merge", "no-such-bank-module"], batch_sizes=[1, 2], steps=3, repeats=1, warmup=4,
                 distinct_frames=2, byte_lengths=[5, 9], dim=8, grid=(4, 4), read_reps=2, out=tmp_path)
    with pytest.raises(ValueError, match="unknown memory"):
        run(cfg)  # an unknown name fails loudly; only a registered bank whose module is missing is skipped
    cfg.banks = ["pyramid", "merge"]
    res = run(cfg)
    saved = json.loads((tmp_path / "video_banks.json").read_text())
    assert saved["banks"].keys() == {"pyramid", "merge"} and (tmp_path / "video_banks.png").stat().st_size > 0
    rows = saved["banks"]["pyramid"]["rows"]
    assert [r["B"] for r in rows] == [1, 2] and all(r["speedup_functional"] > 0 and "donate" in r for r in rows)
    assert "reference" not in saved["banks"]["merge"]["rows"][0]
    assert saved["banks"]["pyramid"]["bytes_per_stream"]["bank_constant_in_T"]
    assert "pyramid" in format_table(res)
