"""`load_model`: a curated name, a spec file, `timm:NAME` or `torchvision:NAME`, with pretrained, random or a
user's own weights (and class names), to a `VisModel`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..devices import resolve_device, use_device
from ..errors import DeepVisError, ParamError
from .build import build, head_size, rebuild_head
from .checkpoints import Checkpoint, Fitted, labels_beside, load_checkpoint, read_checkpoint
from .libraries import timm_label_names, timm_spec, torchvision_spec
from .model import VisModel
from .preprocess import Preprocessor
from .specs import (
    DEFAULT_MODEL,
    ModelSpec,
    check_spec_layers,
    curated_for,
    find_spec,
    imagenet_categories,
    library_name,
    read_labels_file,
    read_spec,
    short_title,
    with_title,
)

Notice = Callable[[str], None]


def resolve_spec(name_or_spec: str | os.PathLike) -> ModelSpec:
    """The spec for a curated name, a spec file, or `timm:NAME` / `torchvision:NAME` (the curated spec of that
    builder when there is one, so its curated layers and titles come along)."""
    text = str(name_or_spec).strip() if not isinstance(name_or_spec, os.PathLike) else str(name_or_spec)
    named = library_name(text)
    if named is None:
        return read_spec(find_spec(name_or_spec))
    library, name = named
    if not name:
        raise DeepVisError(f"model {text!r}: give a model name after '{library}:' (e.g. {library}:resnet50)")
    curated = curated_for(f"{library}:{name}")
    if curated is not None:
        return read_spec(curated)
    return torchvision_spec(name) if library == "torchvision" else timm_spec(name)


def spec_categories(spec: ModelSpec) -> list[str]:
    """The class names a spec's `labels` field names: `imagenet`, `none`, `timm:SUBSET` or a text file."""
    if spec.labels == "imagenet":
        return imagenet_categories()
    if spec.labels in ("", "none"):
        return []
    if spec.labels.startswith("timm:"):
        return timm_label_names(spec.labels.removeprefix("timm:"))
    path = Path(spec.labels).expanduser()
    if not path.is_absolute() and spec.path is not None:
        path = spec.path.parent / path
    return read_labels_file(path, what=f"{spec.where}: field 'labels'")


def _given_labels(labels: str | os.PathLike | Sequence[str]) -> tuple[list[str], str]:
    if isinstance(labels, str | os.PathLike):
        path = Path(labels).expanduser()
        return read_labels_file(path, what="labels"), str(path)
    names = [str(v).strip() for v in labels]
    if not names or not all(names):
        raise ParamError("labels", "must be a text file or a list of class names (none of them empty)")
    return names, "the given labels"


def _categories(spec: ModelSpec, net: torch.nn.Module, labels: str | os.PathLike | Sequence[str] | None,
                ck: Checkpoint | None, classes: int | None) -> tuple[list[str], str | None]:
    """Class names and where they came from: given labels, the checkpoint's own, `ck.labels.txt` beside it, the
    spec's; numbered when a rebuilt head has none. Names that come with weights must match the head's size."""
    found: tuple[list[str], str] | None = None
    if labels is not None:
        found = _given_labels(labels)
    elif ck is not None and ck.labels:
        found = ck.labels, f"{ck.path.name} itself"
    elif ck is not None:
        beside = labels_beside(ck.path)
        found = (beside[0], beside[1].name) if beside else None
    if found is None:
        if classes is not None:
            return [f"class {i}" for i in range(classes)], None
        return spec_categories(spec), spec.labels
    names, where = found
    n = classes if classes is not None else head_size(net)
    if n is not None and len(names) != n:
        raise DeepVisError(f"labels: {where} has {len(names)} class names, the model's classifier head has "
                           f"{n} classes")
    return names, where


def load_model(name_or_spec: str | os.PathLike = DEFAULT_MODEL, *, weights: str = "default",
               device: str | torch.device = "auto", seed: int = 0,
               labels: str | os.PathLike | Sequence[str] | None = None, num_classes: int | None = None,
               on_notice: Notice | None = None) -> VisModel:
    """Load a curated model by name (see `models/`), a spec file path, `timm:NAME` or `torchvision:NAME`.

    weights: `"default"` (the spec's pretrained weights), `"random"` (seeded initialization, to compare a
    trained and an untrained net), or a path to a weights file: a state dict (also as training loops save it:
    `{'model': sd, 'epoch': ...}`, `{'state_dict': sd}`, DDP's `module.` prefixes), a TorchScript file or a
    `.safetensors` file; never unpickles code. A classifier head with another class count is rebuilt to fit.
    labels: a text file (one class name per line) or a list of names; else the checkpoint's own names, or
    `ck.labels.txt` beside `ck.pt`, or the spec's. num_classes: the head's size with random weights (a fine-tuned
    architecture's twin). on_notice: gets one line for what the user should know (a rebuilt head).
    device: `"auto"` (CUDA if available), `"cpu"`, `"cuda"` or `"cuda:N"`.
    Every user error raises `DeepVisError` with a one-line message.
    """
    weights = str(weights)
    if not weights.strip():
        raise ParamError("weights", "is empty: give 'default', 'random' or a weights file")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ParamError("num_classes", f"must be a whole number of at least 1, got {num_classes!r}")
    if num_classes is not None and weights == "default":
        raise ParamError("num_classes", "needs random weights or a weights file (pretrained weights bring their "
                         "own classifier head)")
    spec = resolve_spec(name_or_spec)
    dev = resolve_device(device, on_notice=on_notice)
    use_device(dev)  # this thread's CUDA device: --device cuda:1 opens no context on cuda:0
    ck = None
    fitted = Fitted([])
    if weights == "random":
        torch.manual_seed(seed)
        net = build(spec, pretrained=False)
        check_spec_layers(spec, net)
        if num_classes is not None and head_size(net) != num_classes:
            rebuild_head(net, num_classes)
    elif weights == "default":
        net = build(spec, pretrained=True)
        check_spec_layers(spec, net)
    else:
        path = Path(weights).expanduser()
        ck = read_checkpoint(path)  # a bad file fails before anything is built
        net = build(spec, pretrained=False)
        check_spec_layers(spec, net)
        fitted = load_checkpoint(net, ck, spec.name)
        classes = fitted.classes if fitted.classes is not None else head_size(net)
        if num_classes is not None and classes is not None and classes != num_classes:
            raise ParamError("num_classes", f"is {num_classes}, but {path.name} has {classes} classes")
        spec = with_title(spec, f"{short_title(spec.title)} ({path.name})")
    classes = fitted.classes if fitted.classes is not None else num_classes
    categories, where = _categories(spec, net, labels, ck, classes)
    if fitted.heads and on_notice is not None:
        names = f"from {where}" if where else "not found: numbered 'class 0'.. (give a labels file, one name per " \
            f"line, or put {Path(weights).stem}.labels.txt beside the weights)"
        on_notice(f"{Path(weights).name}: classifier head {', '.join(fitted.heads)} rebuilt for its "
                  f"{fitted.classes} classes (the architecture has {fitted.architecture_classes}); class names {names}")
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    net.to(dev)
    return VisModel(spec=spec, net=net, device=dev, categories=categories, preprocess=Preprocessor(spec, dev),
                    weights=weights, source=str(name_or_spec), labels=_keep(labels),
                    head_classes=fitted.classes if fitted.classes is not None else num_classes, loader=load_model)


def _keep(labels: str | os.PathLike | Sequence[str] | None) -> str | list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str | os.PathLike):
        return str(Path(labels).expanduser().absolute())
    return [str(v) for v in labels]
