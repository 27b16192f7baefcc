"""The model registry: specs (TOML) carrying builder, weights, preprocessing, labels and shown layers together.

Curated specs ship as package data (`deepvis_app/models/`, read through `importlib.resources`); `--model` also
takes `timm:NAME`, `torchvision:NAME` or a path to a user's own spec file. `load_model` returns a `VisModel`, the
one object the rest of DeepVis needs to know about a network.

- specs.py: the spec files and their validation; libraries.py: timm / torchvision by name and their weights;
  build.py: building a spec's network, its classifier head; checkpoints.py: a user's own weights files;
  preprocess.py: frames to inputs; model.py: `VisModel`; load.py: `load_model`.

Trust: a spec is code (its builder is imported and called); weights never are (see checkpoints.py).
"""

from ..errors import WeightsMissingError
from .build import head_modules, head_size
from .checkpoints import read_checkpoint
from .libraries import DOWNLOAD_TIMEOUT_S, ensure_cached, timm_spec, torchvision_classifiers, torchvision_spec
from .load import load_model, resolve_spec
from .model import VisModel
from .preprocess import Preprocessor, fit_frame
from .specs import (
    DEFAULT_MODEL,
    INTERPOLATIONS,
    MAX_INPUT_SIZE,
    LayerSpec,
    ModelSpec,
    available_models,
    find_spec,
    imagenet_categories,
    read_spec,
)

__all__ = [
    "DEFAULT_MODEL", "DOWNLOAD_TIMEOUT_S", "INTERPOLATIONS", "MAX_INPUT_SIZE", "LayerSpec", "ModelSpec",
    "Preprocessor", "VisModel", "WeightsMissingError", "available_models", "ensure_cached", "find_spec", "fit_frame",
    "head_modules", "head_size", "imagenet_categories", "load_model", "read_checkpoint", "read_spec", "resolve_spec",
    "timm_spec", "torchvision_classifiers", "torchvision_spec",
]
