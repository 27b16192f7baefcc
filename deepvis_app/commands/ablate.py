"""`deepvis ablate IMAGE|FOLDER --layer L --units 3,17|top:N [--class C] [--mode zero|mean|scale:F|clamp:V]`:
switch units off (or clamp, scale, mean-replace them) and report the predictions before and after."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import DeepVisError, ParamError
from ..interventions import (
    RANK_METHODS,
    Intervened,
    Intervention,
    layer_mean,
    parse_channels,
    parse_mode,
    rank_ablation,
    rank_gradxact,
)
from ..render import top_predictions
from ..sources import list_images, read_image
from ..values import ClassTarget, check_channel
from .common import LazyBar, add_model_args, json_dump, model_from_args
from .optimize import resolve_class

MAX_TOP_UNITS = 100_000
FLAGS = {"channels": "--units", "mode": "--mode", "layer": "--layer"}  # core parameter -> this command's flag


def units_arg(text: str) -> tuple[str, Any]:
    """argparse type for --units: ("list", (3, 17)) from "3,17" / "0-7", or ("top", N) from "top:N"."""
    kind, sep, n = text.partition(":")
    if sep and kind == "top":
        if not n.isdigit() or not 1 <= int(n) <= MAX_TOP_UNITS:
            raise argparse.ArgumentTypeError(f"top:N needs N between 1 and {MAX_TOP_UNITS}, got {text!r}")
        return "top", int(n)
    try:
        return "list", parse_channels(text)
    except ParamError as err:
        raise argparse.ArgumentTypeError(f"{err.problem} (or top:N for the N units that drive the class most)"
                                         ) from None


def mode_arg(text: str) -> str:
    """argparse type for --mode: zero, mean, scale:F or clamp:V (a finite number)."""
    try:
        parse_mode(text)
    except ParamError as err:
        raise argparse.ArgumentTypeError(err.problem) from None
    return text.strip()


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ablate", help="switch units of a layer off (or clamp, scale, mean them) and compare the predictions",
        description="Run IMAGE (or every image under FOLDER) with and without an intervention on units of one "
                    "layer; report the class probability and the top-5 before and after. A FOLDER's images are "
                    "labelled by their sub-folder (FOLDER/<class name>/img.jpg) and the top-1 accuracy before and "
                    "after is reported. See docs/interventions.md.")
    p.add_argument("path", metavar="IMAGE|FOLDER", help="an image file, or a folder of images in class sub-folders")
    p.add_argument("--layer", required=True, help="layer name (see `deepvis layers`), e.g. _blocks.10")
    p.add_argument("--units", required=True, type=units_arg, metavar="3,17|0-7|top:N",
                   help="channels of --layer, or top:N = the N channels that drive the class most (see "
                        "--rank-by; scores summed over the images)")
    p.add_argument("--rank-by", choices=RANK_METHODS, default="gradxact",
                   help="how top:N ranks: gradxact = activation x gradient of the class logit (default, one "
                        "backward per image); ablation = drop in the class probability when each unit alone is zeroed")
    p.add_argument("--class", dest="cls", metavar="NAME|INDEX",
                   help="the class whose probability is reported (default: each image's sub-folder label, else "
                        "its top-1 class before the intervention)")
    p.add_argument("--mode", type=mode_arg, default="zero", metavar="zero|mean|scale:F|clamp:V",
                   help="zero (default); mean = the unit's mean (per position over a FOLDER's images, over the "
                        "positions of a single IMAGE); scale:F multiplies by F; clamp:V sets the unit to V")
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=run)


def gather(path: str) -> tuple[list[tuple[Path, str | None]], bool]:
    """The images to run, each with its sub-folder label (None: no label), and whether `path` is a folder."""
    root = Path(path)
    if not root.exists():
        raise DeepVisError(f"not found: {root}")
    if root.is_file():
        read_image(root)  # a bad image: one line now, before the model loads
        return [(root, None)], False
    if not root.is_dir():
        raise DeepVisError(f"not a file or folder: {root}")
    images = list_images(root)
    if not images:
        raise DeepVisError(f"folder {root} holds no images (.jpg, .png, ...)")
    labelled = [(p, p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None) for p in images]
    return labelled, True


def label_index(name: str, categories: list[str]) -> int:
    """A sub-folder name as a class: the name (case-insensitive, '_' for ' ') or an index."""
    lower = [c.lower() for c in categories]
    spaced = name.replace("_", " ").strip().lower()
    if spaced in lower:
        return lower.index(spaced)
    try:
        return resolve_class(name.replace("_", " "), categories)
    except DeepVisError as err:
        raise DeepVisError(f"sub-folder {name!r} is not one of the model's classes: {err}") from None


def _entry(path: Path, cls: int, label: int | None, before: torch.Tensor, after: torch.Tensor,
           categories: list[str]) -> dict[str, Any]:
    pb, pa = before.softmax(dim=1)[0], after.softmax(dim=1)[0]

    def top5(logits: torch.Tensor) -> list[dict[str, Any]]:
        return [{"index": i, "label": name, "prob": round(p, 6)} for i, name, p in top_predictions(logits[0],
                                                                                                    categories)]

    entry: dict[str, Any] = {"image": str(path), "class": categories[cls] if cls < len(categories) else str(cls),
                             "class_index": cls, "prob_before": round(float(pb[cls]), 6),
                             "prob_after": round(float(pa[cls]), 6), "top5_before": top5(before),
                             "top5_after": top5(after)}
    if label is not None:
        entry.update(label=categories[label], correct_before=int(before.argmax()) == label,
                     correct_after=int(after.argmax()) == label)
    return entry


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ParamError as err:  # the core's parameter names -> this command's flags
        raise DeepVisError(err.flag_message(FLAGS)) from None


def _run(args: argparse.Namespace) -> int:
    items, is_folder = gather(args.path)
    kind, _ = parse_mode(args.mode)
    vm = model_from_args(args)
    layer = args.layer
    info = vm.info(layer)
    units_kind, units = args.units
    if units_kind == "list":
        for c in units:
            check_channel(info, c)
    elif units > info.channels:
        raise DeepVisError(f"--units top:{units} asks for more units than layer {layer!r} has ({info.channels})")
    cls = resolve_class(args.cls, vm.categories) if args.cls is not None else None
    labels = {name: label_index(name, vm.categories) for name in {lab for _, lab in items if lab is not None}}
    bar = None if args.quiet else LazyBar(len(items), "ablate", unit="img")
    skipped: list[str] = []

    def images():
        """(path, label index, input) of each readable image; unreadable ones in a folder are skipped (listed)."""
        for path, lab in items:
            try:
                rgb = read_image(path)
            except DeepVisError as err:
                if not is_folder:
                    raise
                if str(path) not in skipped:
                    skipped.append(str(path))
                    print(f"deepvis: skipped {err}", file=sys.stderr, flush=True)
                continue
            yield path, (labels[lab] if lab is not None else None), vm.preprocess(rgb)

    def class_of(label: int | None, logits: torch.Tensor) -> int:
        return cls if cls is not None else label if label is not None else int(logits.argmax())

    try:
        if units_kind == "top":  # rank over all images, each for its own class
            total: torch.Tensor | None = None
            for path, lab, x in images():
                with torch.no_grad():
                    c = class_of(lab, vm.net(x))
                if args.rank_by == "gradxact":
                    ranking = rank_gradxact(vm.net, x, layer, ClassTarget(c, "logit"), info)
                else:
                    ranking = rank_ablation(vm.net, x, layer, ClassTarget(c, "prob"), info)
                r = torch.tensor(ranking.scores)
                total = r if total is None else total + r
                if bar is not None:
                    bar.show(0, f"ranking {path.name}")
            if total is None:
                raise DeepVisError(f"no readable images under {args.path}")
            channels = tuple(int(i) for i in torch.argsort(total, descending=True, stable=True)[:units])
        else:
            channels = units
        means = None
        if kind == "mean":
            mean = layer_mean(vm.net, (x for _, _, x in images()), layer, info, over_positions=not is_folder)
            means = {layer: mean}
        iv = Intervened.for_model(vm, [Intervention(layer, channels, args.mode)], means=means)
        entries = []
        for k, (path, lab, x) in enumerate(images()):
            with torch.no_grad():
                before = vm.net(x)
                with iv:
                    after = vm.net(x)
            entries.append(_entry(path, class_of(lab, before), lab, before, after, vm.categories))
            if bar is not None:
                bar.show(k + 1)
    finally:
        if bar is not None:
            bar.close()
    if not entries:
        raise DeepVisError(f"no readable images under {args.path}")
    head: dict[str, Any] = {"model": vm.name, "weights": vm.weights, "layer": layer, "units": list(channels),
                            "units_from": f"top:{units} by {args.rank_by}" if units_kind == "top" else "given",
                            "mode": str(Intervention(layer, channels, args.mode).mode),
                            "mean_over": ("images (per position)" if is_folder else "positions") if means else None}
    report = head | (entries[0] if not is_folder else _folder_summary(entries, skipped))
    if args.json:
        print(json_dump(report))
    else:
        _print_text(report, entries, is_folder)
    return 0


def _folder_summary(entries: list[dict[str, Any]], skipped: list[str]) -> dict[str, Any]:
    labelled = [e for e in entries if "label" in e]
    summary: dict[str, Any] = {"images": entries, "labelled": len(labelled), "skipped": skipped}
    if labelled:
        before = sum(e["correct_before"] for e in labelled) / len(labelled)
        after = sum(e["correct_after"] for e in labelled) / len(labelled)
        summary.update(accuracy_before=round(before, 6), accuracy_after=round(after, 6),
                       accuracy_drop=round(before - after, 6))
    else:
        summary.update(accuracy_before=None, accuracy_after=None, accuracy_drop=None)
    return summary


def _print_text(report: dict[str, Any], entries: list[dict[str, Any]], is_folder: bool) -> None:
    units = ",".join(map(str, report["units"]))
    print(f"{report['layer']} units {units} ({report['mode']}):")
    for e in entries:
        print(f"  {e['image']}: {e['class']} {e['prob_before'] * 100:.2f}% -> {e['prob_after'] * 100:.2f}%  "
              f"(top-1 {e['top5_before'][0]['label']} -> {e['top5_after'][0]['label']})")
    if is_folder and report["accuracy_before"] is not None:
        print(f"accuracy over {report['labelled']} labelled images: {report['accuracy_before'] * 100:.1f}% -> "
              f"{report['accuracy_after'] * 100:.1f}% (drop {report['accuracy_drop'] * 100:.1f} points)")
