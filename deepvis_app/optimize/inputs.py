"""The input of named layers in each forward: what a capped rectifier (ReLU6) clips, its pre-clip value.

`probe.Capture` records a layer's *output*; a pre-clip objective needs the rectifier's *input* of the same call,
with its autograd graph, so a forward pre-hook takes it here. Layer names are Capture's: `name@k` is call k of a
reused module (EfficientNet's shared ReLU6), a bare name every call with the last one kept, which is the call
Capture resolves a bare name to when it stops the forward after it. An inplace rectifier would clip the very
tensor we keep, so then a copy is kept instead. Only the entering thread's forwards are touched; the hooks are
removed on exit, also after an exception.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import DeepVisError
from ..probe import split_layer, unknown_layer_message


class InputCapture:
    """Records the input tensor of `layers`' calls in every forward of `net` run by this thread.

    >>> with InputCapture(net, ["blocks.3.relu6@1"]) as taps:
    ...     net(x)
    ...     pre = taps.inputs["blocks.3.relu6@1"]   # the ReLU6's input of that call, before the clip
    """

    def __init__(self, net: nn.Module, layers: Iterable[str]) -> None:
        self.net = net
        modules = dict(net.named_modules())
        self._wanted: dict[str, list[tuple[int | None, str]]] = {}
        for layer in dict.fromkeys(layers):
            name, call = split_layer(layer)
            if not name or name not in modules:
                raise DeepVisError(unknown_layer_message(layer, [n for n in modules if n]))
            self._wanted.setdefault(name, []).append((call, layer))
        self._modules = {name: modules[name] for name in self._wanted}
        self.inputs: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._owner = 0

    def __enter__(self) -> InputCapture:
        self._owner = threading.get_ident()
        try:
            self._handles.append(self.net.register_forward_pre_hook(self._reset))
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_pre_hook(self._make_hook(name)))
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

    def _reset(self, _module: nn.Module, _args: object) -> None:
        if threading.get_ident() == self._owner:
            self._calls.clear()
            self.inputs.clear()

    def _make_hook(self, name: str):
        wanted = self._wanted[name]

        def hook(module: nn.Module, args: tuple) -> None:
            if threading.get_ident() != self._owner:
                return
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor):
                return
            for k, layer in wanted:
                if k is None or k == call:
                    self.inputs[layer] = x.clone() if getattr(module, "inplace", False) else x

        return hook
