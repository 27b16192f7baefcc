"""Model specs: the TOML files (curated ones ship as package data) and the specs made for `timm:NAME` /
`torchvision:NAME` without a file. A spec says how to build a network, which weights, how frames are fitted and
normalized, where class names come from and which layers to offer first.

Every problem is one line naming the file and the field (`DeepVisError`), before anything is built.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import DeepVisError
from ..probe import unknown_layer_message
from ..resources import models_dir

DEFAULT_MODEL = "efficientnet_lite0"
CROPS = ("center", "stretch")
# How a fitted crop is resized to the input side. "area" is DeepVis's own (OpenCV's area average when shrinking,
# bilinear when growing); the others are torchvision's / timm's modes, antialiased as their eval transforms are.
INTERPOLATIONS = ("area", "bilinear", "bicubic", "nearest")
# Largest input side a spec may ask for: probing allocates every layer's activations at this size, and 2048^2
# already means several GB for a VGG; a typo like 100000 must be refused before anything is allocated.
MAX_INPUT_SIZE = 2048
# Model names that come from a library rather than a spec file: `timm:NAME`, `torchvision:NAME`.
LIBRARIES = ("timm", "torchvision")


@dataclass(frozen=True)
class LayerSpec:
    name: str
    title: str


@dataclass(frozen=True)
class ModelSpec:
    """A validated model spec; see `models/*.toml` and docs/models.md for the fields.

    `crop_pct` is the fraction of the centred square (or, with `crop = "stretch"`, of each side) that the network
    sees, as timm's `crop_pct` (224/256 = 0.875: "resize to 256, crop 224"); `interpolation` how it is resized.
    """

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
    crop_pct: float = 1.0
    interpolation: str = "area"

    @property
    def where(self) -> str:
        """How errors name this spec: its file, or the library name it was made for."""
        return str(self.path) if self.path is not None else self.name


def short_title(title: str) -> str:
    """"block 3 (40 @ 28x28)" -> "block 3": the title without its shape note."""
    return title.split(" (")[0] if title.endswith(")") else title


def available_models() -> list[str]:
    """Names of the curated specs."""
    return sorted(p.stem for p in models_dir().glob("*.toml"))


def library_name(text: str) -> tuple[str, str] | None:
    """("timm", "convnext_tiny") for "timm:convnext_tiny"; None for a curated name or a spec path."""
    library, sep, name = text.partition(":")
    if not sep or library not in LIBRARIES or text.endswith(".toml") or os.sep in name or \
            (os.altsep and os.altsep in name):
        return None
    return library, name.strip()


def find_spec(name_or_path: str | os.PathLike) -> Path:
    """Resolve a curated model name or a spec file path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not text.strip():
        raise DeepVisError("model is empty; give a curated model name, timm:NAME, torchvision:NAME or a path to "
                           "a .toml spec")
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
                       "(or timm:NAME, torchvision:NAME, or a path to a .toml spec)")


