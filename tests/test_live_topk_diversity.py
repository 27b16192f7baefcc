"""Live top-k diversity: a camera on a still scene must not fill the k tiles with the same view. A repeat of a held
moment (same neuron position, near-identical receptive-field patch) is dropped, or replaces the held frame when
it excites the unit more; a different view is a new moment; with the rule off the top-k is exact."""

from __future__ import annotations

import numpy as np
import torch

from deepvis_app.topk import LiveTopK


def act(value: float, y: int = 1, x: int = 2) -> torch.Tensor:
    a = torch.zeros(2, 4, 4)
    a[:, y, x] = value
    return a


def test_same_view_is_one_moment_a_new_view_is_another():
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    live = LiveTopK("l", 2, k=3, rf_fn=lambda y, x: (0, 0, 8, 8), similar=6.0)
    assert live.update(0, scene, act(1.0)) == 2
    assert live.update(1, scene, act(1.0)) == 0  # the same view again: not a new moment
    noisy = np.clip(scene.astype(int) + 2, 0, 255).astype(np.uint8)  # sensor noise: still the same moment
    assert live.update(2, noisy, act(3.0)) == 2  # ... but a better shot of it replaces the held one
    assert [e.image_id for e in live.entries(0)] == [2] and live.image_count == 1
    live.update(3, other, act(2.0))  # another view: a second moment
    assert [e.image_id for e in live.entries(0)] == [2, 3]
    live.update(4, scene, act(1.5, y=3, x=0))  # the same picture, but the neuron elsewhere: a moment of its own
    assert [e.image_id for e in live.entries(1)] == [2, 3, 4]


def test_rule_off_keeps_the_exact_top_k():
    scene = np.full((16, 16, 3), 100, np.uint8)
    live = LiveTopK("l", 2, k=3, rf_fn=lambda y, x: (0, 0, 8, 8))
    for fid, v in enumerate((1.0, 1.0, 2.0)):
        live.update(fid, scene, act(v))
    assert [e.image_id for e in live.entries(0)] == [2, 0, 1]
