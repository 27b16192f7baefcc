"""`deepvis occlude IMAGE (--class C | --layer L --unit U)`: Zeiler & Fergus occlusion map as PNG / .npy / JSON."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from ..errors import DeepVisError
from ..fileio import encode_png
from ..occlusion import FILLS, Target, occlusion_map, target_label
from ..outputs import write_files
from ..sources import read_image
from ..values import ClassTarget, Unit
from .common import (
    LazyBar,
    add_model_args,
    batch_arg,
    check_distinct,
    check_output_file,
    int_in,
    model_from_args,
    model_inputs,
    position_arg,
    print_notice,
    unit_arg,
)
from .optimize import resolve_class

MAX_WINDOW = 4096  # a patch side; the model's input size bounds it once the model is loaded


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("occlude", help="occlusion map: how a class or unit score changes as a grey patch "
                                              "slides over the image",
                              description="Slide a patch over IMAGE and record the score of a class or unit at "
                                          "each position (Zeiler & Fergus). Exact, with incremental inference; "
                                          "see docs/occlusion.md.")
    p.add_argument("image", help="input image file")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--class", dest="cls", metavar="NAME|INDEX", help="class name or index")
    what.add_argument("--layer", help="layer name (see `deepvis layers`); use with --unit")
    p.add_argument("--unit", type=unit_arg,
                   help="channel in --layer (score: the channel's mean, or the neuron at --y/--x)")
    p.add_argument("--y", type=position_arg, help="row of the neuron in --layer (default: the whole channel)")
    p.add_argument("--x", type=position_arg, help="column of the neuron in --layer")
    p.add_argument("--score", choices=("prob", "logit"), default="prob",
                   help="for --class: softmax probability (default) or logit")
    p.add_argument("--window", type=int_in(1, MAX_WINDOW), default=32,
                   help="patch side in input pixels, at most the input size (default: 32)")
    p.add_argument("--stride", type=int_in(1, MAX_WINDOW), default=8, help="patch step in input pixels (default: 8)")
    p.add_argument("--fill", choices=FILLS, default="zero",
                   help="zero = mid-grey in pixel space (default), mean = the image's mean colour, blur = the "
                        "image under the patch blurred")
    p.add_argument("--batch", type=batch_arg, default=32, help="patch positions per forward (default: 32)")
    p.add_argument("--out", required=True, help="PNG: the image with the drop map overlaid (red: covering hurts)")
    p.add_argument("--npy", help="also save the score map (rows x cols, float32) as .npy")
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=run)


def overlay(rgb: np.ndarray, drop: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The image with a signed map over it: red where covering hurts (drop > 0), blue where it helps,
    scaled by the largest |drop| (so the colours compare within one map)."""
    scale = float(np.abs(drop).max()) or 1.0
    v = np.clip(drop / scale, -1.0, 1.0)[..., None]
    red = np.array([255.0, 0.0, 0.0])
    blue = np.array([0.0, 64.0, 255.0])
    colour = np.where(v > 0, red, blue)
    a = alpha * np.abs(v)
    out = rgb.astype(np.float64) * (1 - a) + colour * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _check_target_args(args: argparse.Namespace) -> None:
    """What the target options get wrong, before the model loads."""
    if args.cls is not None:
        if args.unit is not None or args.y is not None or args.x is not None:
            raise DeepVisError("--unit/--y/--x go with --layer, not --class")
        return
    if args.unit is None:
        raise DeepVisError("--layer needs --unit C (a channel index)")
    if (args.y is None) != (args.x is None):
        raise DeepVisError("give both --y and --x, or neither")


def _target(args: argparse.Namespace, vm: Any) -> Target:
    if args.cls is not None:
        return ClassTarget(resolve_class(args.cls, vm.categories), score=args.score)
    vm.info(args.layer)  # unknown layer: one line listing the valid ones
    return Unit(args.layer, args.unit, args.y, args.x)


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, (".png",))
    npy = check_output_file(args.npy, (".npy",), "--npy") if args.npy else None
    check_distinct({"IMAGE": args.image, **model_inputs(args)}, {"--out": out, "--npy": npy})
    _check_target_args(args)
    rgb = read_image(args.image)
    vm = model_from_args(args)
    target = _target(args, vm)
    if args.window > vm.input_size:
        raise DeepVisError(f"--window {args.window} is larger than the network's {vm.input_size}px input")
    fitted = vm.preprocess.fit(rgb)
    x = vm.preprocess.to_tensor(fitted)
    bar = None if args.quiet else LazyBar(0, "occlude", unit="pos")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.show(done, total=total)

    t0 = time.perf_counter()
    try:
        m = occlusion_map(vm, x, target, window=args.window, stride=args.stride, fill=args.fill, batch=args.batch,
                          on_notice=print_notice,
                          progress=progress)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    files = {out: encode_png(overlay(fitted, m.upsampled()))}
    if npy is not None:
        import io

        buf = io.BytesIO()
        np.save(buf, m.scores.numpy().astype(np.float32))
        files[npy] = buf.getvalue()
    write_files(files)
    report: dict[str, Any] = {"out": str(out), "npy": str(npy) if npy else None, "model": vm.name,
                              "weights": vm.weights, "target": target_label(target), "window": m.window,
                              "stride": m.stride, "fill": m.fill, "positions": [len(m.ys), len(m.xs)],
                              "base_score": m.base_score, **m.extremes(), "method": m.note,
                              "seconds": round(seconds, 3)}
    if isinstance(target, ClassTarget):
        report["class"] = vm.categories[target.index] if vm.categories else target.index
        report["class_index"] = target.index
        report["score"] = target.score
        if m.base_label is not None and vm.categories:
            report["base_prediction"] = vm.categories[m.base_label]
    else:
        report.update(layer=target.layer, unit=target.channel, y=target.y, x=target.x)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"wrote {out}: base {report['base_score']:.4g}, min {report['min']:.4g} at {report['min_at']}, "
              f"max {report['max']:.4g} at {report['max_at']} (row, col of the patch's top-left pixel)")
    return 0
