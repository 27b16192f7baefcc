"""The live views made from the frame's one forward: a class's CAM over the input equals the CAM methods' own map on
the same frame (with and without an explained unit, with the pipeline's channels-last model copy), and a vision
transformer's attention heads and rollout equal `methods.attention` on the same frame."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from deepvis_app.errors import DeepVisError
from deepvis_app.methods.attention import attention, rollout, token_maps
from deepvis_app.methods.cam import CAM_METHODS
from deepvis_app.pipeline import FrameProcessor, validate_request
from deepvis_app.pipeline.frames import Frame
from deepvis_app.values import Unit, ViewRequest

CAM_LAYER = "_blocks.15"


def _frame(rgb):
    return Frame(1, rgb, time.perf_counter())


@pytest.mark.parametrize("method", ["gradcam", "eigencam", "gradcampp"])
def test_live_overlay_equals_the_cam_methods_map(lite0, photos, method):
    proc = FrameProcessor(lite0)
    req = ViewRequest(layer="_blocks.3", overlay=method, overlay_layer=CAM_LAYER, overlay_class=967)
    res = proc.process(_frame(photos["coffee"]), req)
    x = lite0.preprocess(photos["coffee"])
    want = CAM_METHODS[method](lite0.net, CAM_LAYER, vm=lite0).attribute(x, 967).low[0].numpy()
    got = res.overlay.raw
    assert res.overlay.cls == 967 and res.overlay.layer == CAM_LAYER and got.shape == want.shape == (7, 7)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert res.overlay.image.shape == (224, 224) and res.overlay.image.dtype == np.uint8
    assert res.overlay.image.max() == 255 and res.overlay.image.min() == 0
    # the map is about the cup: its hottest pixel falls on the espresso, not the saucer's rim or the table corner
    y, x_ = np.unravel_index(np.argmax(res.overlay.image), res.overlay.image.shape)
    assert 40 <= y <= 200 and 40 <= x_ <= 200


def test_overlay_beside_an_explained_unit_changes_neither(lite0, photos):
    """A live Grad-CAM while a unit is explained: the attributions are the same as without it, and the CAM the
    same as alone (the forward then keeps the head's graph too)."""
    proc = FrameProcessor(lite0)
    unit = Unit("_blocks.3", 5)
    plain = proc.process(_frame(photos["chelsea"]), ViewRequest(layer="_blocks.3", unit=unit,
                                                                attribution=("guided", "gradient")))
    both = proc.process(_frame(photos["chelsea"]), ViewRequest(layer="_blocks.3", unit=unit,
                                                               attribution=("guided", "gradient"), overlay="gradcam",
                                                               overlay_layer=CAM_LAYER))
    alone = proc.process(_frame(photos["chelsea"]), ViewRequest(layer="_blocks.3", overlay="gradcam",
                                                                overlay_layer=CAM_LAYER))
    for m in ("guided", "gradient"):
        assert np.array_equal(plain.attributions[m], both.attributions[m])
    assert both.overlay.cls == alone.overlay.cls == alone.predictions[0][0]  # the top class by default
    assert np.abs(both.overlay.raw - alone.overlay.raw).max() <= 1e-4 * np.abs(alone.overlay.raw).max()
    assert plain.overlay is None


def test_overlay_requests_are_validated(lite0):
    with pytest.raises(DeepVisError, match="overlay"):
        validate_request(lite0, ViewRequest(overlay="scorecam"))
    with pytest.raises(DeepVisError, match="positions"):
        validate_request(lite0, ViewRequest(overlay="gradcam", overlay_layer="_fc"))
    with pytest.raises(DeepVisError, match="class"):
        validate_request(lite0, ViewRequest(overlay="gradcam", overlay_class=1000))


@pytest.fixture(scope="module")
def deit():
    pytest.importorskip("timm")
    from deepvis_app import load_model

    return load_model("deit_tiny", weights="random", device="cpu")


def test_live_attention_heads_and_rollout_equal_the_attention_methods(deit, photos):
    proc = FrameProcessor(deit)
    req = ViewRequest(layer="blocks.5", attention=True, attention_block="blocks.5.attn")
    res = proc.process(_frame(photos["astronaut"]), req)
    view = res.attention
    assert view.block == "blocks.5.attn" and view.query == "class token"
    layout = view.heads.layout
    assert layout.channels == 3  # DeiT-tiny: 3 heads, one tile each
    x = deit.preprocess(photos["astronaut"])
    w = attention(deit.net, x, upto="blocks.5.attn")
    heads = token_maps(w["blocks.5.attn"][0, :, 0], 1, (14, 14))  # the class token's row, on the 14x14 grid
    for h in range(3):  # each tile is its head's map (scaled per tile, norm "channel"), upscaled from 14x14
        y0, x0 = layout.tile_origin(h)
        tile = view.heads.image[y0:y0 + layout.tile_h, x0:x0 + layout.tile_w].astype(np.float64)
        assert np.corrcoef(_downsample(tile, 14).ravel(), heads[h].numpy().ravel())[0, 1] > 0.99
    rolled = token_maps(rollout(list(w.values()))[0, 0], 1, (14, 14)).numpy()
    assert np.allclose(view.rollout_raw, rolled, atol=1e-5)  # the pipeline runs a channels-last copy: float noise
    assert np.corrcoef(_downsample(view.rollout.astype(np.float64), 14).ravel(), rolled.ravel())[0, 1] > 0.95
    patch = proc.process(_frame(photos["astronaut"]), ViewRequest(layer="blocks.5", attention=True,
                                                                  attention_patch=(3, 4)))
    assert patch.attention.query == "patch (3, 4)" and patch.attention.block == "blocks.11.attn"


def _downsample(img: np.ndarray, n: int) -> np.ndarray:
    """Mean over n x n equal blocks (a tile or a map upsampled from an n x n grid back to it)."""
    h, w = img.shape[:2]
    return img[: h - h % n, : w - w % n].reshape(n, h // n, n, w // n).mean(axis=(1, 3))


def test_live_interventions_change_the_network_and_keep_the_real_predictions(lite0, photos):
    from deepvis_app.interventions import Intervened, Intervention

    off = Intervention("_blocks.10", (3, 17, 40), "zero")
    proc = FrameProcessor(lite0)
    plain = proc.process(_frame(photos["coffee"]), ViewRequest(layer="_blocks.12"))
    res = proc.process(_frame(photos["coffee"]), ViewRequest(layer="_blocks.12", interventions=(off,)))
    x = lite0.preprocess(photos["coffee"])
    with Intervened.for_model(lite0, [off]), torch.no_grad():
        want = torch.softmax(lite0.net(x)[0], 0)
    assert res.interventions == (off,)
    top = res.predictions[0]
    assert top[0] == int(want.argmax()) and abs(top[2] - float(want.max())) < 1e-4
    assert res.predictions_clean == plain.predictions  # the real network's top-5 beside it
    assert res.predictions != plain.predictions
    assert not np.array_equal(res.grid.image, plain.grid.image)  # deeper layers see the intervened network
    disabled = proc.process(_frame(photos["coffee"]), ViewRequest(layer="_blocks.12",
                                                                  interventions=(off.toggled(),)))
    assert disabled.interventions == () and disabled.predictions_clean is None
    assert disabled.predictions == plain.predictions
    with pytest.raises(DeepVisError, match="does not exist"):
        validate_request(lite0, ViewRequest(interventions=(Intervention("_blocks.10", (500,), "zero"),)))


def test_live_rollout_is_kept_for_a_few_frames_and_remade_when_the_query_changes(deit, photos, monkeypatch):
    """The rollout (every block's weights) is refreshed every ROLLOUT_EVERY frames and at once for a new block or
    query; in between only the chosen block is recorded (one hook) and its heads follow each frame."""
    from deepvis_app.methods import attention as attention_module
    from deepvis_app.pipeline import processor

    recorded = []
    real_enter = attention_module.AttentionRecorder.__enter__

    def enter(self):
        recorded.append(1 if self.last_only else len(self.modules))
        return real_enter(self)

    monkeypatch.setattr(attention_module.AttentionRecorder, "__enter__", enter)
    proc = FrameProcessor(deit)
    req = ViewRequest(layer="blocks.5", attention=True)
    pics = [photos["astronaut"], photos["chelsea"]]
    views = [proc.process(Frame(i, pics[i % 2], time.perf_counter()), req).attention for i in range(10)]
    every = processor.ROLLOUT_EVERY
    assert recorded == [12] + [1] * (every - 1) + [12] + [1] * (9 - every)
    assert all(v.rollout is views[0].rollout for v in views[1:every])  # kept...
    assert views[every].rollout is not views[0].rollout  # ...and remade
    assert not np.array_equal(views[0].heads.image, views[1].heads.image)  # heads: every frame (another photo)
    moved = proc.process(Frame(10, pics[0], time.perf_counter()),
                         ViewRequest(layer="blocks.5", attention=True, attention_patch=(3, 4))).attention
    assert recorded[-1] == 12 and moved.query == "patch (3, 4)"
