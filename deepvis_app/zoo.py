"""The model registry: specs (TOML) carrying builder, weights, preprocessing, labels and shown layers together.

Curated specs ship as package data (`deepvis_app/models/`, read through `importlib.resources`); `--model` also
takes a path to a user's own spec file. `load_model` returns a `VisModel`, the one object the rest of DeepVis
needs to know about a network.

Trust: a spec is code. Its `builder` names a callable that is imported and called, exactly like running a
Python file, so only load specs you would run. DeepVis only makes sure the callable is what it says (it exists,
takes `pretrained`, returns an `nn.Module`) and never imports it from the current directory (see `_import_builder`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import shutil
import sys
import tempfile
import tomllib
import urllib.request
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .devices import resolve_device
from .errors import DeepVisError, WeightsMissingError
from .fileio import FILE_MODE, fsync_dir
from .probe import LayerInfo, layer_table, unknown_layer_message
from .resources import models_dir
from .sources import fit_image

DEFAULT_MODEL = "efficientnet_lite0"
_CROPS = ("center", "stretch")
# Largest input side a spec may ask for: probing allocates every layer's activations at this size, and 2048^2
# already means several GB for a VGG; a typo like 100000 must be refused before anything is allocated.
MAX_INPUT_SIZE = 2048
DOWNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class LayerSpec:
    name: str
    title: str


def _short_title(title: str) -> str:
    """"block 3 (40 @ 28x28)" -> "block 3": the title without its shape note."""
    return title.split(" (")[0] if title.endswith(")") else title


@dataclass(frozen=True)
class ModelSpec:
    """A validated model spec; see `models/*.toml` and docs/models.md for the fields."""

    name: str
    title: str
    builder: str
    weights: str
    input_size: int
    resize: int
    crop: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    labels: str
    layers: tuple[LayerSpec, ...] = ()
    default_layer: str | None = None
    path: Path | None = None


def available_models() -> list[str]:
    """Names of the curated specs."""
    return sorted(p.stem for p in models_dir().glob("*.toml"))


def find_spec(name_or_path: str | os.PathLike) -> Path:
    """Resolve a curated model name or a spec file path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not text.strip():
        raise DeepVisError("--model is empty; give a curated model name or a path to a .toml spec")
    if text.endswith(".toml") or os.sep in text or (os.altsep and os.altsep in text):
        if path.is_dir():
            raise DeepVisError(f"model spec is a directory, not a file: {path}")
        if not path.is_file():
            raise DeepVisError(f"model spec file not found: {path}")
        return path
    curated = models_dir() / f"{text}.toml"
    if curated.is_file():
        return curated
    raise DeepVisError(f"unknown model {text!r}; curated models: {', '.join(available_models())} "
                       "(or pass a path to a .toml spec)")


