"""DeepDream: the objective's gradient at the layer is the activations, one step equals a naive reference,
octave sizes and zoom by hand, the layer's energy rises on a real photo; `deepvis dream` PNG and MP4."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from deepvis_app.cli import main
from deepvis_app.errors import DeepVisError
from deepvis_app.optimize.dream import (
    dream,
    dream_frame,
    dream_objective,
    iter_dream,
    iter_dream_zoom,
    octave_sizes,
    zoom_image,
)

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_cache")


def _img(h=24, w=24, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_objective_gradient_at_layer_is_the_activation() -> None:
    a = torch.tensor([[1.0, -2.0], [3.0, 0.5]], requires_grad=True)
    value = dream_objective(a)
    assert value.item() == pytest.approx(0.5 * (1 + 4 + 9 + 0.25))
    (g,) = torch.autograd.grad(value, a)
    assert torch.equal(g, a.detach())


def test_one_step_matches_naive_reference(net: nn.Module) -> None:
    img = _img()
    lr = 0.05
    res = dream(net, img, "conv1", octaves=1, steps=1, lr=lr, jitter=0, use_cache=False)
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).float().div(255).requires_grad_(True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    a = net.conv1((x - mean) / std)
    (g,) = torch.autograd.grad(0.5 * (a ** 2).sum(), x)
    ref = (x.detach() + lr * g / g.abs().mean()).clamp(0, 1)
    ref_u8 = (ref * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.abs(res.image.astype(int) - ref_u8).max() <= 1
    assert res.objective_end > res.objective_start  # the step raised the layer's energy


def test_octave_sizes_and_zoom_by_hand() -> None:
    assert octave_sizes(100, 140, 3, 1.4) == [(51, 71), (71, 100), (100, 140)]
    assert octave_sizes(20, 20, 4, 2.0) == [(20, 20)]  # 10 px would be under the 16-px floor
    img = np.zeros((4, 4, 3), np.uint8)
    img[1:3, 1:3] = 200
    assert np.array_equal(zoom_image(img, 1.0), img)
    z = zoom_image(img, 2.0)
    assert z.shape == img.shape and (z == 200).all()  # the centre 2x2 fills the frame
    with pytest.raises(DeepVisError, match="zoom"):
        zoom_image(img, 0.5)


def test_progress_octaves_abort_and_cache(net: nn.Module, tmp_path) -> None:
    img = _img(40, 40)
    cache = tmp_path / "c"
    steps = list(iter_dream(net, img, "conv2", octaves=2, octave_scale=2.0, steps=3, cache_id="t", cache_dir=cache))
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6] and steps[-1].done
    assert all(s.image.shape == img.shape for s in steps)  # every yield is at the full size
    hit = list(iter_dream(net, img, "conv2", octaves=2, octave_scale=2.0, steps=3, cache_id="t", cache_dir=cache))
    assert len(hit) == 1 and hit[0].result.cached and np.array_equal(hit[0].image, steps[-1].image)
    stop = threading.Event()
    seen = []
    for st in iter_dream(net, img, "conv2", steps=5, octaves=1, abort=stop, seed=7, cache_id="t", cache_dir=cache):
        seen.append(st.step)
        stop.set()
    assert seen == [1] and len(list(cache.glob("*.json"))) == 1  # the aborted run stored nothing


def test_real_photo_energy_rises_and_live_frame(lite0, photos) -> None:
    photo = cv2.resize(photos["chelsea"], (72, 48), interpolation=cv2.INTER_AREA)
    res = dream(lite0, photo, "_blocks.3", octaves=2, steps=3, use_cache=False)
    assert res.image.shape == photo.shape and res.objective_end > 1.2 * res.objective_start
    live = dream_frame(lite0, photo, "_blocks.3", steps=1)
    assert live.shape == photo.shape and not np.array_equal(live, photo)
    carried = dream_frame(lite0, photo, "_blocks.3", steps=1, previous=res.image, carry=0.5)
    assert not np.array_equal(carried, live)
    with pytest.raises(DeepVisError, match="carry"):
        dream_frame(lite0, photo, "_blocks.3", carry=1.0)


def test_zoom_frames(net: nn.Module) -> None:
    frames = list(iter_dream_zoom(net, _img(32, 32), "conv1", frames=3, zoom=1.1, octaves=1, steps=1))
    assert [f.step for f in frames] == [1, 2, 3] and frames[-1].done and len(frames[-1].result) == 3


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_png_and_mp4(capsys, chelsea_png, tmp_path) -> None:
    out = tmp_path / "d.png"
    code, text, _ = _cli(capsys, "dream", chelsea_png, "--layer", "_blocks.3", "--octaves", "2", "--steps", "2",
                         "--size", "64", "--out", str(out), "--json", "--quiet")
    rep = json.loads(text)
    assert code == 0 and out.is_file() and rep["layer"] == "_blocks.3" and rep["width"] == 64
    assert rep["objective_end"] > rep["objective_start"] and rep["octaves"] == 2
    video = tmp_path / "z.mp4"
    code, text, _ = _cli(capsys, "dream", chelsea_png, "--layer", "_blocks.1", "--octaves", "1", "--steps", "1",
                         "--size", "48", "--frames", "4", "--zoom", "1.1", "--out", str(video), "--json", "--quiet")
    rep = json.loads(text)
    assert code == 0 and rep["frames"] == 4 and rep["frames_read_back"] == 4
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened()
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 4 and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("argv, message", [
    (["--layer", "_blocks.99", "--out", "X.png"], "unknown layer '_blocks.99'"),
    (["--layer", "_blocks.3", "--frames", "3", "--out", "X.png"], "--frames makes a video"),
    (["--layer", "_blocks.3", "--out", "X.jpg"], "--out must be a .png"),
    (["--layer", "_blocks.3", "--octave-scale", "1", "--out", "X.png"],
     "argument --octave-scale: must be a number above 1 and at most 4, got 1"),
])
def test_cli_bad_inputs_one_line(capsys, chelsea_png, tmp_path, argv, message) -> None:
    argv = [str(tmp_path / a) if a.startswith("X.") else a for a in argv]
    code, text, err = _cli(capsys, "dream", chelsea_png, *argv, "--quiet")
    assert code == 2 and text == "" and len(err.strip().splitlines()) == 1 and message in err
    assert not list(tmp_path.glob("X.*"))
