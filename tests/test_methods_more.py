"""Integrated Gradients, SmoothGrad/VarGrad, LRP and the method registry: by hand on tiny nets, and equal to the
reference libraries (Captum's IntegratedGradients <= 1e-5 relative, zennit's own output <= 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepvis_app.errors import DeepVisError
from deepvis_app.methods.gradients import gradient
from deepvis_app.methods.ig import IntegratedGradients, quadrature
from deepvis_app.methods.registry import check_method, explain, method_names
from deepvis_app.methods.smooth import noise_samples, smooth
from deepvis_app.values import ClassTarget, Unit


class Quadratic(nn.Module):
    """logits = [sum(x^2), sum(x)]: gradient 2x and 1, so IG and SmoothGrad have closed forms."""

    def forward(self, x):
        return torch.stack([(x * x).flatten(1).sum(1), x.flatten(1).sum(1)], dim=1)


X = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])  # [1, 1, 2, 2]


def test_ig_by_hand_is_complete():
    # IG of sum(x^2) from a zero baseline: x * integral 2 a x da = x^2 exactly (the rule is exact for a
    # polynomial of degree 1 in a), so the completeness gap is 0 and the map equals x^2.
    r = IntegratedGradients(Quadratic(), baseline=torch.zeros_like(X), steps=4).attribute(X, ClassTarget(0, "logit"))
    assert torch.allclose(r.attribution, X * X, atol=1e-6)
    assert abs(float(r.gap[0])) < 1e-5
    assert float(r.score[0]) == pytest.approx(1 + 4 + 0.25 + 9)
    sizes, alphas = quadrature(5, "trapezoid")
    assert sizes == [0.125, 0.25, 0.25, 0.25, 0.125] and alphas == pytest.approx([0, 0.25, 0.5, 0.75, 1])


def test_smoothgrad_and_vargrad_by_hand():
    net = Quadratic()
    # gradient of sum(x^2) is 2x: SmoothGrad = 2 * mean(noisy x), VarGrad = 4 * var(noisy x) (population).
    noisy = noise_samples(X, 8, 0.2, seed=3)
    sg = smooth(gradient, net, X, ClassTarget(0, "logit"), samples=8, noise=0.2, seed=3)
    assert torch.allclose(sg, 2 * noisy.mean(0), atol=1e-5)
    vg = smooth(gradient, net, X, ClassTarget(0, "logit"), kind="vargrad", samples=8, noise=0.2, seed=3)
    assert torch.allclose(vg, 4 * noisy.var(0, unbiased=False), atol=1e-4)
    # the noise level is a fraction of the input's range: 0.2 * (3 - -2) = 1.0
    assert float((noisy - X).std()) == pytest.approx(1.0, rel=0.5)
    # a linear score has a constant gradient: SmoothGrad returns it exactly, VarGrad zero
    assert torch.allclose(smooth(gradient, net, X, ClassTarget(1, "logit"), samples=4), torch.ones_like(X))


@pytest.fixture(scope="module")
def resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@pytest.mark.parametrize("baseline", ["black", "blur", "noise"])
def test_ig_equals_captum(resnet, baseline):
    captum = pytest.importorskip("captum.attr")
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    ig = IntegratedGradients(resnet, baseline=baseline, steps=12)
    ours = ig.attribute(x, ClassTarget(3, "logit"))
    ref, delta = captum.IntegratedGradients(resnet).attribute(
        x, baselines=ig.baseline_for(x), target=3, n_steps=12, method="gausslegendre",
        return_convergence_delta=True)
    assert float((ours.attribution - ref).abs().max() / ref.abs().max()) <= 1e-5
    assert float(ours.gap[0]) == pytest.approx(float(delta[0]), abs=1e-4)


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_lrp_equals_zennit(resnet, composite):
    pytest.importorskip("zennit")
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    from deepvis_app.methods.lrp import lrp

    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(5))
    ours = lrp(resnet, x, 7, composite=composite)
    comp = (EpsilonPlusFlat(canonizers=[ResNetCanonizer()]) if composite == "epsilon_plus_flat" else
            EpsilonGammaBox(low=torch.zeros_like(x), high=torch.ones_like(x), canonizers=[ResNetCanonizer()]))
    with Gradient(model=resnet, composite=comp) as attributor:
        _, ref = attributor(x.clone(), torch.eye(1000)[[7]])
    assert float((ours - ref).abs().max() / ref.abs().max()) <= 1e-5
    # the canonizer merged BatchNorm only while zennit ran: the model is unchanged afterwards
    assert torch.equal(resnet(x), resnet(x))


def test_registry_names_and_one_signature(resnet):
    names = method_names()
    for name in ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "scorecam", "eigencam", "ig", "lrp",
                 "smoothgrad:guided", "vargrad:ig", "smoothgrad:gradient"):
        assert name in names
    with pytest.raises(DeepVisError, match="method"):
        check_method("smoothgrad:lrp", None)
    with pytest.raises(DeepVisError, match="layer"):
        check_method("gradcam", None)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    cam = explain(resnet, x, "gradcam", 1, layer="layer4")
    assert cam.values.shape == (1, 1, 32, 32) and cam.heat.shape == (1, 32, 32) and float(cam.values.min()) >= 0
    ig = explain(resnet, x, "ig", 1, steps=4)
    assert ig.values.shape == x.shape and "completeness_gap" in ig.extra
    assert torch.allclose(ig.heat, ig.values.sum(1))  # signed: relevance adds up over colours
    g = explain(resnet, x, "gradient", Unit("layer2", 3))
    assert torch.allclose(g.heat, g.values.abs().amax(1))  # magnitude: Simonyan's saliency


def test_attribute_command_writes_the_raw_map(tmp_path, lite0, photos, capsys):
    """`deepvis attribute --method M --out F.npy`: the registry's raw values at input resolution (a CAM after its
    ReLU, unscaled), for the top class; IG reports its completeness gap; bad combinations are one line."""
    from helpers import write_rgb

    from deepvis_app.cli import main

    img = write_rgb(tmp_path / "coffee.png", photos["coffee"])
    out = tmp_path / "cam.npy"
    assert main(["attribute", img, "--class", "espresso", "--method", "gradcampp", "--cam-layer", "_blocks.15",
                 "--out", str(out), "--device", "cpu"]) == 0
    x = lite0.preprocess(photos["coffee"])
    want = explain(lite0.net, x, "gradcampp", ClassTarget(967, "logit"), layer="_blocks.15").values[0]
    got = np.load(out)
    assert got.shape == (1, 224, 224) and np.allclose(got, want.numpy(), atol=1e-6) and got.min() >= 0
    assert main(["attribute", img, "--class", "top", "--method", "ig", "--steps", "4", "--out",
                 str(tmp_path / "ig.npy"), "--device", "cpu"]) == 0
    assert "completeness gap" in capsys.readouterr().out
    for argv, words in ((["--method", "ig"], "--unit"), (["--class", "1", "--unit", "2", "--method", "ig"], "--unit"),
                        (["--class", "1", "--method", "nope"], "--method")):
        assert main(["attribute", img, *argv, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "x.png").exists()
