"""Models named by their library: `torchvision:NAME` (any torchvision image classifier) and `timm:NAME` (timm is an
optional extra). Each gets a spec from the library's own metadata (input size, mean/std, crop percentage,
interpolation, class names), and its pretrained weights from the library's cache, downloaded when online; offline
with nothing cached, one line says what is missing.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DeepVisError, WeightsMissingError
from ..fileio import FILE_MODE, fsync_dir
from .specs import INTERPOLATIONS, MAX_INPUT_SIZE, ModelSpec

DOWNLOAD_TIMEOUT_S = 15.0
TIMM_INSTALL = "timm is not installed: pip install 'deepvis[models]' (or: pip install timm safetensors)"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def offline() -> bool:
    """DEEPVIS_OFFLINE=1: never try the network (CI, air-gapped machines)."""
    return os.environ.get("DEEPVIS_OFFLINE", "") not in ("", "0")


def _close(name: str, names: list[str]) -> str:
    near = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
    return f" (close: {', '.join(near)})" if near else ""


def _interpolation(mode: str) -> str:
    mode = mode.lower().replace("_", "-")
    return mode if mode in INTERPOLATIONS else "nearest" if mode.startswith("nearest") else "bilinear"


# ---- torchvision -------------------------------------------------------------------------------------------------


def torchvision_classifiers() -> list[str]:
    """Names of torchvision's image classifiers (not its detection, segmentation, video or quantized models)."""
    from torchvision import models as tvm

    return list(tvm.list_models(module=tvm))


def torchvision_spec(arch: str) -> ModelSpec:
    """A spec for any torchvision classifier, from its DEFAULT weights' metadata and eval transforms."""
    from torchvision import models as tvm

    names = torchvision_classifiers()
    if arch not in names:
        raise DeepVisError(f"torchvision has no image classifier {arch!r}{_close(arch, names)}")
    try:
        weights = tvm.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        weights = None
    size, resize, mean, std, interpolation = 224, 256, IMAGENET_MEAN, IMAGENET_STD, "bilinear"
    if weights is not None:
        t = weights.transforms()
        size = int(t.crop_size[0])
        resize = int(t.resize_size[0]) if t.resize_size else size
        mean, std = tuple(t.mean), tuple(t.std)
        interpolation = _interpolation(t.interpolation.value)
    size = min(size, MAX_INPUT_SIZE)
    categories = len(weights.meta.get("categories") or []) if weights is not None else 1000
    return ModelSpec(
        name=f"torchvision:{arch}", title=f"{arch} (torchvision)", builder=f"torchvision:{arch}",
        weights=weights.name if weights is not None else "none", input_size=size, resize=max(resize, size),
        crop="center", mean=mean, std=std, labels="imagenet" if categories == 1000 else "none",
        crop_pct=min(1.0, size / max(resize, size)), interpolation=interpolation)


def torchvision_weights(spec: ModelSpec, arch: str) -> Any:
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError):
        raise DeepVisError(f"{spec.where}: torchvision has no pretrained weights for {arch!r}: load it with random "
                           "weights or a weights file") from None
    key = spec.weights.split(".")[-1]
    if key in ("default", "DEFAULT"):
        return enum.DEFAULT
    try:
        return enum[key]
    except KeyError:
        valid = ", ".join(w.name for w in enum)
        raise DeepVisError(f"{spec.where}: field 'weights': {spec.weights!r} is not one of {valid}") from None


