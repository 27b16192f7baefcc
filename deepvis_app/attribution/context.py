"""The attribution context: one forward recorded with switchable rules, then explanations of units from it.

`AttributionContext` pushes `rules.RectifierMode` while a forward runs; `explain` differentiates a unit's
objective (`objectives`) once per rule the asked methods need, from the existing graph. `DeconvCache` keeps
deconvnet maps of nets where they cannot depend on the image.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..devices import batch_threads
from ..errors import DeepVisError
from ..layouts import as_maps
from ..values import ClassTarget, LayerInfo, Unit
from . import program
from .objectives import Target, activation_info, check_target, resolve_unit, unit_objective
from .rules import RULES, RectifierMode, RuleState
from .stacked import stacked_grads
from .views import gradcam_map

METHODS = ("gradient", "deconv", "guided", "saliency", "input_x_gradient", "gradcam", "guided_gradcam")


@dataclass
class Explanation:
    """Result of `explain`: attribution maps (detached) keyed by method, plus the explained target (a unit with
    its position resolved, or the class) and the objective.

    gradient/deconv/guided/input_x_gradient/guided_gradcam are shaped like x; saliency and gradcam are
    [N, 1, H, W] (gradcam upsampled to the input size, >= 0).
    """

    unit: Target
    maps: dict[str, Tensor]
    objective: str = "neuron"

    def __getitem__(self, method: str) -> Tensor:
        return self.maps[method]


class AttributionContext:
    """Run forwards inside it so ReLU-family ops carry switchable backward rules.

    >>> with AttributionContext(net) as ac, Capture(net, [layer], no_grad_after=layer, example=x) as cap:
    ...     cap.run(x.requires_grad_())      # the frame's forward, done once; no graph after `layer`
    >>> exp = ac.explain(x, cap[layer], Unit(layer, 5), ("gradient", "deconv", "guided"), info=vm.info(layer))

    Entering pushes a TorchFunctionMode (thread-local) and leaving pops it, also after an exception; the
    model is never modified. `explain`/`grad` may be called after leaving: the rules live in the graph.
    Forwards with grad disabled or an input that does not require grad pass through untouched.
    """

    def __init__(self, net: nn.Module | None = None, *, stack_views: bool = True,
                 compile_backward: bool | None = None) -> None:
        self.net = net
        # Two or more rules of one unit: one walk of the graph with the views stacked (`stacked`), not one
        # backward per rule. False: one backward per rule (the benchmark's before).
        self.stack_views = stack_views
        # On the CPU, `explain` runs the rules' backward as one compiled program (`program`) where the graph
        # allows: no Python between its ops, so a thread running Python beside it (the window's GUI) cannot
        # hold it up. False: autograd with the Python rule nodes (the benchmarks' before); None: on unless the
        # environment says DEEPVIS_COMPILED_BACKWARD=0 (to compare the two in the live window).
        if compile_backward is None:
            compile_backward = os.environ.get("DEEPVIS_COMPILED_BACKWARD", "1") != "0"
        self.compile_backward = compile_backward
        self.stacked_walks = 0  # how many `rule_grads` calls ran as one stacked walk
        self.compiled_walks = 0  # how many `explain` backward passes ran as one compiled program
        self._state = RuleState()
        self._mode: RectifierMode | None = None

    @property
    def rectifier_calls(self) -> int:
        """How many ReLU-family calls got the switchable rule in forwards run inside this context."""
        return self._state.calls

    @property
    def chain_steps(self) -> list[int]:
        """What each conv chain did in the last backward, in the order run (`kernels.chain_backward`'s codes:
        DENSE, CROPPED, SEARCHED, ZERO, SPREAD): how far a neuron's gradient was cropped to its nonzero box."""
        return list(self._state.chain_steps)

    @property
    def deconv_static(self) -> bool:
        """True when the deconvnet maps of this context's graph cannot depend on the input: every recorded op
        is linear with a fixed backward, a rectifier or inference BatchNorm (no max-pooling switches, gating,
        smooth activations...). Such maps may be cached per unit and position (`DeconvCache`)."""
        return self._state.deconv_static

    def __enter__(self) -> AttributionContext:
        if self._mode is not None:
            raise RuntimeError("AttributionContext is not reentrant")
        if isinstance(self.net, torch.jit.ScriptModule):
            raise DeepVisError("attribution needs an eager nn.Module: TorchScript modules bypass the "
                               "ReLU rules (load the model without torch.jit)")
        self._mode = RectifierMode(self._state)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        mode, self._mode = self._mode, None
        if mode is not None:
            mode.__exit__(None, None, None)

    def grad(self, objective: Tensor, inputs: Tensor | Sequence[Tensor], rule: str = "gradient", *,
             retain_graph: bool = True) -> tuple[Tensor, ...]:
        """`torch.autograd.grad(objective, inputs)` with ReLU-family nodes using `rule`."""
        if rule not in RULES:
            raise DeepVisError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
        inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        with self._state.lock:
            self._state.rule = rule
            self._state.dense = False
            self._state.chain_steps = []
            try:
                return torch.autograd.grad(objective, inputs, retain_graph=retain_graph, allow_unused=True)
            finally:
                self._state.rule = "gradient"

    def compiled_grads(self, objective: Tensor, start: Tensor, x: Tensor,
                       rules: Sequence[str]) -> dict[str, Tensor] | None:
        """d objective / d x under each rule as one compiled program (`program`), where `objective` reads only
        `start` (a unit's activation) and the graph from there to x allows it; None otherwise (run `grad` or
        `rule_grads` then), on a GPU, or with `compile_backward` off. The graph is kept."""
        if not self.compile_backward or x.device.type != "cpu":
            return None
        rules = list(dict.fromkeys(rules))
        with self._state.lock, batch_threads(x.device) if len(rules) >= 2 else nullcontext():
            self._state.chain_steps = []
            got = program.grads(objective, start, x, rules, self._state.chain_steps)
        if got is not None:
            self.compiled_walks += 1
        return got

    def rule_grads(self, objective: Tensor, x: Tensor, rules: Sequence[str], *,
                   retain_graph: bool = True) -> dict[str, Tensor]:
        """d objective / d x under each rule: one walk of the graph with the views stacked (`stacked`) when
        `stack_views` and two or more rules, else (or where the walker declines the graph) one backward per rule.
        A rule whose gradient does not reach x gives zeros."""
        rules = list(dict.fromkeys(rules))
        if self.stack_views and len(rules) >= 2:
            with self._state.lock, batch_threads(x.device):
                together = stacked_grads(objective, x, rules, self._state)
            if together is not None:
                self.stacked_walks += 1
                return together
        out = {}
        for i, rule in enumerate(rules):
            (gx,) = self.grad(objective, x, rule, retain_graph=retain_graph or i < len(rules) - 1)
            out[rule] = torch.zeros_like(x) if gx is None else gx
        return out

    def explain(self, x: Tensor, activation: Tensor, unit: Target,
                methods: Iterable[str] = ("gradient", "deconv", "guided"), *, objective: str = "neuron",
                info: LayerInfo | None = None, cam_activation: Tensor | None = None,
                cam_info: LayerInfo | None = None, retain_graph: bool = False,
                deconv_cache: DeconvCache | None = None) -> Explanation:
        """Attribution maps of one unit of `activation` w.r.t. `x`, all from the existing graph.

        x: the forward's input (requires_grad, forward run inside this context). unit: a `values.Unit` of the
        layer `activation` was captured from (by `probe.Capture` in that forward; `info` gives its layout,
        None = channels-first maps), explained by `objective` (neuron, channel, seed; a neuron without a
        position is taken at the channel's argmax in image 0), or a `values.ClassTarget` with `activation` the
        network output. cam_activation: the Grad-CAM layer's captured output, laid out as `cam_info` (default:
        `activation` and `info`). Each needed rule costs one partial backward (from the unit's layer down to x);
        saliency and gradient x input reuse the gradient. retain_graph=False frees the graph after the last
        backward. deconv_cache: where the deconvnet map cannot depend on the input (`deconv_static`), a
        neuron's map is computed once per (layer, channel, position, input shape) and reused.
        """
        methods = tuple(dict.fromkeys(methods))
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise DeepVisError(f"unknown method {bad[0]!r}; use one of {', '.join(METHODS)}")
        if not x.requires_grad:
            raise DeepVisError("explain needs the forward's input with requires_grad=True")
        if not isinstance(unit, Unit | ClassTarget):
            raise TypeError(f"explain takes a values.Unit or values.ClassTarget, not {type(unit).__name__}")
        is_unit = isinstance(unit, Unit)
        if is_unit:
            info = info or activation_info(activation, unit.layer)
        check_target(activation, unit, objective, info)
        if is_unit and objective == "neuron":
            unit = resolve_unit(activation, unit, info)
        target = unit_objective(activation, unit, objective, info)
        if target.grad_fn is None:
            raise DeepVisError("the activation is not connected to x: run the forward inside the context "
                               "with x.requires_grad_() and a Capture without detach")
        want_cam = bool({"gradcam", "guided_gradcam"} & set(methods))
        cam_act, cam_layout = activation, info
        if cam_activation is not None:
            cam_act, cam_layout = cam_activation, cam_info
        if want_cam:
            cam_layout = cam_layout or activation_info(cam_act)
            if cam_layout.grid is None:
                raise DeepVisError(f"Grad-CAM needs a layer with spatial positions, got shape "
                                   f"{tuple(cam_act.shape)}")

        rules: list[str] = []
        if {"gradient", "saliency", "input_x_gradient"} & set(methods):
            rules.append("gradient")
        if "deconv" in methods:
            rules.append("deconv")
        if {"guided", "guided_gradcam"} & set(methods):
            rules.append("guided")

        grads: dict[str, Tensor] = {}
        static_key = None
        if deconv_cache is not None and "deconv" in rules and self.deconv_static and is_unit \
                and objective == "neuron":
            static_key = (unit.layer, unit.channel, unit.y, unit.x, tuple(x.shape), x.dtype, x.device)
            hit = deconv_cache.get(static_key)
            if hit is not None:
                grads["deconv"] = hit
                rules.remove("deconv")
                static_key = None
        cam_grad = None
        if rules and not want_cam:
            compiled = self.compiled_grads(target, activation, x, rules)
            if compiled is not None:
                grads.update(compiled)
                rules = []
        if len(rules) >= 2 and not want_cam:
            grads.update(self.rule_grads(target, x, rules, retain_graph=retain_graph))
            rules = []
        jobs = list(rules)
        if want_cam and "gradient" not in jobs:
            jobs.insert(0, "cam")
        for i, rule in enumerate(jobs):
            keep = retain_graph or i < len(jobs) - 1
            if rule == "cam":
                (cam_grad,) = self.grad(target, cam_act, "gradient", retain_graph=keep)
                continue
            if rule == "gradient" and want_cam:
                gx, cam_grad = self.grad(target, (x, cam_act), "gradient", retain_graph=keep)
            else:
                (gx,) = self.grad(target, x, rule, retain_graph=keep)
            grads[rule] = torch.zeros_like(x) if gx is None else gx
        if static_key is not None:
            deconv_cache.put(static_key, grads["deconv"])

        maps: dict[str, Tensor] = {}
        for m in methods:
            if m in RULES:
                maps[m] = grads[m]
            elif m == "saliency":
                maps[m] = grads["gradient"].abs().amax(dim=1, keepdim=True)
            elif m == "input_x_gradient":
                maps[m] = grads["gradient"] * x.detach()
        if want_cam:
            cam_grad = None if cam_grad is None else as_maps(cam_grad, cam_layout)
            cam = gradcam_map(as_maps(cam_act.detach(), cam_layout), cam_grad, tuple(x.shape[-2:]))
            if "gradcam" in methods:
                maps["gradcam"] = cam
            if "guided_gradcam" in methods:
                maps["guided_gradcam"] = grads["guided"] * cam
        return Explanation(unit, maps, objective if is_unit else unit.score)