def read_spec(path: Path) -> ModelSpec:
    """Parse and validate one spec file; every problem names the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DeepVisError(f"{path}: cannot read model spec ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise DeepVisError(f"{path}: not a text file (a model spec is TOML)") from None
    except tomllib.TOMLDecodeError as err:
        raise DeepVisError(f"{path}: not valid TOML ({err})") from None

    def need(key: str, kind: type, default: Any = ...) -> Any:
        if key not in data:
            if default is ...:
                raise DeepVisError(f"{path}: missing field '{key}'")
            return default
        value = data[key]
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise DeepVisError(f"{path}: field '{key}' must be {kind.__name__}, got {value!r}")
        return value

    def triple(key: str, default: list[float]) -> tuple[float, float, float]:
        value = need(key, list, default)
        if len(value) != 3 or not all(isinstance(v, int | float) for v in value):
            raise DeepVisError(f"{path}: field '{key}' must be a list of 3 numbers, got {value!r}")
        if key == "std" and any(v <= 0 for v in value):
            raise DeepVisError(f"{path}: field 'std' must be positive, got {value!r}")
        return tuple(float(v) for v in value)  # type: ignore[return-value]

    if not data:
        raise DeepVisError(f"{path}: empty model spec (needs at least 'builder' and 'input_size')")
    builder = need("builder", str)
    module_name, _, attr = builder.partition(":")
    if not _valid_builder(module_name, attr):
        raise DeepVisError(f"{path}: field 'builder' must look like 'torchvision:NAME' or 'package.module:callable', "
                           f"got {builder!r}")
    input_size = need("input_size", int)
    if not 8 <= input_size <= MAX_INPUT_SIZE:
        raise DeepVisError(f"{path}: field 'input_size' must be between 8 and {MAX_INPUT_SIZE}, got {input_size}")
    resize = need("resize", int, input_size)
    if not 8 <= resize <= 4 * MAX_INPUT_SIZE:
        raise DeepVisError(f"{path}: field 'resize' must be between 8 and {4 * MAX_INPUT_SIZE}, got {resize}")
    crop = need("crop", str, "center")
    if crop not in _CROPS:
        raise DeepVisError(f"{path}: field 'crop' must be one of {', '.join(_CROPS)}, got {crop!r}")
    layers = []
    for i, entry in enumerate(need("layers", list, [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise DeepVisError(f"{path}: field 'layers[{i}]' needs a string 'name'")
        layers.append(LayerSpec(entry["name"], str(entry.get("title", entry["name"]))))
    return ModelSpec(
        name=need("name", str, path.stem),
        title=need("title", str, path.stem),
        builder=builder,
        weights=need("weights", str, "default"),
        input_size=input_size,
        resize=resize,
        crop=crop,
        mean=triple("mean", [0.485, 0.456, 0.406]),
        std=triple("std", [0.229, 0.224, 0.225]),
        labels=need("labels", str, "imagenet"),
        layers=tuple(layers),
        default_layer=need("default_layer", str, None),
        path=path,
    )


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (offline)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _load_labels(spec: ModelSpec) -> list[str]:
    if spec.labels == "imagenet":
        return imagenet_categories()
    if spec.labels in ("", "none"):
        return []
    path = Path(spec.labels)
    if not path.is_absolute() and spec.path is not None:
        path = spec.path.parent / path
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as err:
        raise DeepVisError(f"{spec.path}: field 'labels': cannot read {path} ({err.strerror})") from None


def _torchvision_weights(spec: ModelSpec, arch: str):
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError):
        raise DeepVisError(f"{spec.path}: field 'builder': torchvision has no model {arch!r}") from None
    key = spec.weights.split(".")[-1]
    if key in ("default", "DEFAULT"):
        return enum.DEFAULT
    try:
        return enum[key]
    except KeyError:
        valid = ", ".join(w.name for w in enum)
        raise DeepVisError(f"{spec.path}: field 'weights': {spec.weights!r} is not one of {valid}") from None


def _ensure_cached(url: str, arch: str, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Make sure torchvision's weight file is in the hub cache; one clear line when it cannot be had.

    Called from GUI job threads too, so it touches no process-wide state (no default socket timeout, no stderr
    redirection): the download has its own timeout and goes to a temp file renamed into place when complete.
    """
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    filename = url.rsplit("/", 1)[-1]
    target = checkpoints / filename
    if target.is_file():
        return
    hint = f"weights for {arch} are not cached: download {url} and put {filename} in {checkpoints}"
    if os.environ.get("DEEPVIS_OFFLINE"):
        raise WeightsMissingError(hint)
    tmp = None
    try:
        checkpoints.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - torchvision's own URL
            fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=checkpoints)
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
        tmp = None
        fsync_dir(checkpoints)
    except Exception:  # noqa: BLE001 - any network or disk failure means the same thing to the user
        raise WeightsMissingError(hint + " (download failed: no network?)") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _valid_builder(module_name: str, attr: str) -> bool:
    """`torchvision:NAME` or `pkg.module:callable`: absolute dotted identifiers only (no '', '..x', 'a b')."""
    parts = module_name.split(".")
    return bool(attr) and attr.isidentifier() and all(part.isidentifier() for part in parts)


