"""Forward hooks that capture chosen layers' activations in one forward pass.

A layer is a module's qualified name as in `net.named_modules()`. A module called several times in one
forward (ResNet's shared ReLU, EfficientNet's shared ReLU6) is addressed per call as `name@k` (k from 0);
the bare `name` means its last call. Captured tensors stay on the model's device and keep their autograd
graph when grad is enabled, so attribution can backpropagate from them without a second forward.

Inplace safety: a hook hands the *next* module a clone of the captured output, so a later inplace op
(`out += identity`, `ReLU(inplace=True)`) modifies the clone, never what was captured.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .errors import DeepVisError
from .layouts import LayoutTracker
from .values import LayerInfo

# Modules that add nothing to look at: skipped when listing layers (they can still be probed by name).
_SKIPPED_TYPES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.ZeroPad2d, nn.ConstantPad2d)


def _submodule(net: nn.Module, name: str) -> nn.Module | None:
    """The submodule at dotted path `name` (None when there is none, or for "": the net itself is no layer)."""
    if not name:
        return None
    try:
        return net.get_submodule(name)
    except AttributeError:
        return None


def split_layer(layer: str) -> tuple[str, int | None]:
    """`"block.relu@1"` -> `("block.relu", 1)`; `"block.relu"` -> `("block.relu", None)` (last call)."""
    name, sep, call = layer.partition("@")
    if not sep:
        return layer, None
    if not call.isdigit():
        raise DeepVisError(f"bad layer name {layer!r}: the part after '@' must be a call index like @0")
    return name, int(call)


class Stopped(Exception):
    """Raised from a hook once every wanted layer is captured (`Capture(stop=True)`); `Capture.run` catches it."""


def _known_layer(net: nn.Module, layer: str) -> tuple[str, int | None]:
    """`split_layer(layer)` once its module is found by path; unknown: one line listing the valid names. By path,
    not by walking `named_modules()`: the live view resolves its layers every frame, and the walk took 1 ms of
    EfficientNet-Lite0's stage one with the GIL held (the window's scarcest resource, docs/development.md)."""
    name, call = split_layer(layer)
    if _submodule(net, name) is None:
        raise DeepVisError(unknown_layer_message(layer, [n for n, _ in net.named_modules() if n]))
    return name, call


def resolve_calls(net: nn.Module, layers: Iterable[str], example: torch.Tensor | None) -> dict[str, tuple[str, int]]:
    """`layer -> (module name, call index)` for Probe names; a bare name of a reused module means its last call
    (counted once per net from one forward of `example`). Unknown names raise one line listing the valid ones."""
    out: dict[str, tuple[str, int]] = {}
    counts: dict[str, int] | None = None
    for layer in dict.fromkeys(layers):
        name, call = _known_layer(net, layer)
        if call is None:
            if example is None:
                raise DeepVisError(f"layer {layer!r}: a bare name needs an example input to find its last call")
            if counts is None:
                counts = call_counts(net, example.detach())[0]
            call = max(counts.get(name, 1), 1) - 1
        out[layer] = (name, call)
    return out


class Capture:
    """The one primitive for "capture these layers of a forward": used by the live view, attribution, crops,
    optimize, occlusion and receptive fields.

    >>> with Capture(net, ["layer2", "layer1.0.relu@0"], example=x, stop=True) as cap:
    ...     cap.run(x)               # the net after the last wanted layer never runs; returns None when stopped
    ...     act = cap["layer2"]      # Tensor on the model's device, with its autograd graph unless detach=True

    - Names are Probe names (`name`, `name@k`); a bare name of a reused module means its last call. Without
      `example` a bare name is captured at every call (the last call wins), which needs no counting forward but
      cannot stop early: `stop`/`no_grad_after` with bare names need `example`.
    - `stop=True`: raise `Stopped` once all wanted layers are captured (`run` catches it and returns None).
    - `replace={layer: tensor}`: that call's output is replaced by `tensor` (occlusion feeds cached activations).
    - `modify={layer: fn}`: `fn(output)` runs on that call's output; a non-None result replaces it (interventions
      knock units out this way). Capture's hooks then run before the module's other hooks, so another Capture
      (the live probe) sees the changed values.
    - `inputs=[layer, ...]`: the tensor that call *received* is kept in `cap.inputs[layer]` (a forward pre-hook;
      a copy when the module is inplace, which would rewrite it) -- a capped rectifier's value before the clip.
    - `no_grad_after=layer`: autograd stops recording after that layer's call (a unit's backward never needs the
      rest of the graph); grad mode is restored on the next forward and on exit.
    - `grad_from=layer`: the opposite cut: that call's output is handed on as a fresh leaf that requires grad and
      autograd records from there on (a live Grad-CAM needs d class / d layer only: the forward up to the layer
      runs without a graph). The leaf is `cap.leaves[layer]`; grad mode is restored as for `no_grad_after`.
    - Only forwards run by the thread that entered the context are touched: another thread's forward of the
      same net passes untouched. A captured output is cloned for the modules after it, so a later inplace op
      (`out += identity`, `ReLU(inplace=True)`) never rewrites what was captured. Hooks are removed on exit,
      also after an exception.
    """

    def __init__(self, net: nn.Module, layers: Iterable[str] = (), *, example: torch.Tensor | None = None,
                 stop: bool = False, detach: bool = False, replace: dict[str, torch.Tensor] | None = None,
                 no_grad_after: str | None = None, grad_from: str | None = None,
                 modify: dict[str, Callable[[torch.Tensor], torch.Tensor | None]] | None = None,
                 inputs: Iterable[str] = ()) -> None:
        self.net = net
        self.detach = detach
        self.stop = stop
        self.layers = list(dict.fromkeys(layers))
        self.replace = dict(replace or {})
        self.modify = dict(modify or {})
        self.no_grad_after = no_grad_after
        self.grad_from = grad_from
        self.leaves: dict[str, torch.Tensor] = {}
        cuts = [c for c in (no_grad_after, grad_from) if c]
        exact = stop or bool(self.replace) or bool(self.modify) or bool(cuts) or example is not None
        self.input_layers = list(dict.fromkeys(inputs))
        named = [*self.layers, *self.replace, *self.modify, *cuts, *self.input_layers]
        if exact:
            calls = resolve_calls(net, named, example)
        else:  # a bare name is captured at every call (-1), so the last call wins
            calls = {}
            for layer in named:
                name, call = _known_layer(net, layer)
                calls[layer] = (name, -1 if call is None else call)
        # module name -> {call index (-1: any) -> [(role, layer)]}
        self._plan: dict[str, dict[int, list[tuple[str, str]]]] = {}
        roles = [("replace", layer) for layer in self.replace] + [("modify", layer) for layer in self.modify]
        roles += [("capture", layer) for layer in self.layers]
        roles += [("cut", no_grad_after)] if no_grad_after else []
        roles += [("leaf", grad_from)] if grad_from else []
        for role, layer in roles:
            name, call = calls[layer]
            self._plan.setdefault(name, {}).setdefault(call, []).append((role, layer))
        # module name -> {call index (-1: any) -> [layer]}: layers whose *input* is recorded (a forward pre-hook)
        self._in_plan: dict[str, dict[int, list[str]]] = {}
        for layer in self.input_layers:
            name, call = calls[layer]
            self._in_plan.setdefault(name, {}).setdefault(call, []).append(layer)
        # by path, not `named_modules()`: a live frame builds a Capture, and walking a ViT's ~250 modules twice
        # cost 1.1 ms of DeiT-tiny's 20 ms frame
        self._modules = {name: _submodule(net, name) for name in {**self._plan, **self._in_plan}}
        self.activations: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}  # `inputs=` layers: the tensor each call received
        self._calls: dict[str, int] = {}
        self._in_calls: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._owner = 0
        self._grad_was: bool | None = None

    def __enter__(self) -> Capture:
        self._owner = threading.get_ident()
        self._grad_was = torch.is_grad_enabled()
        try:
            self._handles.append(self.net.register_forward_pre_hook(self._reset))
            first = bool(self.replace or self.modify)  # changed outputs must reach every other hook
            for name, module in self._modules.items():
                if name in self._plan:
                    self._handles.append(module.register_forward_hook(self._make_hook(name), prepend=first))
                if name in self._in_plan:
                    self._handles.append(module.register_forward_pre_hook(self._make_input_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._grad_was is not None:
            torch.set_grad_enabled(self._grad_was)
            self._grad_was = None

    def __getitem__(self, layer: str) -> torch.Tensor:
        try:
            return self.activations[layer]
        except KeyError:
            raise DeepVisError(f"layer {layer!r} produced no output in this forward pass") from None

    def run(self, *inputs: object, **kwargs: object) -> object | None:
        """`net(*inputs)`; None when the forward was stopped after the wanted layers."""
        try:
            return self.net(*inputs, **kwargs)
        except Stopped:
            return None

    def _reset(self, _module: nn.Module, _inputs: object) -> None:
        if threading.get_ident() != self._owner:
            return
        self._calls.clear()
        self._in_calls.clear()
        self.activations.clear()
        self.inputs.clear()
        self.leaves.clear()
        if (self.no_grad_after is not None or self.grad_from is not None) and self._grad_was is not None:
            torch.set_grad_enabled(self._grad_was)

    def _make_hook(self, name: str):
        plan = self._plan[name]
        every = plan.get(-1, [])

        def hook(_module: nn.Module, _inputs: object, output: object):
            if threading.get_ident() != self._owner:
                return None
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            todo = plan.get(call, []) + every if every else plan.get(call)
            if not todo:
                return None
            result = None
            for role, layer in todo:
                if role == "replace":
                    result = output = self.replace[layer]
                elif role == "modify" and isinstance(output, torch.Tensor):
                    changed = self.modify[layer](output)
                    if changed is not None:
                        result = output = changed
                elif role == "leaf" and isinstance(output, torch.Tensor):
                    torch.set_grad_enabled(True)
                    result = output = self.leaves[layer] = output.detach().requires_grad_(True)
            captured = False
            for role, layer in todo:
                if role == "capture" and isinstance(output, torch.Tensor):
                    self.activations[layer] = output.detach() if self.detach else output
                    captured = True
                elif role == "cut":
                    torch.set_grad_enabled(False)
            if self.stop and captured and len(self.activations) == len(self.layers):
                raise Stopped
            # Downstream gets a copy so inplace ops after this point cannot rewrite the captured values.
            return output.clone() if captured else result

        return hook


    def _make_input_hook(self, name: str):
        plan = self._in_plan[name]

        def hook(module: nn.Module, args: tuple) -> None:
            if threading.get_ident() != self._owner:
                return
            call = self._in_calls.get(name, 0)
            self._in_calls[name] = call + 1
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor):
                return
            for layer in plan.get(call, []) + plan.get(-1, []):
                # an inplace module (ReLU6(inplace=True)) is about to rewrite this very tensor: keep a copy
                kept = x.clone() if getattr(module, "inplace", False) else x
                self.inputs[layer] = kept.detach() if self.detach else kept

        return hook


class Probe(Capture):
    """Capture `layers` in every forward of `net` run by this thread (the live view's form of `Capture`).

    >>> with Probe(net, ["layer2", "layer1.0.relu@0"]) as probe:
    ...     logits = net(x)
    ...     act = probe["layer2"]          # Tensor[N, C, H, W] on the model's device

    `detach=True` stores detached tensors (cheaper when no attribution follows).
    """

    def __init__(self, net: nn.Module, layers: Iterable[str], *, detach: bool = False) -> None:
        super().__init__(net, layers, detach=detach)


def output_logits(out: object) -> torch.Tensor:
    """The logits of a model's output: a tensor, an object with `.logits` (torchvision's GoogLeNet/Inception
    outputs) or a tuple/list starting with them (aux-logit nets). The one place that knows these shapes."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise DeepVisError(f"cannot find the logits in the model output of type {type(out).__name__}")


