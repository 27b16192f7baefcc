"""The inspector's optimized image says what its number is: on a ReLU6 unit the value before the clip (it can pass
6) and the clipped one, never a bare "value 6" that hides why a saturated unit's image would not move."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepvis_app.gui.features.optimize import final_caption
from deepvis_app.optimize import objectives as O
from deepvis_app.optimize import optimize

GREY = {"preset": "pixel", "mean": (0.4, 0.4, 0.4), "std": (0.25, 0.25, 0.25), "steps": 0, "size": 8}


@pytest.fixture
def relu6_net() -> nn.Module:
    """conv (bias 10 on channel 0) -> ReLU6: on the grey image channel 0 is 10 before the clip, 6 after."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU6()).eval()
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([10.0, 1.0]))
    return net


def test_caption_states_the_pre_clip_value(relu6_net: nn.Module) -> None:
    pre = optimize(relu6_net, O.channel("1", 0), **GREY)
    assert final_caption(pre.value, pre) == "pre-clip value 10 (clipped 6)"
    flat = optimize(relu6_net, O.channel("1", 0, pre_clip=False), **GREY)
    assert final_caption(flat.value, flat) == "value 6"
    plain = optimize(relu6_net, O.channel("0", 1), **GREY)  # the conv: no clip, as before
    assert final_caption(plain.value, plain) == "value 1"
    assert final_caption(2.5, None) == "value 2.5"  # a class image's progress carries no result


def test_window_optimizes_a_relu6_unit_before_its_clip(qtbot, make_window, monkeypatch, tmp_path):
    """The default layer is block 3's ReLU6: the inspector's image of its unit 5 says "pre-clip value"."""
    from deepvis_app.pipeline import ViewRequest
    from deepvis_app.values import Unit

    from .test_window import WAIT

    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path))
    layer = "_blocks.3._swish@1"
    win = make_window("demo", ViewRequest(layer=layer, unit=Unit(layer, 5)))
    opt = win.feature("optimize")
    opt.steps, opt.size = 3, 64
    opt.button.click()
    assert "before its ReLU6 cap 6" in opt.canvas.placeholder
    qtbot.waitUntil(lambda: opt.canvas.has_image and "value" in opt.canvas.caption, timeout=WAIT)
    assert opt.canvas.caption.startswith("pre-clip value ") and "(clipped " in opt.canvas.caption
