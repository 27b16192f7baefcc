"""Activation maximization: objective values, regularizers, reproducibility, cache, cancellation, CLI errors.

Everything runs on a tiny conv net at 32 px for a handful of steps, except the CLI tests, which load the
default model (offline) because the CLI resolves class names and layers against a real VisModel.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from torch import nn

from deepvis_app.errors import DeepVisError
from deepvis_app.optimize import Cancelled, cached, cached_result, iter_optimize, optimize
from deepvis_app.optimize import objectives as O
from deepvis_app.optimize import regularizers as R
from deepvis_app.optimize.objectives import Outputs
from deepvis_app.values import LayerInfo, Layout

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_cache")


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


FAST = {"steps": 5, "size": 32}


# ---- objectives: hand-computed values -----------------------------------------------------------------


def _outputs() -> Outputs:
    act = torch.arange(2 * 2 * 3 * 3, dtype=torch.float32).reshape(2, 2, 3, 3)  # values 0..35
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    return Outputs(acts={"L": act}, logits=logits, infos={"L": LayerInfo("L", "Conv2d", (2, 3, 3))})


def test_objective_values_by_hand() -> None:
    o = _outputs()
    # channel 1 of image 0 holds 9..17 (mean 13), of image 1 holds 27..35 (mean 31)
    assert O.channel("L", 1)(o).tolist() == [13.0, 31.0]
    # centre of a 3x3 map is (1,1): channel 0 of image 0 -> 4
    assert O.neuron("L", 0)(o).tolist() == [4.0, 22.0]
    assert O.neuron("L", 1, 0, 2)(o).tolist() == [11.0, 29.0]
    dream0 = sum(v * v for v in range(18)) / 18
    assert O.layer_dream("L")(o)[0].item() == pytest.approx(dream0)
    assert O.class_logit(2)(o).tolist() == [3.0, 0.0]
    p = math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3))
    assert O.class_prob(2)(o).tolist() == pytest.approx([p, 1 / 3])
    assert O.class_log_prob(2)(o)[0].item() == pytest.approx(math.log(p))
    mix = 2 * O.channel("L", 1) - O.class_logit(2) + 1
    assert mix(o).tolist() == [2 * 13 - 3 + 1, 2 * 31 - 0 + 1]
    assert (-O.channel("L", 0))(o).tolist() == [-4.0, -22.0]
    assert sum([O.channel("L", 0), O.channel("L", 1)])(o).tolist() == [17.0, 53.0]
    assert mix.layers == ("L",) and mix.needs_logits


def test_diversity_is_minus_mean_gram_cosine() -> None:
    a = torch.zeros(3, 2, 1, 2)
    a[0, 0] = 1.0  # grams: image 0 -> only (0,0) entry; image 1 identical; image 2 -> only (1,1)
    a[1, 0] = 2.0
    a[2, 1] = 1.0
    vals = O.diversity("L")(Outputs(acts={"L": a}, infos={"L": LayerInfo("L", "Conv2d", (2, 1, 2))}))
    assert vals.tolist() == pytest.approx([-0.5, -0.5, 0.0])


def test_objective_range_errors() -> None:
    o = _outputs()
    with pytest.raises(DeepVisError, match=r"valid units are 0\.\.1"):
        O.channel("L", 2)(o)
    with pytest.raises(DeepVisError, match="outside"):
        O.neuron("L", 0, 3, 0)(o)
    with pytest.raises(DeepVisError, match=r"valid classes are 0\.\.2"):
        O.class_logit(3)(o)


def test_channels_last_and_token_objectives_by_hand() -> None:
    """Units of a channels-last map (ConvNeXt's inner layers) and of a token layer (a ViT's) are read through the
    layer's layout: channel c at (y, x) of its maps, the class token left out; the range check is against the
    layer's channels, never its first dimension."""
    from layout_nets import channels_last, tokens

    from deepvis_app.optimize.engine import Forward, layer_infos
    from deepvis_app.probe import Probe

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cl = channels_last()
    infos = layer_infos(cl, cl, ["lin"], x)
    assert infos["lin"].layout is Layout.CHANNELS_LAST and infos["lin"].channels == 6
    with torch.no_grad(), Forward(cl, ["lin"], need_logits=False, infos=infos) as forward:
        out = forward(x)
        raw = cl.lin(cl.perm(cl.conv(x)))  # N x 32 x 32 x 6
    torch.testing.assert_close(O.neuron("lin", 5, 2, 3)(out), raw[:, 2, 3, 5])
    torch.testing.assert_close(O.neuron("lin", 1)(out), raw[:, 16, 16, 1])  # the centre
    torch.testing.assert_close(O.channel("lin", 4)(out), raw[..., 4].mean(dim=(1, 2)))
    with pytest.raises(DeepVisError, match=r"valid units are 0\.\.5"):
        O.channel("lin", 6)(out)  # 32 rows are not 32 channels

    tk = tokens()
    infos = layer_infos(tk, tk, ["attn"], x)
    assert infos["attn"].layout is Layout.TOKENS and infos["attn"].prefix_tokens == 1
    with torch.no_grad(), Forward(tk, ["attn"], need_logits=False, infos=infos) as forward:
        out = forward(x)
    with torch.no_grad(), Probe(tk, ["attn"]) as probe:
        tk(x)
    raw = probe["attn"]  # N x (1 + 8 * 8) x 8, the class token first
    torch.testing.assert_close(O.neuron("attn", 3, 1, 6)(out), raw[:, 1 + 1 * 8 + 6, 3])
    torch.testing.assert_close(O.channel("attn", 7)(out), raw[:, 1:, 7].mean(dim=1))
    with pytest.raises(DeepVisError, match="outside"):
        O.neuron("attn", 0, 8, 0)(out)  # the grid is 8x8: 64 patch tokens, not 65 rows