def _import_builder(spec: ModelSpec) -> Any:
    """Import a spec's builder callable and check it is one: exists, callable, takes `pretrained`.

    Where modules come from is Python's `sys.path`. `python -m deepvis_app` (how torchrun starts us) would put
    the current directory first, so a stray `./evilplug.py` named by a spec would run; `__main__` drops that
    entry (the `deepvis` script never has it). A spec is code, trusted like code: see docs/models.md.
    """
    module_name, _, attr = spec.builder.partition(":")
    where = f"{spec.path}: field 'builder'"
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


def _build(spec: ModelSpec, pretrained: bool) -> nn.Module:
    source, _, target = spec.builder.partition(":")
    if source == "torchvision":
        from torchvision import models as tvm

        weights = _torchvision_weights(spec, target) if pretrained else None
        if weights is not None:
            _ensure_cached(weights.url, target)
        # The file is cached above (our own download, our own error line): torchvision's "Downloading: ..." and
        # progress bar would only be noise on stderr.
        kwargs: dict[str, Any] = {"progress": False}
        if target in ("googlenet", "inception_v3"):
            kwargs["aux_logits"] = False if weights is None else None  # aux heads are training-only
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
        try:
            return tvm.get_model(target, weights=weights, **kwargs)
        except ValueError:
            raise DeepVisError(f"{spec.path}: field 'builder': torchvision has no model {target!r}") from None
    fn = _import_builder(spec)
    try:
        net = fn(pretrained=pretrained)
    except DeepVisError:
        raise
    except Exception as err:  # noqa: BLE001 - a user's builder may fail in any way; say so in one line
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise DeepVisError(f"{spec.path}: builder {spec.builder!r} failed: {type(err).__name__}: {first}") from None
    if not isinstance(net, nn.Module):
        raise DeepVisError(f"{spec.path}: field 'builder': {spec.builder!r} returned {type(net).__name__}, "
                           "not a torch.nn.Module")
    return net


