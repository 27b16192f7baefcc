"""A user's own weights: state dicts as training loops save them, TorchScript files and safetensors.

No pickled code ever runs: `torch.load(..., weights_only=True)` (tensors and plain containers only), TorchScript's
own restricted loader (and only its tensors are used: the network is always the spec's architecture, so every layer
can be probed), and safetensors (no pickle at all). A checkpoint whose classifier head has another number of classes
than the architecture's gets a head of its size; anything else that does not fit is one line naming the mismatch.
"""

from __future__ import annotations

import argparse
import json
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DeepVisError
from .build import head_modules, rebuild_head
from .specs import read_labels_file

# Where training loops put the weights inside a checkpoint dict, in order of preference (the live model before
# its EMA copy; Lightning, timm's train.py, torchvision's references, plain loops).
STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "state_dict_ema", "model_ema",
              "ema")
LABEL_KEYS = ("labels", "classes", "class_names", "categories", "names")
# Wrappers that prefix every parameter name: DistributedDataParallel / DataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Training-only auxiliary classifiers (GoogLeNet, Inception v3) that DeepVis builds without.
AUX_MODULES = ("aux1", "aux2", "AuxLogits")
_SAFE_GLOBALS_ADDED = False


@dataclass
class Checkpoint:
    """Tensors read from a weights file, with the class names stored in it (if any)."""

    path: Path
    state: dict[str, torch.Tensor]
    labels: list[str] | None
    kind: str  # "state dict", "TorchScript", "safetensors"


@dataclass
class Fitted:
    """What loading a checkpoint changed: the classifier heads rebuilt for `classes` classes (else empty)."""

    heads: list[str]
    classes: int | None = None
    architecture_classes: int | None = None


def _first_line(err: BaseException) -> str:
    return ((str(err).strip().splitlines() or [type(err).__name__])[0])[:160]


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] < 100_000_000


def _labels_from(value: Any) -> list[str] | None:
    """Class names as a checkpoint may hold them: a list of names, ImageFolder's class_to_idx, or idx_to_class."""
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    if isinstance(value, dict) and value:
        if all(isinstance(k, str) for k in value) and all(isinstance(v, int) for v in value.values()):
            by_index = {v: k for k, v in value.items()}
            if sorted(by_index) == list(range(len(value))):
                return [by_index[i] for i in range(len(value))]
        if all(isinstance(k, int) for k in value) and all(isinstance(v, str) for v in value.values()):
            if sorted(value) == list(range(len(value))):
                return [value[i] for i in range(len(value))]
    return None


def _labels_in(obj: dict) -> list[str] | None:
    for key in (*LABEL_KEYS, "class_to_idx", "idx_to_class"):
        if key in obj:
            found = _labels_from(obj[key])
            if found:
                return found
    return None


def _unwrap(obj: Any, depth: int = 0) -> tuple[dict[str, torch.Tensor] | None, list[str] | None]:
    """The state dict inside what a training loop saved ({'model': sd, 'epoch': 3}, {'state_dict': sd}, ...)."""
    if not isinstance(obj, dict):
        return None, None
    labels = _labels_in(obj)
    if depth < 2:
        for key in STATE_KEYS:
            if isinstance(obj.get(key), dict):
                state, inner = _unwrap(obj[key], depth + 1)
                if state:
                    return state, labels or inner
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return (tensors or None), labels


def _numpy_scalar_types() -> list[Any]:
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")] if hasattr(np, "dtypes") else []
    return [scalar, np.dtype, *dtypes]


def _torch_load(path: Path) -> Any:
    global _SAFE_GLOBALS_ADDED
    if not _SAFE_GLOBALS_ADDED:
        # Plain data that training loops store beside the weights, rebuilt without running code: timm's train.py
        # keeps its argparse.Namespace, many loops a numpy scalar (best accuracy) with its dtype.
        torch.serialization.add_safe_globals([argparse.Namespace, *_numpy_scalar_types()])
        _SAFE_GLOBALS_ADDED = True
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        text = str(err)
        marker = "Unsupported global: GLOBAL "
        if marker in text:
            name = text.split(marker, 1)[1].split()[0].rstrip(".,:")
            raise DeepVisError(f"{path}: holds a pickled {name}, which DeepVis never unpickles (weights are read "
                               "with weights_only=True): save model.state_dict(), or a .safetensors file") from None
        raise DeepVisError(f"{path}: not a PyTorch state dict ({_first_line(err)})") from None


def _read_torchscript(path: Path) -> Checkpoint:
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning)
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # noqa: BLE001 - a broken archive can fail in many ways
        raise DeepVisError(f"{path}: not a TorchScript file DeepVis can read ({_first_line(err)})") from None
    state = {k: v.detach() for k, v in scripted.state_dict().items()}
    labels = _labels_from(getattr(scripted, "labels", None))
    return Checkpoint(path, state, labels, "TorchScript")