def unknown_layer_message(layer: str, valid: list[str]) -> str:
    """One line naming the bad layer and the valid ones (shortened when there are many)."""
    shown = ", ".join(valid[:40]) + (f", ... ({len(valid)} in all; see `deepvis layers`)" if len(valid) > 40 else "")
    return f"unknown layer {layer!r}; valid layers: {shown}"


@torch.no_grad()
def layer_table(net: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    """Every probe-able layer of `net` in forward order, with output shapes and layouts, from one forward of
    `example`. Modules called more than once are listed once per call as `name@k`."""
    names = {id(m): n for n, m in net.named_modules() if n}
    order: list[tuple[str, str, tuple[int, ...], tuple]] = []
    calls: dict[str, int] = {}
    handles = []
    tracker = LayoutTracker()
    marks: dict[int, list[int]] = {}  # id(container) -> leaf marks of its open calls

    def pre(module: nn.Module, _inputs: tuple) -> None:
        marks.setdefault(id(module), []).append(tracker.leaf_mark())

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        mark = marks[id(module)].pop() if marks.get(id(module)) else None
        name = names.get(id(module))
        if not isinstance(output, torch.Tensor):
            return
        leaf = next(module.children(), None) is None
        decided = tracker.decide(module, inputs, output, None if leaf else mark)
        if name is None or isinstance(module, _SKIPPED_TYPES):
            return
        if inputs and output is inputs[0] and not getattr(module, "inplace", False):
            return  # identity stand-ins (e.g. 'static_padding' of size 0)
        calls[name] = calls.get(name, 0) + 1
        order.append((name, type(module).__name__, tuple(output.shape[1:]), decided))

    try:
        for module in net.modules():
            if next(module.children(), None) is not None:
                handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(hook))
        net(example)
    finally:
        for handle in handles:
            handle.remove()
    seen: dict[str, int] = {}
    table = []
    for name, kind, shape, (layout, prefix, grid) in order:
        if calls[name] > 1:
            k = seen.get(name, 0)
            seen[name] = k + 1
            name = f"{name}@{k}"
        table.append(LayerInfo(name, kind, shape, layout, prefix, grid))
    return table


_CALLS: weakref.WeakKeyDictionary[nn.Module, tuple[dict[str, int], list[str]]] = weakref.WeakKeyDictionary()


def call_counts(net: nn.Module, example: torch.Tensor) -> tuple[dict[str, int], list[str]]:
    """How often each named module runs per forward (a bare name of a reused module means its last call), and
    the modules in the order of their first call; measured once per net with one no-grad forward of `example`.
    The hooks count only this thread's calls, so a forward another thread runs meanwhile does not mix in."""
    cached = _CALLS.get(net)
    if cached is not None:
        return cached
    me = threading.get_ident()
    counts: dict[str, int] = {}
    order: list[str] = []
    handles = []

    def make(name: str):
        def hook(*_):
            if threading.get_ident() == me:
                if name not in counts:
                    order.append(name)
                counts[name] = counts.get(name, 0) + 1
        return hook

    try:
        for name, module in net.named_modules():
            if name:
                handles.append(module.register_forward_hook(make(name)))
        with torch.no_grad():
            net(example)
    finally:
        for h in handles:
            h.remove()
    _CALLS[net] = (counts, order)
    return counts, order
