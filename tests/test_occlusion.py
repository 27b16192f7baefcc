"""Occlusion maps: hand-computed numbers, exact equality with a naive loop (incremental path exercised), Captum's
window placement and definition of the input-resolution map (also where the stride does not divide size - window:
the last window is cut at the image edge), coarse-to-fine job, a real photo, and the CLI."""

from __future__ import annotations

import json
import math
import threading

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from deepvis_app.cli import main
from deepvis_app.errors import DeepVisError, ParamError
from deepvis_app.occlusion import (
    fill_image,
    iter_occlusion,
    naive_occlusion,
    occlusion_map,
    patch_positions,
)
from deepvis_app.values import ClassTarget, Unit

ID = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class MeanNet(nn.Module):
    """'Logits' = the per-channel means of the image: occlusion scores by hand."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class SE(nn.Module):
    """Squeeze-excitation: global context, so nothing after it is local."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(nn.functional.adaptive_avg_pool2d(x, 1)))


def tiny(se: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), Block(8)]
    layers += [SE(8)] if se else []
    layers += [nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), Block(16),
               nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(16, 10)]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 64, 64)


def test_hand_computed_scores_and_upsampled_map():
    x = torch.ones(1, 3, 4, 4)
    x[0, 0] = torch.arange(16.0).view(4, 4)
    m = occlusion_map(MeanNet(), x, ClassTarget(0, score="logit"), window=2, stride=2, fill="zero", **ID)
    # channel 0 sums to 120; a window replaces 4 values by grey 0.5
    assert m.base_score == pytest.approx(7.5)
    assert m.scores.tolist() == [[(120 - 10 + 2) / 16, (120 - 18 + 2) / 16], [(120 - 42 + 2) / 16, (120 - 50 + 2) / 16]]
    up = m.upsampled()
    assert up[0, 0] == pytest.approx(7.5 - 7.0) and up[3, 3] == pytest.approx(7.5 - 4.5)
    assert m.extremes() == {"min": 4.5, "min_at": [2, 2], "max": 7.0, "max_at": [0, 0]}
    mean = occlusion_map(MeanNet(), x, ClassTarget(0, score="logit"), window=2, stride=2, fill="mean", **ID)
    assert float(mean.scores[0, 0]) == pytest.approx((120 - 10 + 4 * 7.5) / 16)


def test_last_window_is_cut_at_the_image_edge():
    # Captum's placement: ceil((size - window) / stride) + 1 windows per axis, the last one cut at the edge (the
    # issue's case: 11 windows, the last over 200..223; 10 left pixels 212..223 never occluded)
    assert patch_positions(224, 32, 20) == list(range(0, 201, 20))
    assert patch_positions(224, 32, 16) == list(range(0, 193, 16))  # a dividing stride: the last one fits exactly
    x = torch.ones(1, 3, 4, 5)
    x[0, 0] = torch.arange(20.0).view(4, 5)  # channel 0 sums to 190; row r, col c holds 5r + c
    m = occlusion_map(MeanNet(), x, ClassTarget(0, score="logit"), window=2, stride=2, fill="zero", **ID)
    assert m.ys == [0, 2] and m.xs == [0, 2, 4] and m.base_score == pytest.approx(9.5)
    # the windows at column 4 cover one column: 2 values become grey 0.5 (4 + 9, then 14 + 19)
    want = [[(190 - 12 + 2) / 20, (190 - 20 + 2) / 20, (190 - 13 + 1) / 20],
            [(190 - 52 + 2) / 20, (190 - 60 + 2) / 20, (190 - 33 + 1) / 20]]
    np.testing.assert_allclose(m.scores.numpy(), want, rtol=1e-6)
    up = m.upsampled()
    assert up[0, 4] == pytest.approx(9.5 - 8.9) and up[3, 4] == pytest.approx(9.5 - 7.9)  # edge pixels covered
    assert up[1, 3] == pytest.approx(9.5 - 8.6)


