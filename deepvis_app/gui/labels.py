"""How the window names a layer. The layer list shows a curated layer by its title ("block 3 ReLU6") and every view
used to name it by its module (`_blocks.3._swish@1`), so the two never matched: every view now shows both."""

from __future__ import annotations

from ..zoo import VisModel
from ..zoo.specs import short_title


def layer_title(vm: VisModel, layer: str) -> str:
    """The curated title of `layer` without its shape note ("block 3 ReLU6"), or "" when it has none."""
    for ls in vm.shown_layers:
        if ls.name == layer:
            return short_title(ls.title)
    return ""


def layer_label(vm: VisModel, layer: str) -> str:
    """"block 3 ReLU6 \u00b7 _blocks.3._swish@1" for a curated layer, else the module name."""
    title = layer_title(vm, layer)
    return f"{title} \u00b7 {layer}" if title and title != layer else layer
