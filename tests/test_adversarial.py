"""Adversarial examples: hand-computed steps on a tiny linear net, the lecture's 10-d logistic regression, the
L-inf ball and 8-bit quantization, a real photo turned into an ostrich that stays one after the PNG round trip,
and the `deepvis fool` command."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deepvis_app import adversarial as adv
from deepvis_app.cli import main
from deepvis_app.errors import DeepVisError
from deepvis_app.fileio import atomic_write_png
from deepvis_app.optimize.engine import Cancelled
from deepvis_app.sources import read_image

OSTRICH = 9
# A 4x4 RGB image flattened: 48 inputs. Class 1's weights are a fixed +-1 pattern with as many + as -, so on a
# flat grey image its logit is exactly 0; class 0 has no weights, only a bias.
PATTERN = np.where(np.arange(48) % 3 == 0, 1.0, -1.0) * np.where(np.arange(48) % 2 == 0, 1.0, -1.0)
ZERO = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), device="cpu")  # the net sees img / 255


def linear_net(bias0: float) -> nn.Module:
    """Logits (bias0, PATTERN . x) for x = image / 255 flattened in C, H, W order."""
    lin = nn.Linear(48, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = torch.tensor(PATTERN, dtype=torch.float32)
        lin.bias.copy_(torch.tensor([bias0, 0.0]))
    return nn.Sequential(nn.Flatten(), lin).eval()


def pattern_hwc() -> np.ndarray:
    return PATTERN.reshape(3, 4, 4).transpose(1, 2, 0)  # the weights laid out like the image (H, W, C)


GREY = np.full((4, 4, 3), 128, np.uint8)


def test_pattern_is_balanced():
    assert PATTERN.sum() == 0 and set(PATTERN) == {-1.0, 1.0}


def test_fgsm_step_is_eps_times_sign_of_gradient():
    # Untargeted CE on class 0: d loss / dx = p1 * (w1 - w0) = p1 * PATTERN, so FGSM adds eps * sign(PATTERN).
    net = linear_net(1.0)
    state = adv.fgsm(net, GREY, eps=3, **ZERO)
    assert state.orig_top1 == 0 and state.step == 1 and state.done
    np.testing.assert_array_equal(state.delta, 3 * pattern_hwc())
    np.testing.assert_array_equal(state.image, 128 + 3 * pattern_hwc())
    # The class-1 logit moved by eps * |w|_1 / 255 = 3 * 48 / 255 = 0.565 < the bias 1: not yet fooled.
    logit1 = np.log(state.probs[1] / state.probs[0]) + 1.0
    assert logit1 == pytest.approx(3 * 48 / 255, abs=1e-4) and not state.success


def test_tiny_changes_add_up_to_a_flip():
    # 48 inputs, each moved by eps levels: 5 * 48 / 255 = 0.94 < 1 keeps class 0, 6 * 48 / 255 = 1.13 flips it.
    net = linear_net(1.0)
    assert not adv.fgsm(net, GREY, eps=5, **ZERO).success
    flipped = adv.fgsm(net, GREY, eps=6, **ZERO)
    assert flipped.success and flipped.top1 == 1 and flipped.linf == 6
    targeted = adv.fgsm(net, GREY, eps=6, target=1, **ZERO)  # towards class 1: the same direction here
    np.testing.assert_array_equal(targeted.delta, flipped.delta)


def test_pgd_quantizes_inside_the_loop_and_stays_in_the_ball():
    # Steps of 0.25 levels accumulate in float; the image is the rounded sum (half to even), capped at eps = 2.
    net = linear_net(3.0)  # needs eps > 16 to flip: the attack runs all its steps
    states = list(adv.iter_attack(net, GREY, None, eps=2, step=0.25, steps=10, **ZERO))
    assert [s.step for s in states] == list(range(11)) and states[-1].done and not states[-1].success
    expected = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]  # round(0.25 k) capped at 2
    for s, e in zip(states, expected, strict=True):
        np.testing.assert_array_equal(s.delta, e * pattern_hwc())
        assert s.image.dtype == np.uint8
        np.testing.assert_array_equal(s.image.astype(np.int16), 128 + s.delta)


def test_ball_respects_0_255_and_fractional_eps():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img[0, 0] = 0
    img[3, 3] = 255
    net = linear_net(40.0)  # class 0 whatever the image (|PATTERN . x| <= 24)
    last = adv.pgd_targeted(net, img, 1, eps=2.9, step=1.0, steps=6, **ZERO)
    assert last.linf == 2  # an 8-bit image changes by whole levels: floor(2.9)
    assert (last.image.astype(np.int16) == img.astype(np.int16) + last.delta).all()
    np.testing.assert_array_equal(last.delta, np.clip(2 * pattern_hwc(), -img.astype(np.int16),
                                                      255 - img.astype(np.int16)))


def test_resume_from_a_previous_delta_and_abort():
    net = linear_net(3.0)
    first = adv.pgd_targeted(net, GREY, 1, eps=4, step=1.0, steps=3, **ZERO)
    np.testing.assert_array_equal(first.delta, 3 * pattern_hwc())
    # next "frame": resume where the last one ended, clipped into this call's smaller ball
    resumed = next(adv.iter_attack(net, GREY, 1, eps=2, step=1.0, steps=3, delta=first.delta, **ZERO))
    assert resumed.step == 0 and resumed.orig_top1 == 0
    np.testing.assert_array_equal(resumed.delta, 2 * pattern_hwc())
    stop = threading.Event()
    seen = []
    gen = adv.iter_attack(net, GREY, 1, eps=4, steps=50, abort=stop, **ZERO)
    for s in gen:
        seen.append(s.step)
        if s.step == 2:
            stop.set()
    assert seen == [0, 1, 2]
    with pytest.raises(Cancelled):
        adv.run_attack(net, GREY, 1, eps=4, steps=50, abort=lambda: True, **ZERO)


def test_runs_under_a_callers_inference_mode():
    # the live worker runs its forward passes under inference_mode; the attack needs autograd all the same
    net, net1 = linear_net(1.0), linear_net(-1.0)  # top-1: class 0, class 1
    with torch.inference_mode():
        state = adv.fgsm(net, GREY, eps=3, **ZERO)
        rows = adv.effect_vs_pixels(net1, GREY, eps=1, fractions=(1.0,), **ZERO)
    np.testing.assert_array_equal(state.delta, 3 * pattern_hwc())
    # the top-1 logit PATTERN . x / 255 drops by eps * |PATTERN|_1 / 255 when every value moves one level
    assert rows[0]["class"] == 1 and rows[0]["logit_drop"] == pytest.approx(48 / 255, abs=1e-5)
    assert rows[0]["predicted_drop"] == pytest.approx(48 / 255, abs=1e-5)


def test_lecture_logistic_regression():
    demo = adv.linear_demo()  # x, w of the lecture; eps 0.5 per coordinate along sign(w)
    assert demo["score"] == -3 and demo["score_adv"] == 2 and demo["score_change"] == 0.5 * 10
    assert demo["prob"] == pytest.approx(0.0474, abs=1e-4) and demo["prob_adv"] == pytest.approx(0.8808, abs=1e-4)
    assert (demo["class"], demo["class_adv"]) == (0, 1)
    assert demo["x_adv"] == [1.5, -1.5, 3.5, -2.5, 2.5, 1.5, 1.5, -3.5, 4.5, 1.5]
    rows = adv.linear_growth()
    ratios = [r["ratio"] for r in rows]
    assert ratios == sorted(ratios) and ratios[0] < 0.01 and ratios[-1] > 1  # change/score grows like sqrt(n)
    for r in rows:  # E|w| = sqrt(2/pi): the change is about 0.8 * eps * n
        assert r["score_change"] == pytest.approx(r["eps"] * r["dim"] * np.sqrt(2 / np.pi), rel=0.3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=0.5), "eps must be between 1 and 255"),
    (dict(method="cw"), "method 'cw' is not an attack"),
    (dict(step=0), "step must be above 0 and at most 255 pixel levels"),
    (dict(steps=-1), "steps must be >= 0"),
])
def test_bad_arguments_one_line(kwargs, message):
    with pytest.raises(DeepVisError, match=message):
        next(adv.iter_attack(linear_net(1.0), GREY, 1, **{**ZERO, **kwargs}))
    with pytest.raises(DeepVisError, match="expected an RGB uint8 image"):
        next(adv.iter_attack(linear_net(1.0), GREY.astype(np.float32), 1, **ZERO))


def test_real_photo_becomes_an_ostrich_after_png_round_trip(lite0, photos, tmp_path):
    state = adv.pgd_targeted(lite0, photos["chelsea"], OSTRICH, eps=2, steps=20)
    assert state.success and state.top1 == OSTRICH and state.linf <= 2
    assert lite0.categories[state.orig_top1] in {"Egyptian cat", "tabby", "tiger cat"}
    atomic_write_png(tmp_path / "adv.png", state.image)
    saved = read_image(tmp_path / "adv.png")
    np.testing.assert_array_equal(saved, state.image)
    with torch.no_grad():
        probs = torch.softmax(lite0.net(lite0.preprocess(saved)), 1)[0]
    assert int(probs.argmax()) == OSTRICH and float(probs[OSTRICH]) == pytest.approx(state.target_prob, abs=1e-4)
    fitted = lite0.preprocess.fit(photos["chelsea"])
    np.testing.assert_array_equal(saved.astype(np.int16) - fitted, state.delta)


def test_effect_grows_with_pixels_changed(lite0, photos):
    rows = adv.effect_vs_pixels(lite0, photos["chelsea"], eps=1, fractions=(0.001, 0.01, 0.1, 1.0))
    drops = [r["logit_drop"] for r in rows]
    assert drops == sorted(drops) and drops[-1] > 50 * drops[0] > 0
    assert rows[0]["logit_drop"] == pytest.approx(rows[0]["predicted_drop"], rel=0.1)  # linear for few pixels
    assert rows[-1]["prob"] < rows[0]["prob"]


def test_fooling_image_from_shapes(lite0):
    state = adv.fooling_image(lite0, OSTRICH, start="shapes", confidence=0.9, steps=100)
    assert state.success and state.top1 == OSTRICH and state.target_prob >= 0.9 and state.linf <= 32
    start = adv.start_image("shapes", lite0.input_size)
    np.testing.assert_array_equal(state.image.astype(np.int16) - start, state.delta)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_fool_json(capsys, chelsea_png, tmp_path, lite0):
    out, diff = tmp_path / "adv.png", tmp_path / "diff.png"
    code, text, _ = run_cli(capsys, "fool", chelsea_png, "--target", "ostrich", "--out", str(out), "--diff",
                            str(diff), "--json", "--quiet", "--device", "cpu")
    report = json.loads(text)
    assert code == 0
    assert report["original_class"] in {"Egyptian cat", "tabby", "tiger cat"} and 0 < report["original_prob"] < 1
    assert report["target_index"] == OSTRICH and report["target_class"] == "ostrich" and report["success"]
    assert report["adversarial_index"] == OSTRICH and 1 <= report["steps_used"] <= report["steps"] == 20
    assert report["eps"] == 2 and report["linf"] <= 2 and report["l2"] > 0
    saved = read_image(out)  # the report's figures are those of the file
    with torch.no_grad():
        probs = torch.softmax(lite0.net(lite0.preprocess(saved)), 1)[0]
    assert float(probs[OSTRICH]) == pytest.approx(report["target_prob"], abs=1e-5)
    delta = saved.astype(np.int16) - lite0.preprocess.fit(read_image(chelsea_png))
    assert np.abs(delta).max() == report["linf"]
    assert report["l2"] == pytest.approx(float(np.sqrt((delta.astype(float) ** 2).sum())))
    np.testing.assert_array_equal(read_image(diff), np.clip(128 + 20 * delta, 0, 255))


def test_cli_fgsm_untargeted_and_fooling(capsys, chelsea_png, tmp_path):
    code, text, _ = run_cli(capsys, "fool", chelsea_png, "--method", "fgsm", "--eps", "4", "--out",
                            str(tmp_path / "f.png"), "--json", "--quiet", "--device", "cpu")
    report = json.loads(text)
    assert code == 0 and report["target_index"] is None and report["target_prob"] is None
    assert report["steps_used"] == 1 and report["linf"] == 4
    assert report["success"] == (report["adversarial_index"] != report["original_index"])
    code, text, _ = run_cli(capsys, "fool", "--from", "noise", "--target", "9", "--confidence", "0.9", "--out",
                            str(tmp_path / "n.png"), "--json", "--quiet", "--device", "cpu")
    report = json.loads(text)
    assert code == 0 and report["from"] == "noise" and report["success"] and report["target_prob"] >= 0.9


@pytest.mark.parametrize("argv, message", [
    (["fool", "--target", "ostrich"], "give an IMAGE to attack or --from noise|shapes"),
    (["fool", "IMG", "--from", "noise", "--target", "9"], "not both"),
    (["fool", "IMG"], "--target NAME|INDEX is required"),
    (["fool", "--from", "noise"], "--target NAME|INDEX is required"),
    (["fool", "--from", "noise", "--target", "9", "--method", "fgsm"], "drop --method fgsm"),
    (["fool", "IMG", "--target", "ostrich", "--eps", "0.5"],
     "argument --eps: must be a number at least 1 and at most 255, got 0.5"),
    (["fool", "IMG", "--target", "ostrichh"], "unknown class 'ostrichh'; did you mean: ostrich"),
    (["fool", "IMG", "--target", "1000"], "class index 1000 is out of range"),
    (["fool", "/no/such.jpg", "--target", "9"], "image not found: /no/such.jpg"),
    (["fool", "IMG", "--target", "9", "--steps", "-1"], "argument --steps: must be between 0 and 100000, got -1"),
    (["fool", "IMG", "--target", "9", "--out", "OUTDIR/x.jpg"], "--out must end in .png"),
    (["fool", "IMG", "--target", "9", "--out", "/no/dir/x.png"], "--out: folder does not exist: /no/dir"),
])
def test_cli_bad_input_one_line(capsys, chelsea_png, tmp_path, argv, message):
    out = tmp_path / "out.png"
    argv = [a.replace("IMG", chelsea_png).replace("OUTDIR", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    code, text, err = run_cli(capsys, *argv, "--quiet", "--device", "cpu")
    assert code == 2 and text == "" and message in err
    assert err.startswith("deepvis: error: ") and err.count("\n") == 1
    assert not out.exists() and sorted(p.name for p in Path(tmp_path).iterdir()) == ["chelsea.png"]
