"""Building a spec's network: `torchvision:NAME`, `timm:NAME`, or a user's `package.module:callable`.

Trust: a spec is code. Its `builder` names a callable that is imported and called, exactly like running a
Python file, so only load specs you would run. DeepVis only makes sure the callable is what it says (it exists,
takes `pretrained`, returns an `nn.Module`) and never imports it from the current directory (see `import_builder`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from typing import Any

from torch import nn

from ..errors import DeepVisError
from .libraries import build_timm, build_torchvision
from .specs import ModelSpec


def import_builder(spec: ModelSpec) -> Any:
    """Import a spec's builder callable and check it is one: exists, callable, takes `pretrained`.

    Where modules come from is Python's `sys.path`. `python -m deepvis_app` (how torchrun starts us) would put
    the current directory first, so a stray `./evilplug.py` named by a spec would run; `__main__` drops that
    entry (the `deepvis` script never has it). A spec is code, trusted like code: see docs/models.md.
    """
    module_name, _, attr = spec.builder.partition(":")
    where = f"{spec.where}: field 'builder'"
    top = module_name.split(".")[0]
    if top not in sys.modules:
        try:
            found = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise DeepVisError(f"{where}: no installed module {top!r} (builder {spec.builder!r})")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise DeepVisError(f"{where}: cannot import {module_name!r} ({err})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise DeepVisError(f"{where}: module {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise DeepVisError(f"{where}: {spec.builder!r} is not callable")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = None
    if params is not None and "pretrained" not in params and \
            not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise DeepVisError(f"{where}: {spec.builder!r} does not take a 'pretrained' argument "
                           "(a builder is called as builder(pretrained=True|False))")
    return fn


def build(spec: ModelSpec, pretrained: bool) -> nn.Module:
    """The spec's network, with its pretrained weights or freshly initialized (seed torch first for that)."""
    source, _, target = spec.builder.partition(":")
    if source == "torchvision":
        return build_torchvision(spec, target, pretrained)
    if source == "timm":
        return build_timm(spec, target, pretrained)
    fn = import_builder(spec)
    try:
        net = fn(pretrained=pretrained)
    except DeepVisError:
        raise
    except Exception as err:  # noqa: BLE001 - a user's builder may fail in any way; say so in one line
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise DeepVisError(f"{spec.where}: builder {spec.builder!r} failed: {type(err).__name__}: {first}") from None
    if not isinstance(net, nn.Module):
        raise DeepVisError(f"{spec.where}: field 'builder': {spec.builder!r} returned {type(net).__name__}, "
                           "not a torch.nn.Module")
    return net


# ---- the classifier head -----------------------------------------------------------------------------------------


def head_modules(net: nn.Module) -> list[str]:
    """Module names of the classifier head(s): timm's `get_classifier()` (DeiT's head and head_dist), else the last
    Linear or convolution registered (torchvision's fc / classifier.N / heads.head, SqueezeNet's 1x1 conv)."""
    names = {id(m): n for n, m in net.named_modules()}
    if hasattr(net, "reset_classifier") and hasattr(net, "get_classifier"):
        heads = net.get_classifier()
        found = [names[id(m)] for m in (heads if isinstance(heads, tuple | list) else (heads,))
                 if isinstance(m, nn.Module) and id(m) in names]
        if found:
            return [n for n in found if n]
    last = None
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d | nn.Conv1d):
            last = name
    return [last] if last else []


def head_size(net: nn.Module) -> int | None:
    """How many classes the classifier head puts out (None when there is no recognizable head)."""
    heads = head_modules(net)
    if not heads:
        return None
    module = net.get_submodule(heads[0])
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if weight is not None else getattr(module, "out_features", None)


def rebuild_head(net: nn.Module, n: int) -> list[str]:
    """Give `net` a fresh classifier head for `n` classes (timm: `reset_classifier`); returns the heads' names."""
    heads = head_modules(net)
    if hasattr(net, "reset_classifier") and hasattr(net, "get_classifier"):
        net.reset_classifier(n)
        return head_modules(net)
    for name in heads:
        old = net.get_submodule(name)
        if isinstance(old, nn.Linear):
            new: nn.Module = nn.Linear(old.in_features, n, bias=old.bias is not None)
        elif isinstance(old, nn.Conv2d | nn.Conv1d):
            new = type(old)(old.in_channels, n, old.kernel_size, stride=old.stride, padding=old.padding,
                            dilation=old.dilation, groups=1, bias=old.bias is not None)
        else:
            raise DeepVisError(f"cannot rebuild the classifier head {name!r} ({type(old).__name__})")
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, new)
    return heads
