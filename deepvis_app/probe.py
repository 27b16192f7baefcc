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
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import DeepVisError

# Modules that add nothing to look at: skipped when listing layers (they can still be probed by name).
_SKIPPED_TYPES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.ZeroPad2d, nn.ConstantPad2d)


def split_layer(layer: str) -> tuple[str, int | None]:
    """`"block.relu@1"` -> `("block.relu", 1)`; `"block.relu"` -> `("block.relu", None)` (last call)."""
    name, sep, call = layer.partition("@")
    if not sep:
        return layer, None
    if not call.isdigit():
        raise DeepVisError(f"bad layer name {layer!r}: the part after '@' must be a call index like @0")
    return name, int(call)


@dataclass(frozen=True)
class LayerInfo:
    """One probe-able layer: its name, module type and output shape without the batch dimension."""

    name: str
    kind: str
    shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.shape[0] if self.shape else 1


class Probe:
    """Context manager capturing the outputs of `layers` during each forward of `net`.

    >>> with Probe(net, ["layer2", "layer1.0.relu@0"]) as probe:
    ...     logits = net(x)
    ...     act = probe["layer2"]          # Tensor[N, C, H, W] on the model's device

    `detach=True` stores detached tensors (cheaper when no attribution follows). Hooks are removed on exit,
    also after an exception, leaving the model exactly as it was.
    """

    def __init__(self, net: nn.Module, layers: Iterable[str], *, detach: bool = False) -> None:
        self.net = net
        self.detach = detach
        self.activations: dict[str, torch.Tensor] = {}
        modules = dict(net.named_modules())
        self._wanted: dict[str, list[tuple[str, int | None]]] = {}
        for layer in dict.fromkeys(layers):
            name, call = split_layer(layer)
            if name not in modules or name == "":
                raise DeepVisError(unknown_layer_message(layer, [n for n in modules if n]))
            self._wanted.setdefault(name, []).append((layer, call))
        self._modules = {name: modules[name] for name in self._wanted}
        self._calls: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> Probe:
        try:
            self._handles.append(self.net.register_forward_pre_hook(self._reset))
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
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

    def __getitem__(self, layer: str) -> torch.Tensor:
        try:
            return self.activations[layer]
        except KeyError:
            raise DeepVisError(f"layer {layer!r} produced no output in this forward pass") from None

    def _reset(self, _module: nn.Module, _inputs: object) -> None:
        self._calls.clear()
        self.activations.clear()

    def _make_hook(self, name: str):
        wanted = self._wanted[name]

        def hook(_module: nn.Module, _inputs: object, output: object):
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            if not isinstance(output, torch.Tensor):
                return None
            captured = False
            for layer, want in wanted:
                if want is None or want == call:
                    self.activations[layer] = output.detach() if self.detach else output
                    captured = True
            # Downstream gets a copy so inplace ops after this point cannot rewrite the captured values.
            return output.clone() if captured else None

        return hook


def unknown_layer_message(layer: str, valid: list[str]) -> str:
    """One line naming the bad layer and the valid ones (shortened when there are many)."""
    shown = ", ".join(valid[:40]) + (f", ... ({len(valid)} in all; see `deepvis layers`)" if len(valid) > 40 else "")
    return f"unknown layer {layer!r}; valid layers: {shown}"


@torch.no_grad()
def layer_table(net: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    """Every probe-able layer of `net` in forward order, with output shapes, from one forward of `example`.

    Modules called more than once are listed once per call as `name@k`.
    """
    names = {id(m): n for n, m in net.named_modules() if n}
    order: list[tuple[str, str, tuple[int, ...]]] = []
    calls: dict[str, int] = {}
    handles = []

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        name = names.get(id(module))
        if name is None or not isinstance(output, torch.Tensor) or isinstance(module, _SKIPPED_TYPES):
            return
        if inputs and output is inputs[0] and not getattr(module, "inplace", False):
            return  # identity stand-ins (e.g. 'static_padding' of size 0)
        calls[name] = calls.get(name, 0) + 1
        order.append((name, type(module).__name__, tuple(output.shape[1:])))

    try:
        for module in net.modules():
            handles.append(module.register_forward_hook(hook))
        net(example)
    finally:
        for handle in handles:
            handle.remove()
    seen: dict[str, int] = {}
    table = []
    for name, kind, shape in order:
        if calls[name] > 1:
            k = seen.get(name, 0)
            seen[name] = k + 1
            name = f"{name}@{k}"
        table.append(LayerInfo(name, kind, shape))
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