class DeconvCache:
    """Deconvnet maps of neurons on nets where they cannot depend on the image (see
    `AttributionContext.deconv_static`): the live view computes each (layer, channel, position) once instead of
    one backward per frame. A map is zero outside the unit's receptive field, so only its nonzero box is kept:
    an early layer's thousands of positions fit as well as a deep layer's few whole-image maps. Least recently
    used maps go first once `max_bytes` is reached; one cache per model (clear it on a change)."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._maps: OrderedDict[tuple, tuple[Tensor, int, int, torch.Size]] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._maps)

    def get(self, key: tuple) -> Tensor | None:
        found = self._maps.get(key)
        if found is None:
            self.misses += 1
            return None
        self._maps.move_to_end(key)
        self.hits += 1
        box, top, left, shape = found
        full = box.new_zeros(shape)
        full[..., top:top + box.shape[-2], left:left + box.shape[-1]] = box
        return full

    def put(self, key: tuple, value: Tensor) -> None:
        value = value.detach()
        rows = torch.nonzero(value.abs().flatten(0, -3).amax(dim=(0, -1)))
        cols = torch.nonzero(value.abs().flatten(0, -3).amax(dim=(0, -2)))
        if len(rows) and len(cols):
            top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        else:
            top = bottom = left = right = 0
        box = value[..., top:bottom, left:right].clone()
        if key in self._maps:
            self.bytes -= self._maps.pop(key)[0].nbytes
        self._maps[key] = (box, top, left, value.shape)
        self.bytes += box.nbytes
        while self.bytes > self.max_bytes and len(self._maps) > 1:
            self.bytes -= self._maps.popitem(last=False)[1][0].nbytes

    def clear(self) -> None:
        self._maps.clear()
        self.bytes = 0


def attribution_context(net: nn.Module | None = None) -> AttributionContext:
    """`with attribution_context(net) as ac:` -- see `AttributionContext`."""
    return AttributionContext(net)