def _load_state_dict_file(net: nn.Module, path: Path) -> None:
    """Load user weights safely: `weights_only=True` never unpickles code."""
    if not path.is_file():
        raise DeepVisError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DeepVisError(f"{path}: not a PyTorch state dict ({first[:160]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DeepVisError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = net.state_dict()
    if not set(state) & set(own):
        raise DeepVisError(f"{path}: no parameter name matches this model (e.g. {next(iter(state), '?')!r})")
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise DeepVisError(f"{path}: does not fit this model: {len(wrong)} tensors have the wrong shape "
                           f"(first: {k!r} is {tuple(state[k].shape)}, the model has {tuple(own[k].shape)})")
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise DeepVisError(f"{path}: does not fit this model: {len(result.missing_keys)} missing, "
                           f"{len(result.unexpected_keys)} unexpected keys "
                           f"(first: {(result.missing_keys + result.unexpected_keys)[0]!r})")


class Preprocessor:
    """RGB uint8 HxWx3 -> normalized Tensor[1,3,S,S] on the model's device.

    Crop and resize run in OpenCV on the host (one pass); the uint8 image crosses to the GPU through a pair
    of pinned buffers with a non-blocking copy, and normalization runs on the device.
    """

    def __init__(self, spec: ModelSpec, device: torch.device) -> None:
        self.size = spec.input_size
        self.crop = spec.crop
        self.device = device
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0)
        self._pinned: list[torch.Tensor] = []
        self._turn = 0
        if device.type == "cuda":
            self._pinned = [torch.empty((self.size, self.size, 3), dtype=torch.uint8).pin_memory() for _ in range(2)]

    def fit(self, rgb: np.ndarray, crop: str | None = None) -> np.ndarray:
        """Crop/resize to the network's input as uint8 HxWx3: the frame exactly as the network sees it."""
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise DeepVisError(f"expected an RGB uint8 image of shape HxWx3, got {getattr(rgb, 'shape', rgb)!r}")
        return fit_image(rgb, self.size, crop or self.crop)

    def to_tensor(self, fitted: np.ndarray) -> torch.Tensor:
        """Normalize an already fitted uint8 image on the device."""
        host = torch.from_numpy(fitted)
        if self._pinned:
            buf = self._pinned[self._turn]
            self._turn ^= 1
            buf.copy_(host)
            host = buf.to(self.device, non_blocking=True)
        else:
            host = host.to(self.device)
        x = host.permute(2, 0, 1).unsqueeze(0).float()
        return (x - self.mean) * self.inv_std

    def __call__(self, rgb: np.ndarray, crop: str | None = None) -> torch.Tensor:
        return self.to_tensor(self.fit(rgb, crop))

    def deprocess(self, x: torch.Tensor) -> np.ndarray:
        """Inverse of normalization: Tensor[1,3,H,W] -> uint8 HxWx3 (clipped), e.g. for optimized images."""
        img = (x.detach()[:1] / self.inv_std + self.mean).clamp(0, 255).round().to(torch.uint8)
        return img[0].permute(1, 2, 0).cpu().numpy()


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
    _table: list[LayerInfo] | None = field(default=None, repr=False)

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

    def info(self, layer: str) -> LayerInfo:
        """Kind and shape of a layer; a bare name of a reused module means its last call."""
        calls = [i for i in self.layer_info if i.name == layer or i.name.partition("@")[0] == layer]
        exact = [i for i in calls if i.name == layer]
        if exact:
            return exact[0]
        if calls:
            return LayerInfo(layer, calls[-1].kind, calls[-1].shape)
        raise DeepVisError(self.unknown_layer(layer))

    def unknown_layer(self, layer: str) -> str:
        """One line for a layer the model does not have: the curated titles first (what the window shows), then
        the module names."""
        titles = ", ".join(f"{_short_title(ls.title)!r} ({ls.name})" for ls in self.shown_layers)
        rest = unknown_layer_message(layer, self.layers)
        return rest.replace("; valid layers: ", f"; curated: {titles}; all layers: ", 1) if titles else rest

    def resolve_layer(self, text: str) -> str:
        """A layer given as its module name or as the title the window shows ("block 3", case-insensitive)."""
        names = set(self.layers) | {n.partition("@")[0] for n in self.layers}
        if text in names:
            return text
        wanted = text.strip().lower()
        for ls in self.shown_layers:
            if wanted in (ls.title.lower(), _short_title(ls.title).lower()):
                return ls.name
        raise DeepVisError(self.unknown_layer(text))

    @property
    def shown_layers(self) -> list[LayerSpec]:
        known = set(self.layers) | {n.partition("@")[0] for n in self.layers}
        return [ls for ls in self.spec.layers if ls.name in known]

    @property
    def default_layer(self) -> str:
        if self.spec.default_layer:
            return self.spec.default_layer
        shown = self.shown_layers
        return shown[len(shown) // 2].name if shown else self.layers[len(self.layers) // 2]


def load_model(name_or_spec: str | os.PathLike = DEFAULT_MODEL, *, weights: str = "default",
               device: str | torch.device = "auto", seed: int = 0) -> VisModel:
    """Load a curated model by name (see `models/`) or from a spec file path.

    weights: `"default"` (the spec's pretrained weights), `"random"` (seeded initialization, to compare a
    trained and an untrained net), or a path to a state dict (loaded with `weights_only=True`).
    device: `"auto"` (CUDA if available), `"cpu"`, `"cuda"` or `"cuda:N"`.
    Every user error raises `DeepVisError` with a one-line message.
    """
    spec = read_spec(find_spec(name_or_spec))
    dev = resolve_device(device)
    if weights == "random":
        torch.manual_seed(seed)
        net = _build(spec, pretrained=False)
    elif weights == "default":
        net = _build(spec, pretrained=True)
    else:
        net = _build(spec, pretrained=False)
        _load_state_dict_file(net, Path(weights).expanduser())
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    net.to(dev)
    return VisModel(spec=spec, net=net, device=dev, categories=_load_labels(spec),
                    preprocess=Preprocessor(spec, dev), weights=weights)