def ensure_cached(url: str, arch: str, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Make sure a weight file is in torch's hub cache; one clear line when it cannot be had. Returns its path.

    Called from GUI job threads too, so it touches no process-wide state (no default socket timeout, no stderr
    redirection): the download has its own timeout and goes to a temp file renamed into place when complete.
    """
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    filename = url.rsplit("/", 1)[-1]
    target = checkpoints / filename
    if target.is_file():
        return target
    hint = f"weights for {arch} are not cached: download {url} and put {filename} in {checkpoints}"
    if offline():
        raise WeightsMissingError(hint)
    tmp = None
    try:
        checkpoints.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the library's own URL
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
    return target


def build_torchvision(spec: ModelSpec, arch: str, pretrained: bool) -> nn.Module:
    from torchvision import models as tvm

    weights = torchvision_weights(spec, arch) if pretrained else None
    if weights is not None:
        ensure_cached(weights.url, arch)
    # The file is cached above (our own download, our own error line): torchvision's "Downloading: ..." and
    # progress bar would only be noise on stderr.
    kwargs: dict[str, Any] = {"progress": False}
    if arch in ("googlenet", "inception_v3") and weights is None:
        kwargs["aux_logits"] = False  # aux heads are training-only
    try:
        return tvm.get_model(arch, weights=weights, **kwargs)
    except ValueError:
        raise DeepVisError(f"{spec.where}: field 'builder': torchvision has no model {arch!r}") from None


# ---- timm --------------------------------------------------------------------------------------------------------


def require_timm() -> Any:
    """The timm module, or one line saying how to install it."""
    try:
        import timm
    except ImportError:
        raise DeepVisError(TIMM_INSTALL) from None
    return timm


def _timm_cfg(name: str) -> dict[str, Any]:
    timm = require_timm()
    base = name.partition(".")[0]
    if not timm.is_model(base):
        raise DeepVisError(f"timm has no model {base!r}{_close(base, timm.list_models())}")
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # an unknown tag
        cfg = None
    if cfg is None:
        tags = list(timm.list_pretrained(f"{base}.*"))
        raise DeepVisError(f"timm has no pretrained tag {name!r}" + (f" (tags: {', '.join(tags[:6])})" if tags else ""))
    return cfg.to_dict()


def timm_spec(name: str) -> ModelSpec:
    """A spec for a timm model from its pretrained config: input size, mean/std, crop_pct, interpolation, labels."""
    cfg = _timm_cfg(name)
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    if not 8 <= size <= MAX_INPUT_SIZE:
        raise DeepVisError(f"timm:{name}: input size {size} is outside 8..{MAX_INPUT_SIZE}")
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    n = int(cfg.get("num_classes") or 0)
    from timm.data import infer_imagenet_subset

    subset = infer_imagenet_subset(cfg)
    labels = "imagenet" if n == 1000 else f"timm:{subset}" if subset else "none"
    return ModelSpec(
        name=f"timm:{name}", title=f"{name} (timm)", builder=f"timm:{name}", weights="default", input_size=size,
        resize=max(size, int(size / crop_pct)), crop="stretch" if cfg.get("crop_mode") == "squash" else "center",
        mean=tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
        labels=labels, crop_pct=min(1.0, max(0.1, crop_pct)),
        interpolation=_interpolation(str(cfg.get("interpolation", "bilinear"))))


def timm_label_names(subset: str) -> list[str]:
    """Short class names of one of timm's ImageNet label sets ("imagenet-22k": 21841 names)."""
    require_timm()
    from timm.data import ImageNetInfo

    return [d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()]


def _timm_cached_file(cfg: dict[str, Any], name: str) -> str | None:
    """The locally cached pretrained file of a timm model (Hugging Face hub cache or torch's hub cache), if any."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        files = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        for filename in files:
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url")
    if url:
        target = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        if target.is_file():
            return str(target)
    return None


def build_timm(spec: ModelSpec, name: str, pretrained: bool) -> nn.Module:
    """A timm model; pretrained weights from the local cache, else downloaded (never with DEEPVIS_OFFLINE)."""
    timm = require_timm()
    cfg = _timm_cfg(name)
    if not pretrained:
        return timm.create_model(name, pretrained=False)
    where = cfg.get("hf_hub_id") or cfg.get("url") or "timm's pretrained weights"
    cached = _timm_cached_file(cfg, name)
    if cached is not None:
        # timm reads the file with weights_only=True (or safetensors): no pickled code runs.
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached})
    hint = f"weights for timm:{name} are not cached (they come from {where})"
    if offline():
        raise WeightsMissingError(f"{hint}: run once online, or load random weights or a weights file")
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as err:  # noqa: BLE001 - any network or hub failure means the same thing to the user
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise WeightsMissingError(f"{hint} and the download failed: {first}") from None
