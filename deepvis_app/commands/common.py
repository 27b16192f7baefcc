"""Arguments every subcommand shares (--model, --weights, --device) and turning them into a VisModel."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import DeepVisError
from ..zoo import DEFAULT_MODEL, VisModel, load_model

# Shared options may be given before or after the subcommand (`deepvis --model M layers` and
# `deepvis layers --model M`): the top-level parser owns the defaults, subparsers leave them unset.
MODEL_DEFAULTS = {"model": DEFAULT_MODEL, "weights": "default", "device": "auto"}
SOURCE_DEFAULTS = {"source": None, "fps": None, "mirror": False, "crop": None}


def _default(top: bool, value: object) -> object:
    return value if top else argparse.SUPPRESS


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """argparse type: an integer in [lo, hi]; anything else is a one-line usage error (before any work or
    allocation: `--top-k 1000000000` must not try to allocate 100 GB)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in [lo, hi] (or (lo, hi] with lo_open); nan and inf are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        low_ok = value > lo if lo_open else value >= lo
        if not math.isfinite(value) or not low_ok or value > hi:
            bound = f"{'above' if lo_open else 'at least'} {lo:g} and at most {hi:g}"
            raise argparse.ArgumentTypeError(f"must be a number {bound}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def fps_value(text: str) -> float:
    """argparse type for --fps: 0 (as fast as taken) or a pace the capture thread can keep."""
    from ..pipeline import MAX_FPS, MIN_FPS

    value = float_in(0.0, MAX_FPS)(text)
    if 0 < value < MIN_FPS:
        raise argparse.ArgumentTypeError(f"must be 0 or between {MIN_FPS:g} and {MAX_FPS:g}, got {text}")
    return value


def check_output_file(path: str | os.PathLike, suffixes: tuple[str, ...], option: str = "--out") -> Path:
    """An output file we can write: right suffix, not a directory, its folder exists and is writable.

    Checked before the model loads, so a typo costs nothing and nothing is written."""
    out = Path(path)
    if suffixes and out.suffix.lower() not in suffixes:
        raise DeepVisError(f"{option} must end in {' or '.join(suffixes)}, got {str(path)!r}")
    if out.is_dir():
        raise DeepVisError(f"{option} {out} is a directory; give a file name")
    parent = out.parent
    if not parent.is_dir():
        raise DeepVisError(f"{option}: folder does not exist: {parent}")
    _probe_writable(parent, out, option)
    return out


def _probe_writable(folder: Path, out: Path, option: str) -> None:
    """Create and remove a temp file in `folder`: the one test that also holds for root (to whom os.access says
    yes everywhere) and for special file systems such as /proc."""
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=".deepvis-probe.", dir=folder)
    except OSError as err:
        raise DeepVisError(f"{option}: cannot write {out} ({err.strerror or err})") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """An output folder we can create or write into (not an existing file)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DeepVisError(f"{option} {out} exists and is not a folder")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DeepVisError(f"{option}: cannot create {out}: {probe} is not a folder")
    _probe_writable(probe, out, option)
    return out


def add_model_args(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=_default(top, DEFAULT_MODEL),
                       help=f"curated model name or path to a .toml spec (default: {DEFAULT_MODEL})")
    group.add_argument("--weights", default=_default(top, "default"),
                       help="'default' (pretrained), 'random' (seeded init) or a path to a state dict")
    group.add_argument("--device", default=_default(top, "auto"), help="auto | cpu | cuda | cuda:N (default: auto)")


def model_from_args(args: argparse.Namespace) -> VisModel:
    """The model, with `--layer` / `--layers` given as window titles ("block 3") turned into module names."""
    vm = load_model(args.model, weights=args.weights, device=args.device)
    layer = getattr(args, "layer", None)
    if isinstance(layer, str) and layer:
        args.layer = _title_to_name(vm, layer)
    layers = getattr(args, "layers", None)
    if isinstance(layers, str) and layers and layers != "all":
        args.layers = ",".join(_title_to_name(vm, part.strip()) for part in layers.split(",") if part.strip())
    return vm


def _title_to_name(vm: VisModel, text: str) -> str:
    """A window title ("block 3") -> its module name; anything else unchanged, so each command still reports an
    unknown layer in its own words (e.g. `deepvis topk` names the store's model)."""
    try:
        return vm.resolve_layer(text)
    except DeepVisError:
        return text


def add_source_args(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    group = parser.add_argument_group("source")
    group.add_argument("--source", default=_default(top, None),
                       help="camera index (0, camera:1), 'demo', a video, an image folder or an image "
                            "(default: camera 0, or the demo when no camera opens)")
    group.add_argument("--fps", type=fps_value, default=_default(top, None),
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


@contextmanager
def job_bar(total: int, desc: str, quiet: bool, unit: str = "step"):
    """A tqdm bar on stderr (None when quiet) that the job's steps update; closed on the way out."""
    if quiet:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def bar_update(bar: Any, step: int, losses: dict[str, float]) -> None:
    if bar is not None:
        bar.n = step
        bar.set_postfix_str(" ".join(f"{k}={v:.3g}" for k, v in losses.items()), refresh=True)
