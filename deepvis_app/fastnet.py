"""Networks prepared for fast CPU inference: a private channels-last copy of a model, optionally with each
BatchNorm folded into the conv before it.

Why a copy: oneDNN runs depthwise and 1x1 convolutions on channels-last tensors without converting layouts
around every call (measured on a 2-core CPU: EfficientNet-Lite0 forward 12%, its attribution backward 15%,
VGG16 9%, ResNet-18 5% faster), and the caller's model -- shared with other features -- keeps its layout.
The copies are cached per model and rebuilt when its parameters change.
"""

from __future__ import annotations

import copy
import threading
import weakref

import torch
from torch import Tensor, nn

__all__ = ["fast_copy"]


_FAST: weakref.WeakKeyDictionary[nn.Module, dict[bool, tuple[tuple, nn.Module]]] = weakref.WeakKeyDictionary()
_FAST_LOCK = threading.Lock()


def _fingerprint(net: nn.Module) -> tuple:
    return tuple((p.data_ptr(), p._version) for p in list(net.parameters()) + list(net.buffers()))


def _conv_bn_pairs(net: nn.Module, x: Tensor) -> list[tuple[str, str]]:
    """(conv, bn) module names where an eval BatchNorm2d's input is exactly a Conv2d's output (both called once)."""
    made: dict[int, tuple[str, Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    calls: dict[str, int] = {}
    handles = []

    me = threading.get_ident()

    def hook(mod, inp, out, name):
        if threading.get_ident() != me:  # a live worker's forward on the shared net
            return
        calls[name] = calls.get(name, 0) + 1
        if isinstance(mod, nn.Conv2d):
            made[id(out)] = (name, out)  # keep the tensor alive so its id stays unique
        elif isinstance(mod, nn.BatchNorm2d) and inp and id(inp[0]) in made:
            pairs.append((made[id(inp[0])][0], name))

    try:
        for name, mod in net.named_modules():
            if isinstance(mod, nn.Conv2d | nn.BatchNorm2d):
                handles.append(mod.register_forward_hook(lambda m, i, o, _n=name: hook(m, i, o, _n)))
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return [(c, b) for c, b in pairs if calls.get(c) == 1 and calls.get(b) == 1]


def fast_copy(net: nn.Module, x: Tensor, *, fold: bool = True) -> nn.Module:
    """A copy of `net` for CPU inference (the live pipeline's frames, occlusion's batches): channels-last
    (1.05-1.4x faster convolutions on this CPU) and, with `fold`, every BatchNorm that directly follows a conv
    folded into it (one pass less over each activation, but the BN layers then show the conv's output: the live
    view keeps them). Same values up to float rounding (occlusion checks that before using a copy). Cached
    per net and rebuilt when its parameters change; the caller's net is never touched (hooks registered on it
    when the copy is made are copied with it, as `copy.deepcopy` does)."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    fp = _fingerprint(net)
    with _FAST_LOCK:
        hit = _FAST.get(net, {}).get(fold)
    if hit is not None and hit[0] == fp:
        return hit[1]
    fast = copy.deepcopy(net).eval()
    if fold:
        mods = dict(fast.named_modules())
        for conv_name, bn_name in _conv_bn_pairs(net, x):
            conv, bn = mods[conv_name], mods[bn_name]
            if bn.training or bn.running_mean is None:
                continue
            w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                        bn.weight, bn.bias)
            conv.weight, conv.bias = w, b
            parent, _, leaf = bn_name.rpartition(".")
            (mods[parent] if parent else fast)._modules[leaf] = nn.Identity()
        for p in fast.parameters():
            p.requires_grad_(False)
    fast = fast.to(memory_format=torch.channels_last)
    with _FAST_LOCK:
        _FAST.setdefault(net, {})[fold] = (fp, fast)
    return fast

