"""Neuron attribution: gradient, deconvnet, guided backprop, saliency, gradient x input, (guided) Grad-CAM.

How it works (see docs/attribution.md): while a forward runs inside `AttributionContext`, every ReLU-family
call -- `nn.ReLU`/`nn.ReLU6` modules (reused or inplace), `F.relu`, `torch.relu`, `relu_`, `Tensor.relu`,
`F.relu6`, `F.hardtanh(x, 0, m)` -- is routed through one custom autograd Function by a
`torch.overrides.TorchFunctionMode`, so functional calls are covered too and the model itself is never touched
(no hooks, no module swaps). That Function's backward reads a rule chosen *at backward time*:

* ``gradient``: the true derivative (pass where 0 < x (< upper));
* ``deconv``:  relu(upstream), the forward mask ignored (Zeiler & Fergus);
* ``guided``:  relu(upstream) where 0 < x (< upper) (Springenberg et al.).

So one forward serves all three rules: the live pipeline reuses the frame's forward and calls
`torch.autograd.grad` once per rule on the same graph, backpropagating only from the selected layer.
Other activations (SiLU, GELU, Hardswish, sigmoid, ...) keep their plain derivative under every rule.
Inference-mode BatchNorm is routed as well, only to replace the slow native CPU backward by one multiply.

The modules: `rules` (the rectifier rules and the mode that routes calls), `fused` (conv -> BN -> rectifier
chains, crop boxes, folded weights), `objectives` (what scalar a unit or class gives), `context`
(`AttributionContext`, `Explanation`, `DeconvCache`), `views` (how maps are shown), `api` (one call for plain
modules). Units are `values.Unit` / `values.ClassTarget`; a layer's layout is a `values.LayerInfo`.
"""

from __future__ import annotations

from .api import attribute, explain_unit
from .context import METHODS, AttributionContext, DeconvCache, Explanation, attribution_context
from .objectives import OBJECTIVES, UNIT_OBJECTIVES, activation_info, resolve_unit, unit_objective
from .rules import RULES, rule_note, unruled_activations
from .views import VIEWS, gaussian_blur, gradcam_map, render_view

__all__ = [
    "METHODS", "OBJECTIVES", "RULES", "UNIT_OBJECTIVES", "VIEWS", "AttributionContext", "DeconvCache", "Explanation",
    "activation_info", "attribute", "attribution_context", "explain_unit", "gaussian_blur", "gradcam_map",
    "render_view", "resolve_unit", "rule_note", "unit_objective", "unruled_activations",
]
