"""What the CUDA tests share: the marks (every test here is `cuda` and skips without a GPU), full float32 for
comparisons with the CPU, and the three architectures (random weights: nothing is downloaded)."""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

import pytest
import torch

CUDA = torch.cuda.is_available()
needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (tests/gpu)")]

# The three architectures of the GPU goals (docs/development.md): a mobile CNN with BatchNorm and ReLU6, a ResNet
# with max pooling and residual additions, a vision transformer (tokens, GELU, no rectifier).
ARCHITECTURES = {"efficientnet_lite0": "_blocks.7", "torchvision:resnet50": "layer3",
                 "torchvision:vit_b_16": "encoder.layers.encoder_layer_5"}


@contextmanager
def full_float32():
    """TF32 off for convolutions and matrix products while inside (CUDA results comparable with the CPU's)."""
    from deepvis_app.devices import exact_math

    with exact_math(torch.device("cuda")):
        yield


@lru_cache(maxsize=8)
def model(name: str, device: str):
    """`name` with random weights on `device`, loaded once per test session."""
    from deepvis_app.zoo import load_model

    return load_model(name, weights="random", device=device)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| over max |want| (0 for two zero tensors)."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    scale = float(want.abs().max())
    return float((got - want).abs().max()) / scale if scale else float((got - want).abs().max())
