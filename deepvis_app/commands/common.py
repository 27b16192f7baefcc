"""Arguments every subcommand shares (--model, --weights, --device) and turning them into a VisModel."""

from __future__ import annotations

import argparse

from ..zoo import DEFAULT_MODEL, VisModel, load_model

# Shared options may be given before or after the subcommand (`deepvis --model M layers` and
# `deepvis layers --model M`): the top-level parser owns the defaults, subparsers leave them unset.
MODEL_DEFAULTS = {"model": DEFAULT_MODEL, "weights": "default", "device": "auto"}
SOURCE_DEFAULTS = {"source": None, "fps": None, "mirror": False, "crop": None}


def _default(top: bool, value: object) -> object:
    return value if top else argparse.SUPPRESS


def add_model_args(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=_default(top, DEFAULT_MODEL),
                       help=f"curated model name or path to a .toml spec (default: {DEFAULT_MODEL})")
    group.add_argument("--weights", default=_default(top, "default"),
                       help="'default' (pretrained), 'random' (seeded init) or a path to a state dict")
    group.add_argument("--device", default=_default(top, "auto"), help="auto | cpu | cuda | cuda:N (default: auto)")


def model_from_args(args: argparse.Namespace) -> VisModel:
    return load_model(args.model, weights=args.weights, device=args.device)


def add_source_args(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    group = parser.add_argument_group("source")
    group.add_argument("--source", default=_default(top, None),
                       help="camera index (0, camera:1), 'demo', a video, an image folder or an image "
                            "(default: camera 0, or the demo when no camera opens)")
    group.add_argument("--fps", type=float, default=_default(top, None),
                       help="pace the source: N frames/s, 0 = as fast as the network takes them "
                            "(default: the video's or camera's rate, 30 for demo/folder/image)")
    group.add_argument("--mirror", action="store_true", default=_default(top, False),
                       help="flip frames left-right (selfie view)")
    group.add_argument("--crop", choices=("center", "stretch"), default=_default(top, None),
                       help="fit frames to the network input by centre crop or by stretching "
                            "(default: the model spec's choice)")


def json_dump(obj: object) -> str:
    """JSON for `--json` outputs: dataclasses become objects, floats are kept finite-friendly."""
    import dataclasses
    import json

    def default(o: object) -> object:
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    return json.dumps(obj, default=default, indent=2)
