"""The CAM family: hand-computed values on a tiny net, and equal to pytorch-grad-cam on the same model, input and
target after its own scaling (max abs diff <= 1e-4), on a CNN and on a ViT token layer with its reshape recipe."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from deepvis_app.errors import DeepVisError
from deepvis_app.methods.cam import CAM_METHODS, cam
from deepvis_app.values import ClassTarget, Unit

TOL = 1e-4  # after pytorch-grad-cam's scaling: maps in [0, 1]


class GapNet(nn.Module):
    """ReLU (the CAM layer: A = x for x >= 0) -> global average pool -> Linear with known weights."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.act(x)).flatten(1))


A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [1.0, 1.0]]]])  # [1, 2, 2, 2], all >= 0


def test_gradcam_and_hirescam_by_hand():
    net = GapNet().eval()
    # class 0: S = 1*mean(A0) - 2*mean(A1); dS/dA_c = W_0c / 4 everywhere.
    g = torch.tensor([0.25, -0.5])
    want = (g[:, None, None] * A[0]).sum(0).clamp(min=0)  # Grad-CAM: w_c = mean of the gradient = W_0c / 4
    got = cam(net, A, "act", 0, "gradcam").low[0]
    assert torch.allclose(got, want)
    assert want.tolist() == [[0.0, 0.5], [0.25, 0.5]]  # 0.25*[1,2,3,4] - 0.5*[4,0,1,1], ReLU'd
    # HiResCAM: sum_c g*A is the same for a constant gradient; Layer-CAM keeps only positive gradients.
    assert torch.allclose(cam(net, A, "act", 0, "hirescam").low[0], want)
    assert torch.allclose(cam(net, A, "act", 0, "layercam").low[0], 0.25 * A[0, 0])
    # XGrad-CAM: w_c = sum(g*A)/sum(A) = g_c for a constant gradient, so again Grad-CAM's map.
    assert torch.allclose(cam(net, A, "act", 0, "xgradcam").low[0], want, atol=1e-6)


def test_scorecam_by_hand():
    net = GapNet().eval()
    got = cam(net, A, "act", ClassTarget(1, "logit"), "scorecam").low[0]
    # masks: each channel min-max scaled (2x2 -> 2x2 upsampling is the identity); scores on x*mask, softmaxed.
    masks = [(A[0, c] - A[0, c].min()) / (A[0, c].max() - A[0, c].min() + 1e-8) for c in range(2)]
    scores = torch.stack([net(A * m)[0, 1] for m in masks])
    w = scores.softmax(0)
    want = (w[:, None, None] * A[0]).sum(0).clamp(min=0)
    assert torch.allclose(got, want, atol=1e-6)


def test_unit_target_and_errors():
    net = GapNet().eval()
    # a unit of the CAM layer itself: S = A[1, 0, 0] -> gradient 1 at one place of channel 1.
    got = cam(net, A, "act", Unit("act", 1, 0, 0), "hirescam").low[0]
    assert got.tolist() == [[4.0, 0.0], [0.0, 0.0]]
    with pytest.raises(DeepVisError, match="out of range"):
        cam(net, A, "act", 5, "gradcam")
    with pytest.raises(DeepVisError, match="positions"):
        cam(net, A, "fc", 0, "gradcam")
    with pytest.raises(DeepVisError, match="method"):
        cam(net, A, "act", 0, "nocam")


def _reference(name: str):
    from pytorch_grad_cam import (
        EigenCAM,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        ScoreCAM,
        XGradCAM,
    )

    return {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM,
            "hirescam": HiResCAM, "scorecam": ScoreCAM, "eigencam": EigenCAM}[name]


def _their_scaling(low: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """pytorch-grad-cam scales per layer (min-max, then cv2 resize) and once more after averaging the layers."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(scale_cam_image(low, size))


@pytest.fixture(scope="module")
def resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    ref = copy.deepcopy(net)  # pytorch-grad-cam backpropagates through the parameters
    for p in ref.parameters():
        p.requires_grad_(True)
    return net, ref


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_equal_to_pytorch_grad_cam_on_resnet(resnet, method):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, ref = resnet
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    if method == "scorecam":
        x = x[:1]  # 512 masked forwards per image and implementation: one image is enough
    layer = "layer3" if method == "layercam" else "layer4"  # layer3: a 4x4 map, where the second scaling matters
    ours = CAM_METHODS[method](net, layer).attribute(x, 7)
    with _reference(method)(model=ref, target_layers=[getattr(ref, layer)]) as reference:
        theirs = reference(input_tensor=x, targets=[ClassifierOutputTarget(7)] * len(x))
    mine = _their_scaling(ours.low.numpy(), (64, 64))
    assert np.abs(mine - theirs).max() <= TOL
    assert ours.at((64, 64)).shape == (len(x), 1, 64, 64)


def test_gradcam_on_deit_tiny_equals_pytorch_grad_cam_vit_recipe():
    timm = pytest.importorskip("timm")
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    net = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    ref = copy.deepcopy(net)
    for p in ref.parameters():
        p.requires_grad_(True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))

    def reshape_transform(t, h=14, w=14):  # pytorch-grad-cam's documented ViT recipe: drop the class token
        return t[:, 1:, :].reshape(t.size(0), h, w, t.size(2)).permute(0, 3, 1, 2)

    # The last block's first norm: a token layer 197 x 192 on a 14x14 grid + 1 class token.
    ours = cam(net, x, "blocks.11.norm1", 3, "gradcam")
    with GradCAM(model=ref, target_layers=[ref.blocks[-1].norm1], reshape_transform=reshape_transform) as reference:
        theirs = reference(input_tensor=x, targets=[ClassifierOutputTarget(3)])
    assert ours.low.shape == (1, 14, 14)
    assert np.abs(_their_scaling(ours.low.numpy(), (224, 224)) - theirs).max() <= TOL


def test_gradcampp_and_eigencam_by_hand():
    net = GapNet().eval()
    # Grad-CAM++ with the constant gradient g_c = W_0c / 4 of class 0: alpha = g^2 / (2 g^2 + sum(A_c) g^3) at
    # every position, w_c = sum over the 4 positions of relu(g_c) * alpha. Channel 0: g = 0.25, sum(A_0) = 10:
    # alpha = 0.0625 / (0.125 + 10 * 0.015625) = 0.2222..., w_0 = 4 * 0.25 * 0.2222 = 0.2222; channel 1: g < 0, w = 0.
    w0 = 4 * 0.25 * (0.0625 / (0.125 + 10 * 0.015625 + 1e-6))
    got = cam(net, A, "act", 0, "gradcampp").low[0]
    assert torch.allclose(got, w0 * A[0, 0], atol=1e-5)
    # Eigen-CAM: channel 1 constant, so the first principal component is channel 0 alone and the map is +/- the
    # centred channel 0, ReLU'd (the sign is SVD's).
    flat = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 5.0], [5.0, 5.0]]]])
    got = cam(net, flat, "act", 0, "eigencam").low[0]
    centred = flat[0, 0] - flat[0, 0].mean()
    assert torch.allclose(got, centred.clamp(min=0), atol=1e-5) or torch.allclose(got, (-centred).clamp(min=0),
                                                                                    atol=1e-5)
    assert float(got.max()) == pytest.approx(1.5)
