"""Capped rectifiers (ReLU6, Hardtanh(0, m)): a unit's image maximizes its value before the clip by default.

A unit at its cap has a gradient of exactly 0, so the clipped value stalls there and the image stays grey. These
tests use a tiny conv -> BN -> inplace ReLU6 net whose unit 1 is saturated from the grey start (pre-clip 7.25),
the values checked by hand against the conv/BN output feeding the ReLU6; the CLI tests use the default model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepvis_app.errors import ParamError
from deepvis_app.optimize import cached, optimize
from deepvis_app.optimize import objectives as O
from deepvis_app.rectifiers import Clip, clip_of, rectifier_cap

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_cache")

MEAN, STD = (0.4, 0.4, 0.4), (0.25, 0.25, 0.25)  # 0.4 * 255 = 102: the grey image is exactly the mean
GREY = [round(m * 255) for m in MEAN]
PIXEL = {"preset": "pixel", "mean": MEAN, "std": STD}


class CappedNet(nn.Module):
    """conv1 -> bn1 -> act (inplace ReLU6) -> conv2 -> bn2 -> act again (EfficientNet reuses its ReLU6: `act@0`,
    `act@1`) -> pool -> fc. Unit 1 of act@0 is at 7.25 before the clip on the grey image (normalized input 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.act = nn.ReLU6(inplace=True)
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture
def capped() -> nn.Module:
    torch.manual_seed(0)
    net = CappedNet().eval()
    with torch.no_grad():
        net.conv1.bias.copy_(torch.tensor([0.5, 10.0, -1.0]))
        net.bn1.running_mean.fill_(1.0)
        net.bn1.running_var.fill_(4.0)
        net.bn1.weight.fill_(1.5)
        net.bn1.bias.fill_(0.5)
        net.bn1.eps = 0.0  # so the grey value is exactly (10 - 1) / 2 * 1.5 + 0.5 = 7.25
    return net


def _bn(bn: nn.BatchNorm2d, t: torch.Tensor) -> torch.Tensor:
    """Eval BatchNorm written out."""
    shape = (1, -1, 1, 1)
    return ((t - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def _normalized(image: np.ndarray) -> torch.Tensor:
    px = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    return (px - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_rectifier_caps_of_a_net(capped: nn.Module) -> None:
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.Hardtanh(0.0, 2.0), nn.Hardtanh(-1.0, 1.0), nn.ReLU6())
    assert [rectifier_cap(net, n) for n in ("0", "1", "2", "3", "4", "", "nope")] == [None, None, 2.0, None, 6.0,
                                                                                      None, None]
    assert clip_of(capped, "act@1") == Clip("ReLU6", 6.0) and str(clip_of(net, "2")) == "Hardtanh cap 2"


def test_pre_clip_value_is_the_bn_output_feeding_the_relu6(capped: nn.Module) -> None:
    """The value read is the conv/BN output at the unit, before the (inplace) ReLU6 clips it: 7.25 on grey."""
    res = optimize(capped, O.channel("act@0", 1), steps=0, size=8, **PIXEL)
    assert (res.image.reshape(-1, 3) == GREY).all()
    assert res.value == pytest.approx(7.25, abs=1e-5) and res.clipped_value == pytest.approx(6.0)
    assert res.pre_clip and res.objective == "channel(act@0,1,pre-clip)"
    assert res.value_of == "pre-clip value of act@0 channel 1 (mean over positions) (ReLU6 cap 6)"

    # a random image, one unit off-centre, both calls of the reused ReLU6: the values by hand
    res0 = optimize(capped, O.neuron("act@0", 1, 2, 5), steps=0, size=8, init_std=0.3, **PIXEL)
    x = _normalized(res0.image)
    assert x.std() > 0.5  # not grey: the check below is not the bias alone
    with torch.no_grad():
        pre0 = _bn(capped.bn1, F.conv2d(x, capped.conv1.weight, capped.conv1.bias, padding=1))
        pre1 = _bn(capped.bn2, F.conv2d(pre0.clamp(0, 6), capped.conv2.weight, capped.conv2.bias, padding=1))
    assert res0.value == pytest.approx(pre0[0, 1, 2, 5].item(), abs=1e-4) and res0.value > 6
    assert res0.clipped_value == pytest.approx(6.0)
    res1 = optimize(capped, O.neuron("act@1", 0, 3, 1), steps=0, size=8, init_std=0.3, **PIXEL)
    assert np.array_equal(res1.image, res0.image)  # same seed, same start
    # below zero the objective leaks 1% (a silent unit still gets a gradient): here the input is -0.2017
    assert pre1[0, 0, 3, 1].item() < 0
    assert res1.value == pytest.approx(0.01 * pre1[0, 0, 3, 1].item(), abs=1e-6)
    assert res1.clipped_value == pytest.approx(pre1[0, 0, 3, 1].clamp(0, 6).item(), abs=1e-4)
    # the whole net runs when the objective also reads the logits: call 0 is still call 0
    full = optimize(capped, O.neuron("act@0", 1, 2, 5) + 0 * O.class_logit(0), steps=0, size=8, init_std=0.3,
                    **PIXEL)
    assert full.value == pytest.approx(res0.value, abs=1e-5)
    # a bare name is the module's last call, as everywhere
    bare = optimize(capped, O.neuron("act", 0, 3, 1), steps=0, size=8, init_std=0.3, **PIXEL)
    assert bare.value == pytest.approx(res1.value, abs=1e-6) and bare.objective == "neuron(act,0,3,1,pre-clip)"


def test_saturated_unit_rises_past_the_cap_and_leaves_grey(capped: nn.Module) -> None:
    """From the grey start unit 1 sits at the cap: clipped, its gradient is 0 and nothing moves (the grey wash);
    before the clip it rises well past 6 and the image changes."""
    run = {"steps": 12, "size": 16, "lr": 0.05, **PIXEL}
    pre = optimize(capped, O.channel("act@0", 1), **run)
    flat = optimize(capped, O.channel("act@0", 1, pre_clip=False), **run)

    assert flat.objective == "channel(act@0,1)" and not flat.pre_clip and flat.clipped_value is None
    assert flat.value_of == "channel(act@0,1)"
    assert max(flat.history) <= 6.0 and flat.value == pytest.approx(6.0)
    assert (flat.image.reshape(-1, 3) == GREY).all()  # stalled at the start: a flat grey image

    assert pre.history[0] == pytest.approx(7.25, abs=1e-4)
    assert pre.history[-1] > 8.5 and pre.value > 8.5  # well past the cap (the pixels clamp to 0..1 near 9)
    assert all(b > a for a, b in zip(pre.history, pre.history[1:], strict=False))  # every step gains
    assert pre.clipped_value == pytest.approx(6.0)  # the clipped value was already at the cap
    moved = np.abs(pre.image.astype(int) - GREY).max(axis=2)
    assert (moved >= 10).mean() > 0.9  # nearly every pixel left grey, not a wash


def test_opt_out_keys_and_errors(capped: nn.Module) -> None:
    """Auto is pre-clip only where the net clips; the key says which, so the cache keeps them apart."""
    assert O.channel("act@0", 1).bind(capped).key == "channel(act@0,1,pre-clip)"
    assert O.channel("act@0", 1, pre_clip=False).bind(capped).key == "channel(act@0,1)"
    assert O.channel("conv1", 1).bind(capped).key == "channel(conv1,1)"  # no clip: as before
    with pytest.raises(ParamError) as err:
        O.channel("conv1", 1, pre_clip=True).bind(capped)
    assert err.value.param == "pre_clip" and "clips nothing" in str(err.value)

    # composed objectives bind their parts and report the clipped twin: minus the unit on grey
    neg = optimize(capped, -O.channel("act@0", 1), steps=0, size=8, **PIXEL)
    assert neg.objective == "-channel(act@0,1,pre-clip)"
    assert neg.value == pytest.approx(-7.25, abs=1e-5) and neg.clipped_value == pytest.approx(-6.0)
    mix = (2 * O.channel("act@0", 1) + O.channel("conv1", 0)).bind(capped)
    assert mix.key == "(2*channel(act@0,1,pre-clip) + channel(conv1,0))" and mix.inputs == ("act@0",)
    assert mix.clipped is not None and mix.clipped.key == "(2*channel(act@0,1) + channel(conv1,0))"


def test_cache_keeps_pre_clip_and_clipped_apart(capped: nn.Module) -> None:
    run = {"steps": 3, "size": 16, "lr": 0.05, "cache_id": "capped", **PIXEL}
    pre = optimize(capped, O.channel("act@0", 1), **run)
    flat = optimize(capped, O.channel("act@0", 1, pre_clip=False), **run)
    hit_pre = cached(capped, O.channel("act@0", 1), **run)
    hit_flat = cached(capped, O.channel("act@0", 1, pre_clip=False), **run)
    assert hit_pre is not None and hit_flat is not None and hit_pre.cached and hit_flat.cached
    assert np.array_equal(hit_pre.image, pre.image) and np.array_equal(hit_flat.image, flat.image)
    assert not np.array_equal(hit_pre.image, hit_flat.image)
    assert hit_pre.value == pytest.approx(pre.value) and hit_pre.clipped_value == pytest.approx(pre.clipped_value)
    assert hit_pre.value_of == pre.value_of and hit_flat.clipped_value is None


def test_channels_last_hardtanh_unit_reads_its_input_through_the_layout() -> None:
    """Hardtanh(0, 0.5) on a channels-last map: unit 5 at (2, 3) is the Linear's output there, read through the
    layer's layout (`as_maps`), not through the raw N x H x W x C shape."""
    from layout_nets import channels_last

    cl = channels_last()
    cl.act = nn.Hardtanh(0.0, 0.5)
    res = optimize(cl, O.neuron("act", 5, 2, 3), steps=0, size=32, init_std=0.3, **PIXEL)
    with torch.no_grad():
        want = cl.lin(cl.perm(cl.conv(_normalized(res.image))))[0, 2, 3, 5].item()
    assert res.value == pytest.approx(want, abs=1e-4)
    assert res.clipped_value == pytest.approx(min(max(want, 0.0), 0.5), abs=1e-4)
    assert res.value_of == "pre-clip value of act unit 5 at y=2, x=3 (Hardtanh cap 0.5)"


def test_forward_leaves_no_hooks(capped: nn.Module) -> None:
    from helpers import hooks_left

    optimize(capped, O.channel("act@1", 0), steps=2, size=8, **PIXEL)
    assert hooks_left(capped) == []


# ---- CLI (the default model: EfficientNet-Lite0, whose `_swish` modules are ReLU6) -----------------------------


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from deepvis_app.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_states_the_pre_clip_value(capsys, tmp_path) -> None:
    out = tmp_path / "u.png"
    base = ["optimize", "--layer", "_swish@1", "--unit", "5", "--steps", "2", "--size", "32", "--device", "cpu",
            "--quiet"]
    code, stdout, err = _cli([*base, "--out", str(out), "--json"], capsys)
    report = json.loads(stdout)
    assert code == 0 and out.is_file()
    assert report["pre_clip"] is True and report["objective"] == "channel(_swish@1,5,pre-clip)"
    assert report["value_of"] == "pre-clip value of _swish@1 channel 5 (mean over positions) (ReLU6 cap 6)"
    assert 0.0 <= report["clipped_value"] <= 6.0
    notes = err.strip().splitlines()
    assert notes == ["deepvis: optimizing the pre-clip value of _swish@1 channel 5 (ReLU6 cap 6): the clipped value "
                     "stops at 6 with a zero gradient (--clipped to optimize it anyway)"]

    code, stdout, _ = _cli([*base, "--out", str(tmp_path / "t.png")], capsys)
    assert code == 0 and stdout.startswith(f"wrote {tmp_path / 't.png'} (pre-clip value of _swish@1 channel 5")
    assert "(ReLU6 cap 6) = " in stdout and "; after the clip " in stdout

    code, stdout, err = _cli([*base, "--out", str(tmp_path / "c.png"), "--json", "--clipped"], capsys)
    report = json.loads(stdout)
    assert code == 0 and report["pre_clip"] is False and report["objective"] == "channel(_swish@1,5)"
    assert "clipped_value" not in report and err.strip() == ""


@pytest.mark.parametrize("argv, message", [
    (["--layer", "_blocks.3", "--unit", "5", "--clipped"], "--clipped: layer '_blocks.3' clips nothing"),
    (["--class", "1", "--clipped"], "--clipped goes with --layer"),
])
def test_cli_clipped_mistakes_are_one_line(capsys, tmp_path, argv, message) -> None:
    out = tmp_path / "x.png"
    code, _, err = _cli(["optimize", *argv, "--steps", "1", "--size", "32", "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err and not out.exists()


def test_cli_layer_records_pre_clip_and_redoes_clipped_units(capsys, tmp_path) -> None:
    d = tmp_path / "layer"
    args = ["optimize-layer", "--layer", "_swish@0", "--units", "0-1", "--steps", "1", "--size", "32",
            "--device", "cpu", "--out", str(d)]
    code, _, err = _cli(args, capsys)
    record = json.loads((d / ".units" / "unit_0000.json").read_text())
    assert code == 0 and record["settings"]["pre_clip"] is True
    assert "deepvis: optimizing the pre-clip value of each unit of _swish@0 (ReLU6 cap 6)" in err
    stamp = (d / "unit_0000.png").stat().st_mtime_ns
    code, _, err = _cli([*args, "--clipped"], capsys)  # another objective: every unit is redone
    record = json.loads((d / ".units" / "unit_0000.json").read_text())
    assert code == 0 and "pre_clip" not in record["settings"] and "pre-clip" not in err
    assert (d / "unit_0000.png").stat().st_mtime_ns != stamp


def test_a_unit_below_its_cap_is_optimized_as_before(capped: nn.Module) -> None:
    """Below the cap the uncapped objective is the clipped value but for a 1% leak below zero: a channel of
    act@0 far from 6 (0.125 on grey; a noisy start puts some positions below zero) climbs the same way, and its
    clipped value ends where the clipped objective's does (reading the raw pre-clip mean instead, negative
    positions pull the image elsewhere)."""
    args = {"steps": 12, "size": 8, "init_std": 0.3, **PIXEL}
    new = optimize(capped, O.channel("act@0", 0), **args)
    old = optimize(capped, O.channel("act@0", 0, pre_clip=False), **args)
    assert 0 < old.value < 6 and new.pre_clip and not old.pre_clip
    assert new.clipped_value == pytest.approx(old.value, rel=0.02)
    assert np.abs(new.image.astype(int) - old.image.astype(int)).max() <= 3
