"""`deepvis segment IMAGE [--class C]`: cut the object out with GrabCut seeded by class saliency (Simonyan 2013)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

from ..errors import DeepVisError
from ..fileio import encode_png
from ..outputs import write_files
from ..segment import DEFAULT_SMOOTH, MAX_SAMPLES, segment
from ..sources import read_image
from .common import add_model_args, check_distinct, check_output_file, float_in, int_in, model_from_args, model_inputs
from .optimize import resolve_class


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("segment", help="cut the object out: GrabCut seeded by the class saliency map",
                              description="Class saliency (max over colours of |d score / d pixel|), averaged "
                                          "over noisy copies (SmoothGrad), seeds GrabCut: top quantile = object, "
                                          "bottom = background. Outputs are at the network's input size. "
                                          "See docs/occlusion.md.")
    p.add_argument("image", help="input image file")
    p.add_argument("--class", dest="cls", metavar="NAME|INDEX", help="class name or index (default: the top "
                                                                      "prediction)")
    p.add_argument("--smooth", type=int_in(0, MAX_SAMPLES), default=DEFAULT_SMOOTH, metavar="N",
                   help=f"SmoothGrad with N noisy samples, at most {MAX_SAMPLES}; 0 = the plain saliency map, "
                        f"which often seeds the background of a plain photo (default: {DEFAULT_SMOOTH})")
    p.add_argument("--noise", type=float_in(0.0, 1.0), default=0.15,
                   help="SmoothGrad noise, fraction of the input range, 0..1 (default: 0.15)")
    p.add_argument("--fg-quantile", type=float_in(0.0, 1.0, lo_open=True), default=0.95,
                   help="saliency quantile above which pixels seed the object (default: 0.95)")
    p.add_argument("--bg-quantile", type=float_in(0.0, 1.0, hi_open=True), default=0.30,
                   help="saliency quantile below which pixels seed the background, below --fg-quantile "
                        "(default: 0.30)")
    p.add_argument("--out", help="mask PNG (white = object)")
    p.add_argument("--cutout", help="PNG of the object on white")
    p.add_argument("--saliency", help="PNG of the saliency map")
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    outs = {"--out": args.out, "--cutout": args.cutout, "--saliency": args.saliency}
    outs = {option: check_output_file(path, (".png",), option) for option, path in outs.items() if path}
    check_distinct({"IMAGE": args.image, **model_inputs(args)}, outs)
    if not args.bg_quantile < args.fg_quantile:
        raise DeepVisError(f"--bg-quantile ({args.bg_quantile:g}) must be below --fg-quantile ({args.fg_quantile:g})")
    rgb = read_image(args.image)
    vm = model_from_args(args)
    fitted = vm.preprocess.fit(rgb)
    with torch.no_grad():
        logits = vm.net(vm.preprocess.to_tensor(fitted))
        logits = logits[0] if isinstance(logits, tuple | list) else logits
        probs = torch.softmax(logits.float(), dim=1)[0].cpu()
    idx = resolve_class(args.cls, vm.categories) if args.cls is not None else int(probs.argmax())
    seg = segment(vm, fitted, idx, smooth=args.smooth, noise=args.noise, fg_quantile=args.fg_quantile,
                  bg_quantile=args.bg_quantile)
    files = {}
    if "--out" in outs:
        files[outs["--out"]] = encode_png(np.where(seg.mask, 255, 0).astype(np.uint8))
    if "--cutout" in outs:
        files[outs["--cutout"]] = encode_png(seg.cutout(fitted))
    if "--saliency" in outs:
        sal = seg.saliency / (float(seg.saliency.max()) or 1.0)
        files[outs["--saliency"]] = encode_png((np.clip(sal, 0, 1) * 255 + 0.5).astype(np.uint8))
    write_files(files)  # all or none
    name = vm.categories[idx] if vm.categories else str(idx)
    report = {"class": name, "class_index": idx, "probability": float(probs[idx]), "area": round(seg.area, 4),
              "bbox": list(seg.bbox) if seg.bbox else None, "size": list(seg.mask.shape),
              "smooth": args.smooth, "guards": list(seg.guards),
              "out": args.out, "cutout": args.cutout, "saliency": args.saliency}
    if args.json:
        print(json.dumps(report))
    else:
        box = "empty" if seg.bbox is None else f"bbox (top, left, bottom, right) {seg.bbox}"
        guards = {"seeds_off_border": "object seeds moved off the image border"}
        notes = "".join(f"; {guards.get(g, g)}" for g in seg.guards)
        print(f"{name}: mask covers {100 * seg.area:.1f}% of the {seg.mask.shape[1]}x{seg.mask.shape[0]} input, "
              f"{box}{notes}")
    return 0
