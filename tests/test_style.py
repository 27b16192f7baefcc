"""Neural style: Gram matrix by hand, L-BFGS and Adam lower the loss (tiny net and real photos), function-evaluation
budget, the recolor init and the style-loss reduction it buys with a photo as the style (issue 30), default layers;
`deepvis style` JSON and one-line errors (VGG weights missing offline)."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
import torch
from helpers import tiny_conv_net
from torch import nn

from deepvis_app.cli import main
from deepvis_app.errors import DeepVisError
from deepvis_app.optimize.style import DEFAULT_STEPS, LAYERS, gram, iter_style, layers_for, recolor, style_transfer

torch.set_num_threads(1)


@pytest.fixture
def net() -> nn.Module:
    return tiny_conv_net()


@pytest.fixture(autouse=True)
def _cache_env(isolated_cache):
    """Every test writes its own cache."""


TINY = {"content_layer": "conv2", "style_layers": ["relu", "conv2"], "size": 24, "use_cache": False}


def _img(seed: int, h=24, w=24) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_gram_by_hand() -> None:
    act = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # [1, 2 channels, 1, 2 positions]
    # F = [[1, 2], [3, 4]]; F F^T = [[5, 11], [11, 25]]; divided by 2 positions
    assert torch.allclose(gram(act), torch.tensor([[[2.5, 5.5], [5.5, 12.5]]]))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_optimizers_lower_the_loss_on_tiny_net(net: nn.Module, optimizer: str) -> None:
    res = style_transfer(net, _img(0), _img(1), optimizer=optimizer, steps=30, style_weight=10.0, init="content",
                         **TINY)
    assert res.losses_start["content"] == 0.0  # starts from the content photo
    assert res.losses_photo == res.losses_start
    assert res.losses_end["total"] < 0.5 * res.losses_start["total"]
    assert res.losses_end["style"] < res.losses_start["style"]
    assert res.evals >= 30 if optimizer == "lbfgs" else res.evals == 30
    assert res.image.shape == (24, 24, 3) and res.image.dtype == np.uint8


def test_lbfgs_on_real_photos(lite0, photos) -> None:
    content = cv2.resize(photos["chelsea"], (48, 32), interpolation=cv2.INTER_AREA)
    style = cv2.resize(photos["coffee"], (48, 32), interpolation=cv2.INTER_AREA)
    res = style_transfer(lite0, content, style, steps=12, size=48, use_cache=False)
    assert res.image.shape == (32, 48, 3)
    assert res.losses_end["style"] < 0.7 * res.losses_start["style"]
    assert res.losses_end["total"] < res.losses_start["total"]


def test_recolor_moves_each_channel_to_the_style_mean_and_spread() -> None:
    content = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(1, 1, 2, 2).repeat(1, 3, 1, 1)  # mean 0.5, std 0.2582
    style = torch.tensor([0.4, 0.5, 0.6, 0.5, 0.5, 0.5]).view(1, 1, 2, 3).repeat(1, 3, 1, 1)  # mean 0.5
    style[:, 1] = 0.1  # a flat channel: every pixel becomes 0.1
    out = recolor(content, style)
    sd_s = float(style[0, 0].std())  # 0.0632
    want = 0.5 + (torch.tensor([0.2, 0.4, 0.6, 0.8]) - 0.5) / float(content[0, 0].std()) * sd_s
    torch.testing.assert_close(out[0, 0].flatten(), want)
    torch.testing.assert_close(out[0, 1], torch.full((2, 2), 0.1))
    bright = recolor(content, torch.ones(1, 3, 2, 3))
    assert bright.max() <= 1.0 and (bright == 1.0).all()  # clipped to [0, 1]


def test_photo_style_is_taken_not_tinted(lite0, photos) -> None:
    """Issue 30: with a photo as the style (the rocket's night sky), starting from the content photo lowered the
    style loss only 2.2x in 30 evaluations at 96 px (4.5x in 100 at 256 px: the content, tinted); the default init
    (recolored content) lowers it 8.1x here, 47x at 256 px (docs/style.md). Asserted with margin: 5x."""
    content, style = photos["astronaut"], photos["rocket"]
    res = style_transfer(lite0, content, style, steps=30, size=96, use_cache=False)
    assert res.settings["init"] == "recolor" and res.evals >= 30 and res.image.shape == (96, 96, 3)
    assert res.losses_photo["content"] == 0.0 and res.losses_start["content"] > 0  # the start is not the photo
    assert res.losses_photo["style"] / res.losses_end["style"] > 5.0
    assert res.losses_end["content"] < 1.0  # the astronaut is still there
    assert DEFAULT_STEPS == 200


def test_progress_abort_and_cache(net: nn.Module, tmp_path) -> None:
    kw = dict(TINY, use_cache=True, cache_id="t", cache_dir=tmp_path / "c", optimizer="adam", steps=4)
    steps = list(iter_style(net, _img(0), _img(1), **kw))
    assert [s.step for s in steps] == [1, 2, 3, 4] and steps[-1].done and steps[-1].losses["evals"] == 4
    hit = list(iter_style(net, _img(0), _img(1), **kw))
    assert len(hit) == 1 and hit[0].result.cached and np.array_equal(hit[0].image, steps[-1].image)
    assert hit[0].result.losses_end == steps[-1].result.losses_end
    assert hit[0].result.losses_photo == steps[-1].result.losses_photo
    stop = threading.Event()
    seen = []
    for st in iter_style(net, _img(2), _img(1), **dict(kw, steps=10), abort=stop):
        seen.append(st.step)
        stop.set()
    assert seen == [1] and len(list((tmp_path / "c").glob("*.json"))) == 1


def test_default_layers_and_errors(lite0, net: nn.Module) -> None:
    content, styles = layers_for(lite0)
    assert (content, styles) == LAYERS["efficientnet_lite0"]
    for layer in (content, *styles):
        lite0.info(layer)  # every default layer exists in the model
    with pytest.raises(DeepVisError, match="style_layers have no default for model"):
        layers_for(net)
    with pytest.raises(DeepVisError, match="optimizer 'sgd' is unknown"):
        style_transfer(net, _img(0), _img(1), optimizer="sgd", **TINY)
    with pytest.raises(DeepVisError, match="style image"):
        style_transfer(net, _img(0), np.zeros((4, 4, 3), np.uint8), **TINY)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def coffee_png(tmp_path, photos) -> str:
    path = tmp_path / "coffee.png"
    cv2.imwrite(str(path), cv2.cvtColor(photos["coffee"], cv2.COLOR_RGB2BGR))
    return str(path)


def test_cli_json(capsys, chelsea_png, coffee_png, tmp_path) -> None:
    out = tmp_path / "s.png"
    code, text, _ = _cli(capsys, "style", chelsea_png, coffee_png, "--steps", "4", "--size", "64", "--optimizer",
                         "adam", "--out", str(out), "--json", "--quiet")
    rep = json.loads(text)
    assert code == 0 and out.is_file() and rep["evals"] == 4 and rep["width"] == 64
    assert rep["init"] == "recolor" and rep["content_loss_start"] > 0.0  # starts from the recoloured photo
    assert rep["style_loss_end"] < rep["style_loss_start"] < rep["style_loss_photo"]
    code, text, _ = _cli(capsys, "style", chelsea_png, coffee_png, "--steps", "4", "--size", "64", "--optimizer",
                         "adam", "--init", "content", "--out", str(out), "--json", "--quiet", "--no-cache")
    rep = json.loads(text)
    assert code == 0 and rep["init"] == "content"
    assert rep["content_loss_start"] == 0.0 and rep["style_loss_end"] < rep["style_loss_start"]
    assert rep["style_loss_photo"] == rep["style_loss_start"]
    assert rep["content_layer"] == "_blocks.4" and len(rep["style_layers"]) == 4
    assert {"total_loss_start", "total_loss_end", "seconds", "optimizer"} <= set(rep)


@pytest.mark.parametrize("argv, message", [
    (["--style-layers", "_blocks.3,nope"], "unknown layer 'nope'"),
    (["--steps", "-2"], "argument --steps: must be between 0 and 100000, got -2"),
    (["--style-weight", "-1"], "argument --style-weight: must be a number at least 0 and at most 1e+09, got -1"),
    (["--size", "24"], "too small for this network"),
])
def test_cli_bad_inputs_one_line(capsys, chelsea_png, coffee_png, tmp_path, argv, message) -> None:
    code, text, err = _cli(capsys, "style", chelsea_png, coffee_png, *argv, "--out", str(tmp_path / "x.png"),
                           "--quiet")
    assert code == 2 and text == "" and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "x.png").exists()


def test_cli_missing_style_and_vgg_weights(capsys, chelsea_png, tmp_path) -> None:
    code, _, err = _cli(capsys, "style", chelsea_png, str(tmp_path / "none.png"), "--out", str(tmp_path / "x.png"))
    assert code == 2 and "image not found" in err and len(err.strip().splitlines()) == 1
    from deepvis_app.errors import WeightsMissingError
    from deepvis_app.zoo import load_model

    try:
        load_model("vgg16", device="cpu")
    except WeightsMissingError:
        code, _, err = _cli(capsys, "style", chelsea_png, chelsea_png, "--model", "vgg16", "--out",
                            str(tmp_path / "x.png"))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "efficientnet_lite0" in err
    else:
        pytest.skip("VGG-16 weights are present here; the missing-weights message cannot be checked")
