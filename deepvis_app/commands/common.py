"""What every subcommand shares: --model/--weights/--device and the VisModel they make; the argument types that
bound every number (one set, so nan, inf, negatives and absurd sizes are refused the same way everywhere, before
any work); the checks that keep outputs off the inputs, off each other and out of folders that are not ours;
progress bars that appear only once the work has started."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import DeepVisError
from ..zoo import DEFAULT_MODEL, VisModel, load_model

# Shared options may be given before or after the subcommand (`deepvis --model M layers` and
# `deepvis layers --model M`): the top-level parser owns the defaults, subparsers leave them unset.
MODEL_DEFAULTS = {"model": DEFAULT_MODEL, "weights": "default", "device": "auto"}
SOURCE_DEFAULTS = {"source": None, "fps": None, "mirror": False, "crop": None}


def shared_default(top: bool, value: object) -> object:
    """The default of a shared option: the top-level parser owns it (`top`), subparsers leave it unset, so the
    option works before and after the subcommand."""
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


def float_in(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in [lo, hi] ((lo, ...] with lo_open, [..., hi) with hi_open); nan and inf
    are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        low_ok = value > lo if lo_open else value >= lo
        high_ok = value < hi if hi_open else value <= hi
        if not math.isfinite(value) or not low_ok or not high_ok:
            bound = f"{'above' if lo_open else 'at least'} {lo:g} and {'below' if hi_open else 'at most'} {hi:g}"
            raise argparse.ArgumentTypeError(f"must be a number {bound}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


# The bounds shared by every command (docs/cli.md lists each option's).
SEED_MAX = 2**32 - 1       # numpy's legacy generators (t-SNE, UMAP) take no more
MAX_STEPS = 100_000        # optimization steps / function evaluations
MAX_SIDE = 1024            # an optimized image's side: 1024^2 x the net's activations is already GBs on a CPU
seed_arg = int_in(0, SEED_MAX)
unit_arg = int_in(0, 10**9)
position_arg = int_in(0, 10**6)
steps_arg = int_in(0, MAX_STEPS)
side_arg = int_in(16, MAX_SIDE)
batch_arg = int_in(1, 4096)
workers_arg = int_in(0, 64)


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


def check_output_folder(path: str | os.PathLike, *, ours: Callable[[Path], bool], force: bool = False,
                        option: str = "--out", make_parents: bool = False) -> Path:
    """`check_output_dir` (its parent must exist unless `make_parents`), and a folder that already holds files
    must be one this command wrote (`ours`), or `force` given: a run never overwrites same-named files in someone
    else's folder."""
    out = Path(path).expanduser()
    if not make_parents and not out.parent.is_dir():
        raise DeepVisError(f"{option} {out}: the folder {out.parent} does not exist")
    out = check_output_dir(out, option)
    if out.is_dir() and not force and any(out.iterdir()) and not ours(out):
        raise DeepVisError(f"{option} {out} is a folder with other files in it (not an earlier run's output); "
                           "choose a new or empty folder, or add --force to write into it")
    return out


def check_distinct(inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Refuse an output that is one of the inputs or another output of the same run: the same file, also through
    symbolic or hard links. Keys name the paths for the message (`IMAGE`, `--out`); None values are skipped."""
    from ..outputs import same_file

    ins = [(name, Path(p)) for name, p in inputs.items() if p]
    outs = [(name, Path(p)) for name, p in outputs.items() if p]
    for out_name, out in outs:
        for in_name, src in ins:
            if same_file(out, src):
                raise DeepVisError(f"{out_name} {out} is the input {in_name} ({src}): it would be overwritten; "
                                   "choose another file name")
    for k, (a_name, a) in enumerate(outs):
        for b_name, b in outs[k + 1:]:
            if same_file(a, b):
                raise DeepVisError(f"{a_name} and {b_name} name the same file ({a}); give each its own")


def model_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The files --model, --weights and --labels read, as inputs no output may replace."""
    found: dict[str, Any] = {}
    for option, key in (("--model", "model"), ("--weights", "weights"), ("--labels", "labels")):
        value = getattr(args, key, None)
        if isinstance(value, str) and value and value not in ("default", "random") and Path(value).exists():
            found[option] = value
    return found


def add_model_args(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=shared_default(top, DEFAULT_MODEL),
                       help=f"curated model name, timm:NAME, torchvision:NAME or path to a .toml spec "
                            f"(default: {DEFAULT_MODEL})")
    group.add_argument("--weights", default=shared_default(top, "default"),
                       help="'default' (pretrained), 'random' (seeded init) or a weights file (state dict or "
                            "training checkpoint, TorchScript, .safetensors)")
    group.add_argument("--labels", default=shared_default(top, None), metavar="FILE",
                       help="class names, one per line (default: the checkpoint's own, NAME.labels.txt beside "
                            "--weights NAME.pt, or the model's)")
    group.add_argument("--device", default=shared_default(top, "auto"),
                       help="auto | cpu | cuda | cuda:N | mps (default: auto)")


def print_notice(text: str) -> None:
    """The CLI's voice for the core's notices (a head rebuilt, a resume discarded): one `deepvis: ...` line."""
    print(f"deepvis: {text}", file=sys.stderr)


def model_from_args(args: argparse.Namespace) -> VisModel:
    """The model, with `--layer` / `--layers` given as window titles ("block 3") turned into module names."""
    vm = load_model(args.model, weights=args.weights, device=args.device, labels=getattr(args, "labels", None),
                    on_notice=print_notice)
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
    group.add_argument("--source", default=shared_default(top, None),
                       help="camera index (0, camera:1), 'demo', a video, an image folder or an image "
                            "(default: camera 0, or the demo when no camera opens)")
    group.add_argument("--fps", type=fps_value, default=shared_default(top, None),
                       help="pace the source: N frames/s, 0 = as fast as the network takes them "
                            "(default: the video's or camera's rate, 30 for demo/folder/image)")
    group.add_argument("--mirror", action="store_true", default=shared_default(top, False),
                       help="flip frames left-right (selfie view)")
    group.add_argument("--crop", choices=("center", "stretch"), default=shared_default(top, None),
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


class LazyBar:
    """A tqdm bar on stderr that appears with the job's first progress: whatever the job rejects before its first
    step is a lone error line on stderr, never one after a drawn bar."""

    def __init__(self, total: int, desc: str, unit: str = "step") -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self._bar: Any = None

    def show(self, n: int, postfix: str = "", *, total: int | None = None) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total if total is not None else self.total, desc=self.desc, unit=self.unit,
                             leave=False, file=sys.stderr, dynamic_ncols=True)
        elif total is not None:
            self._bar.total = total
        self._bar.n = n
        if postfix:
            self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def job_bar(total: int, desc: str, quiet: bool, unit: str = "step") -> Iterator[LazyBar | None]:
    """A `LazyBar` (None when quiet) that the job's steps update; closed on the way out."""
    if quiet:
        yield None
        return
    bar = LazyBar(total, desc, unit)
    try:
        yield bar
    finally:
        bar.close()


def bar_update(bar: LazyBar | None, step: int, losses: dict[str, float]) -> None:
    if bar is not None:
        bar.show(step, " ".join(f"{k}={v:.3g}" for k, v in losses.items()))
