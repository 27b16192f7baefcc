"""Counting, on the CPU, the reads a GPU would make the host wait for: `.cpu()`, `.item()`, `float(t)`, `.tolist()`,
`nonzero`, a boolean mask... (each one, on CUDA, blocks the host until the device has caught up). `.numpy()` is
not one: code that runs on a GPU calls `.cpu()` first, and on the CPU it costs nothing. Nor is `.to(device)`: on
the CPU a read-back `.to("cpu")` and an upload `.to(model.device)` look the same, so read back with `.cpu()`.

`HostReads` is a TorchFunctionMode: inside it every such call on a tensor that is not already a host copy is
recorded (by name). Results of `.cpu()` / `.to("cpu")` and everything computed from host copies only are host
copies themselves, so `x.cpu().tolist()` counts once. It runs anywhere, so a test can fail on the CPU when a
read is added to a path that must not wait (the live frame, an optimizer step); tests/gpu checks the real syncs
with `torch.cuda.set_sync_debug_mode`.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

READS = {"cpu", "item", "tolist", "__float__", "__int__", "__bool__", "__index__", "nonzero",
         "argwhere", "masked_select", "unique", "unique_consecutive", "repeat_interleave"}


def _to_cpu(name: str, args: tuple, kwargs: dict) -> bool:
    if name != "to":
        return False
    for a in (*args[1:], kwargs.get("device")):
        if isinstance(a, str | torch.device) and torch.device(a).type == "cpu":
            return True
    return False


# Callers whose reads are of host tensors by design: torch's optimizers keep their step count on the CPU.
HOST_BY_DESIGN = (f"torch{os.sep}optim{os.sep}",)


class HostReads(TorchFunctionMode):
    """`with HostReads() as reads: ...` then `reads.calls` (names, in order) and `len(reads)`."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self._host = WeakIdKeyDictionary()

    @staticmethod
    def _by_design() -> bool:
        caller = sys._getframe(2).f_code.co_filename
        return any(part in caller for part in HOST_BY_DESIGN)

    def __len__(self) -> int:
        return len(self.calls)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)]
        from_host = bool(tensors) and all(t in self._host for t in tensors)
        first = args[0] if args and isinstance(args[0], Tensor) else None
        if first is not None and first not in self._host and not self._by_design():
            repeats = kwargs.get("repeats", args[1] if len(args) > 1 else None)
            if name in READS and (name != "repeat_interleave" or isinstance(repeats, Tensor)):
                self.calls.append(name)  # (repeat_interleave reads only tensor repeats, to size its output)
            elif name == "__getitem__" and len(args) > 1 and _bool_index(args[1]):
                self.calls.append("mask index")
        out = func(*args, **kwargs)
        if from_host or name == "cpu" or _to_cpu(name, args, kwargs):
            for t in tree_flatten(out)[0]:
                if isinstance(t, Tensor):
                    self._host[t] = True
        return out


def _bool_index(index: object) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, Tensor) and i.dtype == torch.bool for i in items)
