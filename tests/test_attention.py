"""Attention views: the recomputed weights equal the ones timm and torch compute inside the block, and attention
rollout equals a hand-computed rollout on a 2-block toy ViT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepvis_app.errors import DeepVisError
from deepvis_app.methods.attention import attention, query_index, rollout, token_maps


def _toy_timm_vit():
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(img_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=2, num_classes=3).eval()
    del timm
    return net


def test_timm_weights_equal_the_blocks_own():
    net = _toy_timm_vit()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = attention(net, x)
    assert list(ours) == ["blocks.0.attn", "blocks.1.attn"]
    seen = {}
    hooks = []
    for name in ours:  # timm's own weights: the unfused path passes them through attn_drop
        block = dict(net.named_modules())[name]
        block.fused_attn = False
        hooks.append(block.attn_drop.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o)))
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    for name, w in ours.items():
        assert w.shape == (2, 2, 5, 5)  # 2 heads, 4 patches + the class token
        assert torch.allclose(w, seen[name], atol=1e-6)
        assert torch.allclose(w.sum(-1), torch.ones(2, 2, 5))


def test_rollout_by_hand_on_a_two_block_toy_vit():
    net = _toy_timm_vit()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    w = attention(net, x)
    a0 = w["blocks.0.attn"][0].mean(0).numpy().astype(np.float64)
    a1 = w["blocks.1.attn"][0].mean(0).numpy().astype(np.float64)
    eye = np.eye(5)
    r0 = (0.5 * eye + 0.5 * a0) / (0.5 * eye + 0.5 * a0).sum(1, keepdims=True)
    r1 = (0.5 * eye + 0.5 * a1) / (0.5 * eye + 0.5 * a1).sum(1, keepdims=True)
    want = r1 @ r0  # the last block's rows drawn back through the first
    got = rollout(list(w.values()))[0].double().numpy()
    assert np.allclose(got, want, atol=1e-6)
    assert np.allclose(got.sum(1), 1.0)
    cls_map = token_maps(rollout(list(w.values()))[:, 0], prefix=1, grid=(2, 2))
    assert cls_map.shape == (1, 2, 2) and torch.allclose(cls_map.flatten(), torch.tensor(got[0, 1:]).float())
    # stopping early: only the first block
    assert list(attention(net, x, upto="blocks.0.attn")) == ["blocks.0.attn"]


def test_torchvision_mha_weights_equal_need_weights():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ours = attention(net, x)
    assert len(ours) == 2
    name, w = next(iter(ours.items()))
    mha = dict(net.named_modules())[name]
    seen = {}
    hook = dict(net.named_modules())[name.rsplit(".", 1)[0] + ".ln_1"].register_forward_hook(
        lambda m, i, o: seen.__setitem__("x", o))
    with torch.no_grad():
        net(x)
    hook.remove()
    _, ref = mha(seen["x"], seen["x"], seen["x"], need_weights=True, average_attn_weights=False)
    assert torch.allclose(w, ref, atol=1e-6)


def test_query_index_and_errors():
    assert query_index(1, (14, 14), None) == 0
    assert query_index(1, (14, 14), (2, 3)) == 1 + 2 * 14 + 3
    with pytest.raises(DeepVisError, match="outside"):
        query_index(1, (14, 14), (14, 0))
    with pytest.raises(DeepVisError, match="class token"):
        query_index(0, (7, 7), None)
    with pytest.raises(DeepVisError, match="no self-attention"):
        attention(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1)), torch.zeros(1, 3, 4, 4))


def test_rollout_row_and_query_rows_equal_the_full_matrices():
    """The live view's shortcuts: one query's rollout row by vector-matrix products, and one query row of a
    block's heads, equal the full computations (timm's qkv path and torchvision's MHA path)."""
    from torchvision.models import VisionTransformer

    from deepvis_app.methods.attention import AttentionRecorder, rollout_row

    torch.manual_seed(0)
    tv = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=8, mlp_dim=16).eval()
    for net, x in ((_toy_timm_vit(), torch.randn(1, 3, 8, 8)), (tv, torch.randn(1, 3, 32, 32))):
        with AttentionRecorder(net) as rec, torch.no_grad():
            net(x)
        full = rec.weights()
        t = next(iter(full.values())).shape[-1]
        for q in (0, 1, t - 1):
            want = rollout(list(full.values()))[:, q]
            assert torch.allclose(rollout_row(list(full.values()), q), want, atol=1e-6)
            for name, w in full.items():
                assert torch.allclose(rec.query_rows(name, q), w[:, :, q], atol=1e-6), (name, q)
    with pytest.raises(DeepVisError):
        rollout_row([], 0)
