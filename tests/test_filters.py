"""Filter pictures: exact tiles of hand-built convs (grey = 0, per-filter symmetric scaling), the stems of
curated models (3x3, 7x7, 11x11), deeper layers as grey tiles, the seeded random twin, and the CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from deepvis_app import load_model
from deepvis_app.cli import main
from deepvis_app.errors import DeepVisError
from deepvis_app.filters import GREY, conv_for_layer, filter_tiles, first_conv, random_twin, scale_symmetric


def _net(*convs: nn.Module) -> nn.Module:
    return nn.Sequential(*convs)


def test_first_layer_tiles_exact_grey_zero_and_per_filter_scale():
    conv = nn.Conv2d(3, 2, 2, bias=False)
    w = torch.zeros(2, 3, 2, 2)
    w[0, 0] = torch.tensor([[0.5, 0.0], [0.0, -0.5]])   # red: +max, 0 / 0, -max
    w[0, 2, 0, 0] = 0.2                                 # blue: 0.4 of max
    w[1] = w[0] * 10                                    # same shape, ten times the norm
    conv.weight.data = w
    t = filter_tiles(_net(conv), zoom=1, pad=1)
    assert t.kind == "rgb" and t.layer == "0" and t.grid == (1, 2) and t.image.shape == (4, 7, 3)
    tile0 = t.image[1:3, 1:3]
    expected = np.array([[[255, 128, 179], [128, 128, 128]],
                         [[128, 128, 128], [1, 128, 128]]], dtype=np.uint8)
    np.testing.assert_array_equal(tile0, expected)
    np.testing.assert_array_equal(t.image[1:3, 4:6], expected)  # scaled on its own: same picture
    assert t.scale == pytest.approx([0.5, 5.0])
    assert t.image[0].max() == 0 and t.image[:, 3].max() == 0  # padding stays black


def test_zero_filter_is_all_grey_and_scaling_symmetric():
    g, m = scale_symmetric(np.zeros((3, 3)))
    assert m == 0 and (g == GREY).all()
    g, _ = scale_symmetric(np.array([-2.0, -1.0, 1.0, 2.0]))
    assert list(g) == [1, 64, 192, 255] and int(g[0]) + int(g[3]) == 2 * GREY


def test_deeper_layer_one_grey_tile_per_filter_and_input():
    stem = nn.Conv2d(3, 4, 3)
    conv = nn.Conv2d(4, 2, 1, bias=False)
    conv.weight.data = torch.tensor([[2.0, -5.0, 0.0, 1.0], [0.0, 0.0, 0.0, 3.0]]).view(2, 4, 1, 1)
    t = filter_tiles(_net(stem, conv), "1", zoom=1, pad=0)
    assert t.kind == "grey" and t.grid == (2, 4) and t.caveat and t.image.shape == (2, 4, 3)
    assert (t.image[..., 0] == t.image[..., 1]).all() and (t.image[..., 1] == t.image[..., 2]).all()
    np.testing.assert_array_equal(t.image[..., 0], [[179, 1, 128, 153], [128, 128, 128, 255]])
    # Depthwise conv: one tile per filter (its only input channel).
    dw = nn.Conv2d(4, 4, 3, groups=4)
    t = filter_tiles(_net(stem, dw), "1", zoom=2)
    assert t.grid == (4, 1) and t.tile == 6 and t.extra["groups"] == 4


@pytest.mark.parametrize("name,weights,layer,k", [("efficientnet_lite0", "default", "_conv_stem", 3),
                                                   ("resnet18", "random", "conv1", 7),
                                                   ("alexnet", "random", "features.0", 11)])
def test_curated_stems(name, weights, layer, k):
    vm = load_model(name, weights=weights, device="cpu")
    t = filter_tiles(vm)
    n = vm.net.get_submodule(layer).out_channels
    z = max(1, round(24 / k))
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    assert first_conv(vm) == layer and t.layer == layer and t.weight_shape == (n, 3, k, k)
    assert t.image.shape == (1 + rows * (k * z + 1), 1 + cols * (k * z + 1), 3) and t.zoom == z
    f = n - 1  # the last tile is the last filter, scaled on its own
    y, x = t.tile_origin(f // cols, f % cols)
    w = vm.net.get_submodule(layer).weight[f].detach().numpy().transpose(1, 2, 0)
    expect = np.repeat(np.repeat(scale_symmetric(w)[0], z, 0), z, 1)
    np.testing.assert_array_equal(t.image[y:y + k * z, x:x + k * z], expect)


def test_deeper_curated_layer_and_limits():
    vm = load_model("resnet18", weights="random", device="cpu")
    t = filter_tiles(vm, "layer1.0.conv1", filters=range(4))
    assert t.kind == "grey" and t.grid == (4, 32) and t.truncated and t.weight_shape == (64, 64, 3, 3)
    assert t.inputs == list(range(32)) and t.caveat
    with pytest.raises(DeepVisError, match="not a conv layer"):
        filter_tiles(vm, "fc")
    with pytest.raises(DeepVisError, match="unknown layer"):
        filter_tiles(vm, "nope")
    with pytest.raises(DeepVisError, match="out of range"):
        filter_tiles(vm, filters=[64])


def test_random_twin_is_seeded_same_architecture_and_leaves_rng(lite0):
    state = torch.random.get_rng_state()
    a, b, c = random_twin(lite0, 0), random_twin(lite0, 0), random_twin(lite0, 1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert list(a.net.state_dict()) == list(lite0.net.state_dict()) and a.weights == "random"
    wa, wb, wc = (m.net._conv_stem.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert not torch.allclose(wa, lite0.net._conv_stem.weight)


def test_cli_filters_json_png_and_compare(capsys, tmp_path):
    out = tmp_path / "f.png"
    code = main(["filters", "--device", "cpu", "--out", str(out), "--json"])
    info = json.loads(capsys.readouterr().out)
    img = cv2.imread(str(out))
    assert code == 0 and info["layer"] == "_conv_stem" and info["kind"] == "rgb"
    assert list(img.shape) == info["image_shape"] and info["weight_shape"] == [32, 3, 3, 3]
    both = tmp_path / "both.png"
    code = main(["filters", "--device", "cpu", "--out", str(both), "--compare-random", "--json"])
    info2 = json.loads(capsys.readouterr().out)
    assert code == 0 and cv2.imread(str(both)).shape[1] > 2 * img.shape[1] and info2["random"]["seed"] == 0


@pytest.mark.parametrize("args,msg", [(["--layer", "_fc"], "not a conv layer"),
                                      (["--filters", "a-b"], "give indices"),
                                      (["--filters", "40"], "out of range"),
                                      (["--zoom", "0"], "argument --zoom: must be between 1 and 64, got 0")])
def test_cli_filters_bad_inputs_one_line(capsys, tmp_path, args, msg):
    out = tmp_path / "f.png"
    code = main(["filters", "--device", "cpu", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and err.count("\n") == 1 and not out.exists()
    code = main(["filters", "--device", "cpu", "--out", str(tmp_path / "no" / "f.png")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_conv_for_layer_picks_the_conv_the_panel_shows(lite0):
    assert conv_for_layer(lite0, None) == "_conv_stem" and conv_for_layer(lite0, "_conv_stem") == "_conv_stem"
    assert conv_for_layer(lite0, "_blocks.3") == "_blocks.3._project_conv"
    assert conv_for_layer(lite0, "_swish@0") is None and conv_for_layer(lite0, "_fc") is None
