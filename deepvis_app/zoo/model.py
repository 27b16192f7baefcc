"""`VisModel`: a network ready to be looked at, with the facts about its layers every consumer asks (layouts,
channels, positions, the class layer), so no one reads raw activation shapes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from ..errors import DeepVisError
from ..probe import layer_table, unknown_layer_message
from ..values import LayerInfo, Layout, Unit, check_channel, check_class_index, check_position
from .preprocess import Preprocessor
from .specs import LayerSpec, ModelSpec, short_title


@dataclass
class VisModel:
    """A network ready to be looked at.

    `net` is in eval mode with frozen parameters; `preprocess(rgb_uint8_hwc)` gives Tensor[1,3,H,W] on
    `device`; `categories` are class names (1000 for ImageNet); `layers` are probe-able layer names in
    forward order (`layer_info` adds shapes); `shown_layers` are the spec's curated layers with titles.
    """

    spec: ModelSpec
    net: nn.Module
    device: torch.device
    categories: list[str]
    preprocess: Preprocessor
    weights: str = "default"
    # What `load_model` was given, so a copy can be loaded again (`reload`): the model name or spec path, the
    # labels as given, and the class count of a classifier head rebuilt for a checkpoint (None: the architecture's).
    source: str | None = None
    labels: str | list[str] | None = None
    head_classes: int | None = None
    loader: Callable[..., VisModel] | None = field(default=None, repr=False, compare=False)  # load_model

    def reload(self, *, weights: str | None = None, device: str | torch.device | None = None, seed: int = 0,
               on_notice: Callable[[str], None] | None = None) -> VisModel:
        """A fresh copy of this model (own network, same spec, labels and head size), e.g. for a background job or
        a random-weights twin (`weights="random"`); `weights`/`device` default to this model's."""
        if self.loader is None:
            raise DeepVisError("this model was not made by load_model: it cannot be loaded again")
        weights = self.weights if weights is None else weights
        labels = self.labels
        if labels is None and (self.head_classes or str(self.weights) not in ("default", "random")):
            labels = list(self.categories) or None  # a checkpoint's own names, or those of a rebuilt head
        return self.loader(self.source or self.spec.path or self.spec.name, weights=weights,
                           device=self.device if device is None else device, seed=seed, labels=labels,
                           num_classes=self.head_classes if weights == "random" else None, on_notice=on_notice)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @cached_property
    def layer_info(self) -> list[LayerInfo]:
        example = torch.zeros(1, 3, self.input_size, self.input_size, device=self.device)
        return layer_table(self.net, example)

    @property
    def layers(self) -> list[str]:
        return [info.name for info in self.layer_info]

    @cached_property
    def _lookup(self) -> tuple[dict[str, LayerInfo], dict[str, LayerInfo]]:
        """(name -> its info, bare module name -> its last call's info), built once from `layer_info`: the
        window asks for a layer's info and title several times a frame (a scan of every layer name was 0.3 ms
        of the GUI thread per frame on EfficientNet-Lite0)."""
        exact: dict[str, LayerInfo] = {}
        last: dict[str, LayerInfo] = {}
        for i in self.layer_info:
            exact.setdefault(i.name, i)
            last[i.name.partition("@")[0]] = i
        return exact, last

    def info(self, layer: str) -> LayerInfo:
        """Kind and shape of a layer; a bare name of a reused module means its last call."""
        exact, last = self._lookup
        if layer in exact:
            return exact[layer]
        if layer in last:
            return last[layer].with_name(layer)
        raise DeepVisError(self.unknown_layer(layer))

    def channels(self, layer: str) -> int:
        """How many units `layer` has (channels of a map, features of a token layer, values of a vector)."""
        return self.info(layer).channels

    def check_unit(self, unit: Unit) -> LayerInfo:
        """One line when `unit` is not in the model (layer, channel range, position on the layer's grid);
        returns the layer's info."""
        info = self.info(unit.layer)
        check_channel(info, unit.channel)
        check_position(info, unit.y, unit.x)
        return info

    def check_class(self, index: int) -> None:
        """One line when `index` is not one of the model's classes."""
        check_class_index(index, self.num_classes)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def is_class_layer(self, layer: str) -> bool:
        """True for a vector layer with one value per class (the logits)."""
        info = self.info(layer)
        return info.layout is Layout.VECTOR and info.channels == self.num_classes > 0

    @cached_property
    def class_layer(self) -> str | None:
        """The last layer whose units are the classes (the logits), if the model has one."""
        return next((name for name in reversed(self.layers) if self.is_class_layer(name)), None)

    @property
    def title(self) -> str:
        """The model's title as users should read it: "random weights" instead of the weights it was trained on."""
        title = self.spec.title
        if str(self.weights) == "random":
            return f"{short_title(title)} (random weights)"
        return title

    def unknown_layer(self, layer: str) -> str:
        """One line for a layer the model does not have: the curated titles first (what the window shows), then
        the module names."""
        titles = ", ".join(f"{short_title(ls.title)!r} ({ls.name})" for ls in self.shown_layers)
        rest = unknown_layer_message(layer, self.layers)
        return rest.replace("; valid layers: ", f"; curated: {titles}; all layers: ", 1) if titles else rest

    def resolve_layer(self, text: str) -> str:
        """A layer given as its module name or as the title the window shows ("block 3", case-insensitive)."""
        if text in self._lookup[0] or text in self._lookup[1]:
            return text
        wanted = text.strip().lower()
        for ls in self.shown_layers:
            if wanted in (ls.title.lower(), short_title(ls.title).lower()):
                return ls.name
        raise DeepVisError(self.unknown_layer(text))

    @property
    def shown_layers(self) -> list[LayerSpec]:
        return list(self._shown)

    @cached_property
    def _shown(self) -> tuple[LayerSpec, ...]:
        exact, last = self._lookup
        return tuple(ls for ls in self.spec.layers if ls.name in exact or ls.name in last)

    @property
    def default_layer(self) -> str:
        if self.spec.default_layer:
            return self.spec.default_layer
        shown = self.shown_layers
        return shown[len(shown) // 2].name if shown else self.layers[len(self.layers) // 2]
