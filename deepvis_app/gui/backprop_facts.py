"""Facts about a model that the backprop panes need to explain what they show, asked through the core's public
API: the ceiling of a clipped rectifier (`deepvis_app.rectifiers`: a ReLU6 unit at 6 has a gradient of exactly zero)
and whether the deconvnet map of a layer's units can depend on the image at all (`AttributionContext.deconv_static`).

Stop-gap until the live pipeline reports both with each frame (its forward knows them already); see the report of
issue 30. `deconv_static_at` runs a forward: call it in a job, on a private model copy.
"""

from __future__ import annotations

from typing import Any

from ..rectifiers import rectifier_cap

__all__ = ["deconv_static_at", "rectifier_cap"]  # rectifier_cap lives in the core (optimize uses it too)


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