def test_engine_value_of_a_channels_last_unit() -> None:
    """The engine looks the layer's layout up on a plain module: the saved image's value is the unit by hand."""
    from layout_nets import channels_last

    cl = channels_last()
    mean, std = (0.3, 0.5, 0.7), (0.2, 0.25, 0.5)
    res = optimize(cl, O.neuron("lin", 5, 2, 3), preset="pixel", steps=0, size=32, mean=mean, std=std)
    px = torch.from_numpy(res.image).permute(2, 0, 1).float()[None] / 255
    x = (px - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = cl.lin(cl.perm(cl.conv(x)))[0, 2, 3, 5].item()
    assert res.value == pytest.approx(want, abs=1e-5)


def test_engine_value_on_saved_image(net: nn.Module) -> None:
    """steps=0 with a zero-noise pixel start saves the mean image; the value is the net on its 8-bit copy."""
    mean, std = (0.3, 0.5, 0.7), (0.2, 0.25, 0.5)
    res = optimize(net, O.class_logit(3), preset="pixel", steps=0, size=16, mean=mean, std=std)
    expect_px = [round(m * 255) for m in mean]
    assert (res.image.reshape(-1, 3) == expect_px).all()
    x = torch.tensor([(px / 255 - m) / s for px, m, s in zip(expect_px, mean, std, strict=True)])
    with torch.no_grad():
        want = net(x.view(1, 3, 1, 1).expand(1, 3, 16, 16))[0, 3].item()
    assert res.value == pytest.approx(want, abs=1e-5)


# ---- regularizers: pixel checks ----------------------------------------------------------------------


def test_gaussian_blur_spreads_a_dot_by_the_kernel() -> None:
    x = torch.zeros(1, 3, 11, 11)
    x[0, :, 5, 5] = 1.0
    R.gaussian_blur_(x, 1.0)
    k = [math.exp(-0.5 * t * t) for t in range(-3, 4)]
    k = [v / sum(k) for v in k]
    assert x[0, 0, 5, 5].item() == pytest.approx(k[3] * k[3], rel=1e-5)
    assert x[0, 1, 5, 6].item() == pytest.approx(k[3] * k[4], rel=1e-5)
    assert x[0, 2, 3, 7].item() == pytest.approx(k[1] * k[5], rel=1e-5)
    assert x.sum().item() == pytest.approx(3.0, rel=1e-5)  # mass preserved
    assert x[0, 0, 0, 0].item() == 0.0  # beyond 3 sigma


def test_clip_small_norm_zeroes_low_norm_pixels() -> None:
    x = torch.zeros(1, 3, 2, 2)
    x[0, :, 0, 0] = torch.tensor([0.1, 0.0, 0.0])  # norm 0.1
    x[0, :, 0, 1] = torch.tensor([0.0, 0.3, 0.4])  # norm 0.5
    x[0, :, 1, 0] = torch.tensor([0.0, 0.0, -0.2])  # norm 0.2
    x[0, :, 1, 1] = torch.tensor([1.0, 0.0, 0.0])  # norm 1.0
    R.clip_small_norm_(x, 50)
    assert x[0, :, 0, 0].tolist() == [0, 0, 0] and x[0, :, 1, 0].tolist() == [0, 0, 0]
    assert x[0, :, 0, 1].tolist() == pytest.approx([0.0, 0.3, 0.4]) and x[0, 0, 1, 1].item() == 1.0


def test_clip_small_contribution_uses_abs_sum_of_x_times_grad() -> None:
    x = torch.ones(1, 3, 1, 4) * 0.5
    grad = torch.zeros(1, 3, 1, 4)
    grad[0, :, 0, 0] = torch.tensor([1.0, -1.0, 0.0])  # contribution |0.5 - 0.5| = 0
    grad[0, :, 0, 1] = torch.tensor([-2.0, 0.0, 0.0])  # |-1| = 1
    grad[0, :, 0, 2] = torch.tensor([0.2, 0.2, 0.2])  # 0.3
    grad[0, :, 0, 3] = torch.tensor([4.0, 0.0, 0.0])  # 2
    R.clip_small_contribution_(x, grad, 50)
    assert x[0, 0, 0].tolist() == [0.0, 0.5, 0.0, 0.5]


def test_decay_and_penalties() -> None:
    x = torch.full((1, 3, 2, 2), 0.5)
    R.decay_(x, 0.3)
    assert torch.allclose(x, torch.full_like(x, 0.35))
    img = torch.zeros(1, 1, 2, 2)
    img[0, 0, 0, 0] = 1.0
    assert R.total_variation(img).item() == pytest.approx(0.5 + 0.5)  # one jump of 1 in each of 2 diffs
    assert R.l2_penalty(img).item() == pytest.approx(0.25)


def test_yosinski_preset_applies_clipping(net: nn.Module) -> None:
    """yosinski1 clips the 50% lowest-norm pixels after each step: half the image is exactly the mean."""
    mean = (0.5, 0.5, 0.5)
    res = optimize(net, O.channel("conv1", 0), preset="yosinski1", steps=1, size=16, mean=mean, std=(1, 1, 1),
                   init_std=0.1)  # a noisy start, so pixel norms have no ties
    grey = (res.image == 128).all(axis=2)
    assert 0.45 <= grey.mean() <= 0.55


# ---- engine behaviour ----------------------------------------------------------------------------------


def test_seeded_runs_are_reproducible(net: nn.Module) -> None:
    a = optimize(net, O.channel("conv2", 1), seed=3, **FAST)
    b = optimize(net, O.channel("conv2", 1), seed=3, **FAST)
    c = optimize(net, O.channel("conv2", 1), seed=4, **FAST)
    assert np.array_equal(a.image, b.image) and a.history == b.history
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("preset", ["default", "yosinski3", "simonyan2013"])
def test_optimization_increases_channel_activation(net: nn.Module, preset: str) -> None:
    objective = O.channel("conv2", 2)
    start = optimize(net, objective, preset=preset, steps=0, size=32, seed=1)
    end = optimize(net, objective, preset=preset, steps=20, size=32, seed=1)
    assert end.value > start.value + 0.01  # random tiny net: small activations, hence the small margin
    assert np.mean(end.history[-5:]) > np.mean(end.history[:5])


def test_negative_objective_decreases(net: nn.Module) -> None:
    start = optimize(net, O.channel("conv2", 2), steps=0, size=32, seed=1)
    hated = optimize(net, -O.channel("conv2", 2), steps=20, size=32, seed=1)
    assert -hated.value < start.value


def test_batch_with_diversity_returns_distinct_images(net: nn.Module) -> None:
    res = optimize(net, O.channel("conv2", 0), batch=3, diversity=1.0, **FAST)
    assert res.images.shape == (3, 32, 32, 3)
    assert res.value == max(res.values) and len(res.values) == 3
    assert not np.array_equal(res.images[0], res.images[1])


def test_progress_steps_and_early_stop(net: nn.Module) -> None:
    calls = []
    net.fc.register_forward_hook(lambda *a: calls.append(1))
    steps = [p.step for p in iter_optimize(net, O.channel("conv1", 0), **FAST)]
    assert steps == [1, 2, 3, 4, 5]
    # a layer objective never runs the whole net in a step: only the probe's two measuring forwards of a plain
    # module do (how often each module runs, and the layers' layouts), once per net
    assert len(calls) == 2
    calls.clear()
    assert len(list(iter_optimize(net, O.channel("conv1", 0), seed=1, **FAST))) == 5
    assert calls == []


def test_cache_hit_returns_same_image_without_running(net: nn.Module, tmp_path) -> None:
    first = optimize(net, O.channel("conv2", 1), cache_id="tiny", **FAST)
    assert not first.cached
    calls = []
    net.register_forward_pre_hook(lambda *a: calls.append(1))
    progress = list(iter_optimize(net, O.channel("conv2", 1), cache_id="tiny", **FAST))
    assert len(progress) == 1 and progress[0].done and calls == []
    again = progress[0].result
    assert again.cached and np.array_equal(again.image, first.image) and again.value == first.value
    other = optimize(net, O.channel("conv2", 1), cache_id="tiny", seed=9, **FAST)  # other settings: a miss
    assert not other.cached and calls


def test_cached_result_is_none_before_and_the_image_after(net: nn.Module) -> None:
    calls = []
    net.register_forward_pre_hook(lambda *a: calls.append(1))
    assert cached_result(net, O.channel("conv2", 0), cache_id="tiny", **FAST) is None
    assert cached_result(net, O.channel("conv2", 0), **FAST) is None  # plain module without a cache id
    assert calls == []  # a lookup never runs the net
    res = optimize(net, O.channel("conv2", 0), cache_id="tiny", **FAST)
    calls.clear()
    img = cached_result(net, O.channel("conv2", 0), cache_id="tiny", **FAST)
    assert img is not None and img.dtype == np.uint8 and np.array_equal(img, res.image)
    full = cached(net, O.channel("conv2", 0), cache_id="tiny", **FAST)
    assert full is not None and full.cached and full.value == res.value
    assert calls == []
    # any setting that changes the key is a miss: steps, seed, unit, model id
    assert cached_result(net, O.channel("conv2", 0), cache_id="tiny", steps=6, size=32) is None
    assert cached_result(net, O.channel("conv2", 0), cache_id="tiny", seed=1, **FAST) is None
    assert cached_result(net, O.channel("conv2", 1), cache_id="tiny", **FAST) is None
    assert cached_result(net, O.channel("conv2", 0), cache_id="other", **FAST) is None


def test_cancelled_run_writes_no_file(net: nn.Module, tmp_path) -> None:
    stop = threading.Event()
    seen = []
    for p in iter_optimize(net, O.channel("conv2", 1), cache_id="tiny", abort=stop, steps=10, size=32):
        seen.append(p.step)
        if p.step == 2:
            stop.set()
    assert seen == [1, 2]
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*"))
    with pytest.raises(Cancelled):
        optimize(net, O.channel("conv2", 1), cache_id="tiny", abort=lambda: True, **FAST)
    assert not cache.exists() or not any(cache.rglob("*"))


# ---- CLI -------------------------------------------------------------------------------------------------


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from deepvis_app.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_unknown_class_suggests_names(capsys, tmp_path) -> None:
    code, _, err = _cli(["optimize", "--class", "gose", "--out", str(tmp_path / "x.png")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "goose" in err


def test_cli_unit_out_of_range_lists_range(capsys, tmp_path) -> None:
    code, _, err = _cli(["optimize", "--layer", "_blocks.3", "--unit", "99", "--out", str(tmp_path / "x.png")],
                        capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "0..39" in err


def test_cli_class_json_and_layer_sprite(capsys, tmp_path) -> None:
    import json

    out = tmp_path / "g.png"
    code, stdout, _ = _cli(["optimize", "--class", "goose", "--steps", "2", "--size", "32", "--out", str(out),
                            "--json"], capsys)
    report = json.loads(stdout)
    assert code == 0 and out.is_file() and report["class"] == "goose" and 0 <= report["probability"] <= 1
    d = tmp_path / "layer"
    args = ["optimize-layer", "--layer", "_conv_stem", "--units", "0-2", "--steps", "2", "--size", "32",
            "--out", str(d)]
    code, _, err = _cli(args, capsys)
    assert code == 0 and (d / "sprite.png").is_file() and len(list(d.glob("unit_*.png"))) == 3
    stamp = (d / "unit_0001.png").stat().st_mtime_ns
    _cli(args, capsys)  # resumable: existing units are skipped
    assert (d / "unit_0001.png").stat().st_mtime_ns == stamp


# ---- optimize-layer: resume trusts only verified units ----------------------------------------------------


def _layer_args(d, *more: str) -> list[str]:
    return ["optimize-layer", "--layer", "_conv_stem", "--units", "0-2", "--steps", "2", "--size", "32",
            "--out", str(d), "--device", "cpu", *more]


def test_layer_resume_redoes_empty_truncated_foreign_and_other_settings(capsys, tmp_path) -> None:
    from deepvis_app.optimize.cache import read_png

    d = tmp_path / "layer"
    assert _cli(_layer_args(d), capsys)[0] == 0
    clean = {u: (d / f"unit_{u:04d}.png").read_bytes() for u in range(3)}
    # damage: unit 0 emptied, unit 1 truncated, unit 2 replaced by a valid PNG its record does not name
    (d / "unit_0000.png").write_bytes(b"")
    (d / "unit_0001.png").write_bytes(clean[1][: len(clean[1]) // 2])
    (d / "unit_0002.png").write_bytes(clean[0])
    code, out, _ = _cli(_layer_args(d), capsys)
    assert code == 0 and "not done" not in out
    assert {u: (d / f"unit_{u:04d}.png").read_bytes() for u in range(3)} == clean  # redone, same seed
    # another --size: every unit is redone at the new size, none of the old images is reused
    code, out, _ = _cli(_layer_args(d, "--size", "40"), capsys)
    assert code == 0 and all(read_png(d / f"unit_{u:04d}.png").shape == (40, 40, 3) for u in range(3))
    sprite = read_png(d / "sprite.png")
    assert sprite.shape == (2 + 2 * 42, 2 + 2 * 42, 3) and "not done" not in out


def test_layer_sigkill_then_resume_equals_clean_run(capsys, tmp_path) -> None:
    """A real `kill -9` in the middle of optimize-layer; the resumed folder equals an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["optimize-layer", "--layer", "_conv_stem", "--units", "0-7", "--steps", "12", "--size", "32",
            "--no-cache", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPVIS_OFFLINE": "1"}
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "deepvis_app", *args, "--out", str(killed)], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (killed / ".units").is_dir() and len(list((killed / ".units").glob("unit_*.json"))) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "optimize-layer finished before it could be killed: " + proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stderr.close()
    done_before = len(list((killed / ".units").glob("unit_*.json")))
    (killed / ".unit_0007.png.abc123.tmp").write_bytes(b"half a png")  # as a kill during a write leaves it
    assert 2 <= done_before < 8 and not (killed / "sprite.png").exists()

    torch.set_num_threads(1)
    assert _cli([*args, "--out", str(killed)], capsys)[0] == 0
    assert _cli([*args, "--out", str(clean)], capsys)[0] == 0
    for u in range(8):
        a = (killed / f"unit_{u:04d}.png").read_bytes()
        b = (clean / f"unit_{u:04d}.png").read_bytes()
        assert a == b, f"unit {u} differs after resume"
    assert (killed / "sprite.png").read_bytes() == (clean / "sprite.png").read_bytes()
    assert not [p for p in killed.rglob("*.tmp")], "a temp file of the killed run is left in the folder"