def curated_for(builder: str) -> Path | None:
    """The curated spec built by `builder` ("torchvision:resnet18" -> resnet18.toml), so that a model named by its
    library still gets its curated layers and titles."""
    for path in sorted(models_dir().glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if data.get("builder") == builder:
            return path
    return None


def _valid_builder(module_name: str, attr: str) -> bool:
    """`torchvision:NAME`, `timm:NAME[.tag]` or `pkg.module:callable`: absolute dotted identifiers only."""
    parts = module_name.split(".")
    if module_name == "timm":
        return bool(attr) and all(part.replace("-", "_").isidentifier() for part in attr.split("."))
    return bool(attr) and attr.isidentifier() and all(part.isidentifier() for part in parts)


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
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise DeepVisError(f"{path}: field '{key}' must be {kind.__name__}, got {value!r}")
        return value

    def triple(key: str, default: list[float]) -> tuple[float, float, float]:
        value = need(key, list, default)
        if len(value) != 3 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise DeepVisError(f"{path}: field '{key}' must be a list of 3 numbers, got {value!r}")
        if not all(math.isfinite(v) for v in value):
            raise DeepVisError(f"{path}: field '{key}' must be finite numbers, got {value!r}")
        if key == "std" and any(v <= 0 for v in value):
            raise DeepVisError(f"{path}: field 'std' must be positive, got {value!r}")
        return tuple(float(v) for v in value)  # type: ignore[return-value]

    if not data:
        raise DeepVisError(f"{path}: empty model spec (needs at least 'builder' and 'input_size')")
    builder = need("builder", str)
    module_name, _, attr = builder.partition(":")
    if not _valid_builder(module_name, attr):
        raise DeepVisError(f"{path}: field 'builder' must look like 'torchvision:NAME', 'timm:NAME' or "
                           f"'package.module:callable', got {builder!r}")
    input_size = need("input_size", int)
    if not 8 <= input_size <= MAX_INPUT_SIZE:
        raise DeepVisError(f"{path}: field 'input_size' must be between 8 and {MAX_INPUT_SIZE}, got {input_size}")
    resize = need("resize", int, input_size)
    if not 8 <= resize <= 4 * MAX_INPUT_SIZE:
        raise DeepVisError(f"{path}: field 'resize' must be between 8 and {4 * MAX_INPUT_SIZE}, got {resize}")
    crop = need("crop", str, "center")
    if crop not in CROPS:
        raise DeepVisError(f"{path}: field 'crop' must be one of {', '.join(CROPS)}, got {crop!r}")
    crop_pct = need("crop_pct", float, 1.0)
    if not (math.isfinite(crop_pct) and 0.1 <= crop_pct <= 1.0):
        raise DeepVisError(f"{path}: field 'crop_pct' must be between 0.1 and 1.0, got {crop_pct!r}")
    interpolation = need("interpolation", str, "area")
    if interpolation not in INTERPOLATIONS:
        raise DeepVisError(f"{path}: field 'interpolation' must be one of {', '.join(INTERPOLATIONS)}, "
                           f"got {interpolation!r}")
    layers = []
    for i, entry in enumerate(need("layers", list, [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise DeepVisError(f"{path}: field 'layers[{i}]' needs a string 'name'")
        layers.append(LayerSpec(entry["name"], str(entry.get("title", entry["name"]))))
    default_layer = need("default_layer", str, None)
    if default_layer is not None and not default_layer.strip():
        raise DeepVisError(f"{path}: field 'default_layer' is empty")
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
        default_layer=default_layer,
        path=path,
        crop_pct=crop_pct,
        interpolation=interpolation,
    )


def check_spec_layers(spec: ModelSpec, net: nn.Module) -> None:
    """One line when the spec names a layer the built network does not have (`[[layers]]`, `default_layer`), or
    the network has no layers at all. Checked against module names, so no forward pass is needed; `name@k` (the
    k-th call of a reused module) is checked by its module name."""
    names = [name for name, _ in net.named_modules() if name]
    if not names:
        raise DeepVisError(f"{spec.where}: the network built by {spec.builder!r} has no layers to look at: "
                           f"{type(net).__name__} has no submodules")
    known = set(names)
    for i, ls in enumerate(spec.layers):
        if ls.name.partition("@")[0] not in known:
            raise DeepVisError(f"{spec.where}: field 'layers[{i}]': {unknown_layer_message(ls.name, names)}")
    if spec.default_layer is not None and spec.default_layer.partition("@")[0] not in known:
        raise DeepVisError(f"{spec.where}: field 'default_layer': {unknown_layer_message(spec.default_layer, names)}")


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (offline)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def read_labels_file(path: Path, *, what: str = "labels") -> list[str]:
    """Class names, one per line (blank lines skipped); one line when the file cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeepVisError(f"{what}: file not found: {path}") from None
    except IsADirectoryError:
        raise DeepVisError(f"{what}: {path} is a folder, not a text file (one class name per line)") from None
    except OSError as err:
        raise DeepVisError(f"{what}: cannot read {path} ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise DeepVisError(f"{what}: {path} is not a text file (one class name per line)") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DeepVisError(f"{what}: {path} holds no class names (one per line)")
    return names


def with_title(spec: ModelSpec, title: str) -> ModelSpec:
    return replace(spec, title=title)
