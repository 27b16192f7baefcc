"""Feature inversion: hand-computed loss terms, the code error falls on a tiny net and on a real photo, seeded,
cached, abortable; `deepvis invert` JSON and one-line errors."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from helpers import tiny_conv_net
from torch import nn

from deepvis_app.cli import main
from deepvis_app.errors import DeepVisError
from deepvis_app.optimize.invert import (
    B,
    V,
    alpha_prior,
    invert,
    iter_invert,
    relative_code_error,
    tv_prior,
)

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_cache")


@pytest.fixture
def net() -> nn.Module:
    return tiny_conv_net(hidden=8, out=8)


def _photo(photos, size=48) -> np.ndarray:
    import cv2

    return cv2.resize(photos["chelsea"], (size, size), interpolation=cv2.INTER_AREA)


def test_loss_terms_by_hand() -> None:
    code, target = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
    assert relative_code_error(code, target).item() == pytest.approx(8 / 25)
    mean = torch.full((1, 3, 1, 1), 0.5)
    img = mean.expand(1, 3, 2, 2).clone()
    img[0, :, 0, 0] += torch.tensor([B, 0.0, 0.0])  # one pixel at exactly B from the mean: (1)^6, three at 0
    assert alpha_prior(img, mean).item() == pytest.approx(1 / 4, rel=1e-5)
    ramp = torch.zeros(1, 1, 3, 3)
    ramp[0, 0] = torch.arange(3.0).view(1, 3) * V  # dx = V everywhere, dy = 0: ((V^2)/V^2)^1 = 1
    assert tv_prior(ramp.expand(1, 3, 3, 3).clone() / 3 ** 0.5).item() == pytest.approx(1.0, rel=1e-5)


def test_inversion_lowers_code_error_on_tiny_net(net: nn.Module) -> None:
    img = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    res0 = invert(net, img, "conv2", steps=0, size=32, use_cache=False)  # the seeded start image, unoptimized
    res = invert(net, img, "conv2", steps=40, size=32, use_cache=False, tv_weight=0.0, alpha_weight=0.0, jitter=0)
    assert res.code_error < 0.5 * res0.code_error
    assert res.image.shape == (32, 32, 3) and res.image.dtype == np.uint8
    again = invert(net, img, "conv2", steps=40, size=32, use_cache=False, tv_weight=0.0, alpha_weight=0.0,
                   jitter=0)
    np.testing.assert_array_equal(res.image, again.image)  # seeded


def test_inversion_lowers_code_error_on_real_photo(lite0, photos) -> None:
    photo = _photo(photos, 64)
    start = invert(lite0, photo, "_blocks.3", steps=0, size=64, use_cache=False)
    res = invert(lite0, photo, "_blocks.3", steps=25, size=64, use_cache=False)
    assert res.code_error < 0.7 * start.code_error
    assert res.original.shape == res.image.shape == (64, 64, 3)


def test_progress_abort_and_cache(net: nn.Module, tmp_path) -> None:
    img = (np.random.default_rng(1).random((20, 20, 3)) * 255).astype(np.uint8)
    cache = tmp_path / "c"
    stop = threading.Event()
    seen = []
    for st in iter_invert(net, img, "conv1", steps=10, size=16, abort=stop, cache_id="tiny", cache_dir=cache):
        seen.append(st.step)
        if st.step == 3:
            stop.set()
    assert seen == [1, 2, 3] and not list(cache.glob("*.json"))  # aborted: ends quietly, nothing cached
    steps = list(iter_invert(net, img, "conv1", steps=4, size=16, cache_id="tiny", cache_dir=cache))
    assert [s.step for s in steps] == [1, 2, 3, 4] and steps[-1].done and not steps[-1].result.cached
    hit = list(iter_invert(net, img, "conv1", steps=4, size=16, cache_id="tiny", cache_dir=cache))
    assert len(hit) == 1 and hit[0].result.cached
    np.testing.assert_array_equal(hit[0].image, steps[-1].image)
    assert hit[0].result.code_error == pytest.approx(steps[-1].result.code_error)


def test_bad_arguments(net: nn.Module) -> None:
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(DeepVisError, match="unknown layer 'nope'"):
        invert(net, img, "nope", steps=1, size=16, use_cache=False)
    with pytest.raises(DeepVisError, match="RGB uint8"):
        invert(net, img.astype(np.float32), "conv1", steps=1, size=16)
    with pytest.raises(DeepVisError, match="steps"):
        invert(net, img, "conv1", steps=-1, size=16)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json(capsys, chelsea_png, tmp_path) -> None:
    out = tmp_path / "inv"
    code, text, _ = _cli(capsys, "invert", chelsea_png, "--layers", "_blocks.1,_blocks.10", "--steps", "3",
                         "--size", "48", "--out", str(out), "--json", "--quiet")
    assert code == 0
    rep = json.loads(text)
    assert rep["original_top1_class"] and rep["size"] == 48 and rep["steps"] == 3
    assert [r["layer"] for r in rep["layers"]] == ["_blocks.1", "_blocks.10"]
    for r in rep["layers"]:
        assert 0 < r["code_error"] and isinstance(r["same_top1"], bool) and (out / f"{r['layer']}.png").is_file()
        assert r["top1_class"] and 0 <= r["top1_prob"] <= 1
    assert (out / "original.png").is_file() and (out / "overview.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--layers", "_blocks.99"], "unknown layer '_blocks.99'"),
    (["--layers", "_blocks.3", "--steps", "-1"], "argument --steps: must be between 0 and 100000, got -1"),
    (["--layers", " , "], "--layers needs at least one layer"),
])
def test_cli_bad_inputs_one_line(capsys, chelsea_png, tmp_path, argv, message) -> None:
    code, text, err = _cli(capsys, "invert", chelsea_png, *argv, "--out", str(tmp_path / "o"), "--quiet")
    assert code == 2 and text == "" and len(err.strip().splitlines()) == 1 and message in err


def test_cli_missing_image(capsys, tmp_path) -> None:
    code, _, err = _cli(capsys, "invert", str(tmp_path / "none.png"), "--layers", "_blocks.3", "--out",
                        str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "image not found" in err
    assert not (tmp_path / "o").exists()
