"""Facts about a model that the backprop panes need to explain what they show, asked through the core's public
API: the ceiling of a clipped rectifier (a ReLU6 unit at 6 has a gradient of exactly zero) and whether the
deconvnet map of a layer's units can depend on the image at all (`AttributionContext.deconv_static`).

Stop-gap until the live pipeline reports both with each frame (its forward knows them already); see the report of
issue 30. `deconv_static_at` runs a forward: call it in a job, on a private model copy.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..probe import split_layer


def rectifier_cap(net: nn.Module, layer: str) -> float | None:
    """The upper clip of the rectifier module `layer` names (`nn.ReLU6`: 6; `nn.Hardtanh(0, m)`: m), else None
    (a plain ReLU, a block output, a convolution...)."""
    name, _call = split_layer(layer)
    try:
        module = net.get_submodule(name)
    except AttributeError:
        return None
    if isinstance(module, nn.ReLU6):
        return 6.0
    if isinstance(module, nn.Hardtanh) and float(module.min_val) == 0.0 and float(module.max_val) > 0.0:
        return float(module.max_val)
    return None


def deconv_static_at(vm: Any, layer: str, size: int) -> bool:
    """True when the deconvnet map of every unit of `layer` is the same for every image on this network: the
    forward up to `layer` (as the live pipeline records it) holds no op whose deconvnet backward reads the input."""
    import torch

    from ..attribution import AttributionContext
    from ..probe import Capture

    x = torch.zeros(1, 3, size, size, device=vm.device, requires_grad=True)
    with AttributionContext(vm.net) as ac, Capture(vm.net, [layer], no_grad_after=layer, example=x.detach(),
                                                   stop=True) as cap:
        cap.run(x)
    return bool(ac.deconv_static)