def test_grey_fill_is_mid_grey_in_pixel_space():
    x = torch.zeros(1, 3, 8, 8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    f = fill_image(x, "zero", 4, mean, std)
    assert torch.allclose(f[0, :, 0, 0] * torch.tensor(std) + torch.tensor(mean), torch.full((3,), 0.5))


@pytest.mark.parametrize(("fill", "stride"), [("zero", 6), ("mean", 8), ("blur", 8)])
def test_incremental_equals_naive_loop(image, fill, stride):
    net = tiny()
    m = occlusion_map(net, image, 3, window=12, stride=stride, fill=fill, batch=50, **ID)
    assert m.note.startswith("incremental up to"), m.note  # the incremental path really ran ...
    assert m.note.endswith("channels-last, BatchNorm folded"), m.note  # ... on the fast copy of the net
    softmax3 = lambda out: out.softmax(dim=1)[:, 3]  # noqa: E731
    ref = naive_occlusion(net, image, softmax3, window=12, stride=stride, fill=fill_image(image, fill, 12, **ID))
    assert m.scores.shape == (math.ceil((64 - 12) / stride) + 1,) * 2  # Captum's count: 10 at stride 6, 7 at 8
    torch.testing.assert_close(m.scores, ref, rtol=0, atol=1e-6)
    with torch.no_grad():
        patched = _patched(image, fill_image(image, fill, 12, **ID), 12, stride)
        labels = [int(net(img[None]).argmax()) for img in patched]
    assert m.labels.flatten().tolist() == labels


def _patched(x, fill, window, stride):
    for y in patch_positions(x.shape[-2], window, stride):
        for xx in patch_positions(x.shape[-1], window, stride):
            img = x[0].clone()
            img[:, y:y + window, xx:xx + window] = fill[0, :, y:y + window, xx:xx + window]
            yield img


def test_global_context_stops_incremental_and_stays_exact(image):
    net = tiny(se=True)
    m = occlusion_map(net, image, ClassTarget(2, score="logit"), window=8, stride=8, **ID)
    assert m.note.startswith("incremental up to ") and "after it: 4 is not local" in m.note, m.note  # SE = "4"
    fill = fill_image(image, "zero", 8, **ID)
    ref = naive_occlusion(net, image, lambda out: out[:, 2], window=8, stride=8, fill=fill)
    torch.testing.assert_close(m.scores, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("yx", [None, (3, 5)])
def test_unit_target_stops_at_its_layer_and_matches_naive(image, yx):
    net = tiny()
    target = Unit("6", 4, *(yx or (None, None)))
    m = occlusion_map(net, image, target, window=8, stride=8, **ID)
    assert m.labels is None
    grabbed = {}
    handle = net[6].register_forward_hook(lambda _m, _i, out: grabbed.__setitem__("a", out))
    fill = fill_image(image, "zero", 8, **ID)
    try:
        ref = []
        with torch.no_grad():
            for img in _patched(image, fill, 8, 8):
                net(img[None])
                a = grabbed["a"][0, 4]
                ref.append(float(a[yx]) if yx else float(a.mean()))
    finally:
        handle.remove()
    torch.testing.assert_close(m.scores.flatten(), torch.tensor(ref), rtol=0, atol=1e-5)


def test_upsampled_map_is_captums_occlusion(image):
    captum = pytest.importorskip("captum.attr")
    net = tiny()
    fill = fill_image(image, "blur", 16, **ID)
    m = occlusion_map(net, image, 5, window=16, stride=8, fill="blur", **ID)
    occ = captum.Occlusion(lambda inp: net(inp).softmax(dim=1))
    attr = occ.attribute(image, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), baselines=fill, target=5)
    np.testing.assert_allclose(m.upsampled(), attr[0, 0].numpy(), atol=1e-6)


def test_stride_that_does_not_divide_equals_captum(image):
    """Stride 5, window 12 on 64 px: 12 windows per axis, the last at 55 cut to 9 px; the incremental engine and the
    input-resolution map equal Captum's `Occlusion` up to 1e-4 of the map's largest |value| (float32 rounding of
    the folded-BatchNorm copy: measured 1.5e-8 of 1.3e-3 for the logit, 3e-8 of 2.8e-3 for the unit)."""
    captum = pytest.importorskip("captum.attr")
    net = tiny()
    fill = fill_image(image, "blur", 12, **ID)
    m = occlusion_map(net, image, ClassTarget(5, score="logit"), window=12, stride=5, fill="blur", batch=50, **ID)
    assert m.note.startswith("incremental up to"), m.note
    assert m.ys == m.xs == list(range(0, 56, 5))  # (the naive loop at stride 6 checks every score, cut windows too)
    attr = captum.Occlusion(net).attribute(image, sliding_window_shapes=(3, 12, 12), strides=(3, 5, 5),
                                           baselines=fill, target=5, perturbations_per_eval=48)[0, 0].numpy()
    scale = np.abs(attr).max()
    assert np.abs(attr[:, 60:]).max() > 0.1 * scale  # Captum occludes the last columns ...
    np.testing.assert_allclose(m.upsampled(), attr, rtol=0, atol=1e-4 * scale)  # ... so do we, with the same values
    # a unit target (channel 4's mean at layer "6"), incremental up to its layer, also equals Captum
    grabbed = {}
    handle = net[6].register_forward_hook(lambda _m, _i, out: grabbed.__setitem__("a", out))
    try:
        occ = captum.Occlusion(lambda inp: (net(inp), grabbed["a"][:, 4].mean(dim=(1, 2)))[1])
        attr = occ.attribute(image, sliding_window_shapes=(3, 12, 12), strides=(3, 5, 5), baselines=fill,
                             perturbations_per_eval=48)[0, 0]
    finally:
        handle.remove()
    u = occlusion_map(net, image, Unit("6", 4), window=12, stride=5, fill="blur", batch=50, **ID)
    assert u.note.startswith("incremental up to"), u.note
    np.testing.assert_allclose(u.upsampled(), attr.numpy(), rtol=0, atol=1e-4 * float(attr.abs().max()))


@pytest.mark.parametrize(("builder", "layer", "channels", "side"), [
    ("channels_last", "lin", 6, 32),  # N x 32 x 32 x 6 (ConvNeXt-like)
    ("tokens", "mix", 8, 8),  # N x (1 + 8 * 8) x 8 (ViT-like: a class token, then the patch grid)
])
def test_unit_targets_on_channels_last_and_token_layers(builder, layer, channels, side):
    import layout_nets

    net = getattr(layout_nets, builder)()
    to_maps = getattr(layout_nets, f"{builder}_by_hand")  # N x C x H x W, written out by hand
    torch.manual_seed(2)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(DeepVisError, match=rf"out of range for layer '{layer}': valid units are 0\.\.{channels - 1}"):
        occlusion_map(net, x, (layer, channels), window=8, stride=8, **ID)
    with pytest.raises(DeepVisError, match=rf"outside layer '{layer}': y in 0\.\.{side - 1}"):
        occlusion_map(net, x, (layer, 3, side, 0), window=8, stride=8, **ID)
    grabbed = {}
    handle = getattr(net, layer).register_forward_hook(lambda _m, _i, out: grabbed.__setitem__("a", out))
    fill = fill_image(x, "zero", 8, **ID)
    try:
        want = []
        with torch.no_grad():
            for img in _patched(x, fill, 8, 5):
                net(img[None])
                want.append(float(to_maps(grabbed["a"])[0, 3, 2, 5]))
    finally:
        handle.remove()
    m = occlusion_map(net, x, Unit(layer, 3, 2, 5), window=8, stride=5, **ID)
    assert m.scores.shape == (6, 6)  # ceil((32 - 8) / 5) + 1: the last window is cut to 7 px
    torch.testing.assert_close(m.scores.flatten(), torch.tensor(want), rtol=0, atol=1e-5)


def test_coarse_to_fine_job_reuses_and_aborts(image):
    net = tiny()
    maps = list(iter_occlusion(net, image, 1, window=8, strides=(16, 8), batch=16, **ID))
    assert [m.level for m in maps] == [0] + [1] * 3  # 16 coarse positions in one batch, 48 new fine in three
    assert maps[0].complete and not maps[0].final and maps[-1].final
    assert maps[1].done == 16 + 16  # the coarse positions were copied, not recomputed
    assert torch.isnan(maps[1].scores).sum() == 64 - 32
    fine = occlusion_map(net, image, 1, window=8, stride=8, **ID)
    torch.testing.assert_close(maps[-1].scores, fine.scores, rtol=0, atol=1e-6)
    torch.testing.assert_close(maps[0].scores, fine.scores[::2, ::2], rtol=0, atol=1e-6)
    stop = threading.Event()
    got = []
    for m in iter_occlusion(net, image, 1, window=8, strides=(16, 8), batch=16, abort=stop, **ID):
        got.append(m)
        stop.set()
    assert len(got) == 1


def test_bad_arguments_are_one_line_errors(image):
    net = tiny()
    with pytest.raises(ParamError, match="window is larger than"):
        occlusion_map(net, image, 1, window=80, stride=8, **ID)
    with pytest.raises(ParamError, match="fill 'pink' is unknown"):
        occlusion_map(net, image, 1, window=8, stride=8, fill="pink", **ID)
    with pytest.raises(DeepVisError, match="out of range"):
        occlusion_map(net, image, 10, window=8, stride=8, **ID)
    with pytest.raises(DeepVisError, match="unknown layer"):
        occlusion_map(net, image, ("nope", 1), window=8, stride=8, **ID)


def test_covering_the_cat_face_hurts_most(lite0, cat_on_rocket):
    cat = lite0.categories.index("Egyptian cat")
    m = occlusion_map(lite0, cat_on_rocket, cat, window=56, stride=28, incremental=False)
    assert m.base_label == cat
    y, x = m.extremes()["min_at"]
    assert 56 <= y and y + 56 <= 168 and 56 <= x and x + 56 <= 168  # the patch lies on the face
    assert m.extremes()["min"] < 0.25 * m.base_score
    away = [float(m.scores[i, j]) for i, yy in enumerate(m.ys) for j, xx in enumerate(m.xs)
            if yy + 56 <= 56 or yy >= 168 or xx + 56 <= 56 or xx >= 168]  # patches off the cat
    assert min(away) > 4 * m.extremes()["min"]
    assert max(away) > m.base_score  # covering parts of the rocket makes "cat" MORE likely (blue)


def test_cli_occlude_json(tmp_path, capsys, photos):
    src = str(tmp_path / "coffee.png")
    assert cv2.imwrite(src, cv2.cvtColor(photos["coffee"], cv2.COLOR_RGB2BGR))
    out, npy = tmp_path / "map.png", tmp_path / "map.npy"
    rc = main(["occlude", src, "--class", "espresso", "--window", "112", "--stride", "56", "--out", str(out),
               "--npy", str(npy), "--json", "--quiet", "--model", "resnet18", "--weights", "random"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    scores = np.load(npy)
    assert scores.shape == (3, 3) and report["positions"] == [3, 3] and report["class"] == "espresso"
    assert report["min"] == pytest.approx(float(scores.min()), rel=1e-6)
    i, j = np.unravel_index(scores.argmin(), scores.shape)
    assert report["min_at"] == [56 * int(i), 56 * int(j)]
    assert cv2.imread(str(out)).shape == (224, 224, 3)


def test_cli_occlude_covers_the_edge(tmp_path, capsys, chelsea_png):
    npy = tmp_path / "map.npy"
    rc = main(["occlude", chelsea_png, "--class", "0", "--window", "112", "--stride", "50", "--out",
               str(tmp_path / "map.png"), "--npy", str(npy), "--json", "--quiet", "--model", "resnet18",
               "--weights", "random"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["positions"] == [4, 4] and np.load(npy).shape == (4, 4)  # 0, 50, 100, 150 (cut to 74 px)
    i, j = np.unravel_index(np.load(npy).argmin(), (4, 4))
    assert report["min_at"] == [50 * int(i), 50 * int(j)]


def test_cli_occlude_errors(tmp_path, capsys, chelsea_png):
    rc = main(["occlude", chelsea_png, "--class", "no such thing", "--out", str(tmp_path / "m.png"),
               "--model", "resnet18", "--weights", "random"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("deepvis: error: unknown class") and len(err.strip().splitlines()) == 1
    rc = main(["occlude", chelsea_png, "--layer", "layer1", "--out", str(tmp_path / "m.png"),
               "--model", "resnet18", "--weights", "random"])
    assert rc == 2 and "--unit" in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()
