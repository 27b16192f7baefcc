"""The `LayerInfo` (layout, channels, grid) of one layer of a plain `nn.Module`, for APIs that take a bare net.

A `VisModel` knows its layers (`vm.info(layer)`); an API that also accepts a plain module (optimize, receptive
fields) asks here instead: one `probe.layer_table` forward per net and input shape, kept while the net lives.
Layer names are Probe names; which call a bare name means is decided by `probe.resolve_calls`, nowhere else.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from .errors import DeepVisError
from .probe import layer_table, resolve_calls
from .values import LayerInfo

_TABLES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, dict[str, LayerInfo]]] = weakref.WeakKeyDictionary()


def table_of(net: nn.Module, example: torch.Tensor) -> dict[str, LayerInfo]:
    """`probe.layer_table(net, example)` by layer name, measured once per net and input shape."""
    per_net = _TABLES.setdefault(net, {})
    key = (tuple(example.shape[1:]), example.dtype, example.device.type)
    if key not in per_net:
        per_net[key] = {info.name: info for info in layer_table(net, example[:1].detach())}
    return per_net[key]


def layer_info(net: nn.Module, layer: str, example: torch.Tensor, *, missing_ok: bool = False) -> LayerInfo | None:
    """The layer's info at `example`'s input size, named `layer` (a bare name of a reused module: its last call).
    Unknown names raise the probe's one line listing the valid layers; a layer the table leaves out (Identity,
    Dropout: no tensor of its own) raises too, or gives None with `missing_ok` (callers then read it as
    channels-first, like any activation without an info)."""
    name, call = resolve_calls(net, [layer], example[:1].detach())[layer]
    rows = table_of(net, example)
    row = rows.get(f"{name}@{call}") or (rows.get(name) if call == 0 else None)
    if row is None:
        if missing_ok:
            return None
        raise DeepVisError(f"layer {layer!r} gives no tensor in a forward pass, so it has no layout to look at")
    return row.with_name(layer)