def _read_safetensors(path: Path) -> Checkpoint:
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError:
        raise DeepVisError(f"{path}: reading .safetensors needs the safetensors package: "
                           "pip install 'deepvis[models]' (or: pip install safetensors)") from None
    try:
        state = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise DeepVisError(f"{path}: not a safetensors file DeepVis can read ({_first_line(err)})") from None
    labels = None
    for key in LABEL_KEYS:
        if key in meta:
            try:
                labels = _labels_from(json.loads(meta[key]))
            except ValueError:
                labels = [line.strip() for line in meta[key].splitlines() if line.strip()] or None
            break
    return Checkpoint(path, state, labels, "safetensors")


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a weights file of any accepted kind; one line for anything else."""
    if not path.exists():
        raise DeepVisError(f"weights file not found: {path}")
    if path.is_dir():
        raise DeepVisError(f"weights file is a folder, not a file: {path}")
    if _is_torchscript(path):
        return _read_torchscript(path)
    if _is_safetensors(path):
        return _read_safetensors(path)
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise DeepVisError(f"{path}: not a state dict (expected a mapping of parameter names to tensors, "
                           f"got {type(obj).__name__})")
    state, labels = _unwrap(obj)
    if not state:
        keys = ", ".join(str(k) for k in list(obj)[:6])
        raise DeepVisError(f"{path}: not a state dict: no tensors found (expected parameter names to tensors, or "
                           f"one under 'model' or 'state_dict'; its keys: {keys})")
    return Checkpoint(path, state, labels, "state dict")


def labels_beside(path: Path) -> tuple[list[str], Path] | None:
    """Class names stored beside a checkpoint: `ck.pt` -> `ck.labels.txt`."""
    beside = path.with_name(path.name.rsplit(".", 1)[0] + ".labels.txt") if "." in path.name else \
        path.with_name(path.name + ".labels.txt")
    if beside.is_file():
        return read_labels_file(beside, what="labels"), beside
    return None


def _align_prefix(state: dict[str, torch.Tensor], own: set[str]) -> dict[str, torch.Tensor]:
    """Drop the prefixes wrappers add (`module.` from DDP, `_orig_mod.` from torch.compile, or one shared first
    name such as Lightning's `model.`) while that makes more names match the model."""
    for _ in range(4):
        matched = len(own.intersection(state))
        candidates = [p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)]
        firsts = {k.split(".", 1)[0] for k in state}
        if len(firsts) == 1 and all("." in k for k in state):
            candidates.append(next(iter(firsts)) + ".")
        best = None
        for prefix in candidates:
            stripped = {k.removeprefix(prefix): v for k, v in state.items()}
            if len(own.intersection(stripped)) > matched:
                best, matched = stripped, len(own.intersection(stripped))
        if best is None:
            return state
        state = best
    return state


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def load_checkpoint(net: nn.Module, ck: Checkpoint, model: str) -> Fitted:
    """Load `ck` into `net` (the spec's architecture), rebuilding the classifier head when only its class count
    differs; one line naming the mismatch (a few names, and counts) when the file is of another architecture."""
    own = net.state_dict()
    state = _align_prefix(ck.state, set(own))
    if not set(state) & set(own):
        raise DeepVisError(f"{ck.path}: no parameter name matches this model (e.g. {next(iter(state), '?')!r}; "
                           f"{model} has e.g. {next(iter(own), '?')!r})")
    fitted = Fitted([])
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    heads = head_modules(net)
    head_keys = {k for k in own for h in heads if k.startswith(h + ".")}
    if wrong and heads and set(wrong) <= head_keys:
        weight = state.get(heads[0] + ".weight")
        mine = own.get(heads[0] + ".weight")
        if weight is not None and mine is not None and weight.shape[1:] == mine.shape[1:]:
            fitted = Fitted(rebuild_head(net, int(weight.shape[0])), int(weight.shape[0]), int(mine.shape[0]))
            own = net.state_dict()
            wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    aux = tuple(m + "." for m in AUX_MODULES)
    unexpected = [k for k in state if k not in own and not (k.startswith(aux) and not any(o.startswith(aux)
                                                                                           for o in own))]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if wrong or unexpected or missing:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} tensors of another shape ({_few(wrong)}; {k} is {tuple(state[k].shape)} in "
                         f"the file, {tuple(own[k].shape)} in the model)")
        if missing:
            parts.append(f"{len(missing)} of the model's {len(own)} tensors missing from the file ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} of the file's {len(state)} tensors unknown to the model "
                         f"({_few(unexpected)})")
        many = len(wrong) + len(missing) + len(unexpected) >= max(3, len(own) // 10)
        guess = " - a checkpoint of another architecture?" if many else ""
        raise DeepVisError(f"{ck.path}: does not fit {model}: {'; '.join(parts)}{guess}")
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return fitted
