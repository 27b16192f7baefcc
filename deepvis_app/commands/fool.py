"""`deepvis fool`: an adversarial example (a photo nudged into another class) or a fooling image (noise or
shapes classified as a class). The result is the network's view of the input (fitted to its input size),
saved as an 8-bit PNG; every figure in the report is measured on the PNG as written. See docs/adversarial.md.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from .. import adversarial as adv
from ..errors import DeepVisError
from ..fileio import encode_png
from ..outputs import write_files
from ..sources import decode_image, read_image
from .common import (
    LazyBar,
    add_model_args,
    check_distinct,
    check_output_file,
    float_in,
    model_from_args,
    model_inputs,
    seed_arg,
    steps_arg,
)
from .optimize import resolve_class


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fool", help="adversarial example: nudge an image into another class (or make a fooling image)",
        description="Targeted PGD or FGSM in pixel space (eps in 0-255 levels), quantized to 8 bits inside the "
                    "loop, or --from noise|shapes for a fooling image. See docs/adversarial.md.")
    p.add_argument("image", nargs="?", metavar="IMAGE", help="the photo to attack (or use --from)")
    p.add_argument("--from", dest="start", choices=adv.STARTS,
                   help="make a fooling image starting from noise or flat shapes instead of a photo")
    p.add_argument("--target", metavar="NAME|INDEX",
                   help="class to turn the image into (required except for untargeted --method fgsm)")
    p.add_argument("--method", choices=adv.METHODS, default="pgd",
                   help="pgd: iterated projected steps (default); fgsm: one step of eps")
    p.add_argument("--eps", type=float_in(1.0, 255.0),
                   help="largest change per pixel value, 1..255 levels (default: 2; 32 with --from)")
    p.add_argument("--step", type=float_in(0.0, 255.0, lo_open=True),
                   help="PGD step in levels, (0, 255] (default: eps/4, at least 0.25; 1 with --from)")
    p.add_argument("--steps", type=steps_arg, help="most PGD steps (default: 20; 200 with --from)")
    p.add_argument("--confidence", type=float_in(0.0, 1.0, lo_open=True, hi_open=True), default=0.99,
                   help="with --from: stop once the target has this probability, in (0, 1) (default: 0.99)")
    p.add_argument("--seed", type=seed_arg, default=0, help="with --from: random seed of the start image")
    p.add_argument("--out", required=True, help="output PNG (the attacked image at the network's input size)")
    p.add_argument("--diff", help="also write the perturbation magnified (128 + gain x change) as a PNG")
    p.add_argument("--gain", type=float_in(0.0, 1000.0, lo_open=True), default=20.0,
                   help="magnification of --diff, (0, 1000] (default: 20)")
    p.add_argument("--json", action="store_true", help="print a JSON report to stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    """Everything a user can get wrong, before the model loads."""
    if (args.image is None) == (args.start is None):
        raise DeepVisError("give an IMAGE to attack or --from noise|shapes, not both" if args.image
                           else "give an IMAGE to attack or --from noise|shapes")
    if args.target is None and (args.start is not None or args.method == "pgd"):
        raise DeepVisError("--target NAME|INDEX is required (only --method fgsm can run untargeted)")
    if args.start is not None and args.method != "pgd":
        raise DeepVisError("--from makes a fooling image with PGD; drop --method fgsm")


def _classify(vm: Any, rgb: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = vm.net(vm.preprocess(rgb))
        out = out[0] if isinstance(out, tuple | list) else out
        return torch.softmax(out.float(), dim=1)[0].cpu().numpy()


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    out = check_output_file(args.out, (".png",))
    diff_path = check_output_file(args.diff, (".png",), "--diff") if args.diff else None
    check_distinct({"IMAGE": args.image, **model_inputs(args)}, {"--out": out, "--diff": diff_path})
    photo = read_image(args.image) if args.image is not None else None  # a bad path fails before the model loads
    vm = model_from_args(args)
    target = resolve_class(args.target, vm.categories) if args.target is not None else None
    fooling = args.start is not None
    eps = args.eps if args.eps is not None else (32.0 if fooling else 2.0)
    steps = args.steps if args.steps is not None else (200 if fooling else 20)
    step = args.step if args.step is not None else (1.0 if fooling else None)
    start = adv.start_image(args.start, vm.input_size, args.seed) if fooling else photo
    original = vm.preprocess.fit(start)

    bar = None if args.quiet else LazyBar(1 if args.method == "fgsm" else steps, "fool")

    def progress(state: adv.AttackState) -> None:
        if bar is not None:
            p = state.target_prob if state.target is not None else state.orig_class_prob
            bar.show(state.step, f"p={p:.3f}")

    t0 = time.perf_counter()
    try:
        last = adv.run_attack(vm, original, target, method=args.method, eps=eps, step=step, steps=steps,
                              until=args.confidence if fooling else None, on_progress=progress)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    png = encode_png(last.image)
    saved = decode_image(np.frombuffer(png, np.uint8))  # every figure below is measured on the PNG as written
    delta = saved.astype(np.int16) - original.astype(np.int16)
    files = {out: png}
    if diff_path is not None:
        files[diff_path] = encode_png(adv.magnify(delta, args.gain))
    write_files(files)  # both or neither
    probs = _classify(vm, saved)
    orig_probs = _classify(vm, original)
    o, a = int(orig_probs.argmax()), int(probs.argmax())
    if target is None:
        success = a != o
    else:
        success = a == target and (not fooling or float(probs[target]) >= args.confidence)
    report: dict[str, Any] = {
        "image": args.image, "from": args.start, "out": str(out), "diff": str(diff_path) if diff_path else None,
        "model": vm.name, "weights": vm.weights, "method": args.method, "eps": eps,
        "step": eps if args.method == "fgsm" else (step if step is not None else adv.default_step(eps)),
        "steps": 1 if args.method == "fgsm" else steps, "steps_used": last.step, "size": vm.input_size,
        "original_index": o, "original_class": vm.categories[o], "original_prob": float(orig_probs[o]),
        "target_index": target, "target_class": vm.categories[target] if target is not None else None,
        "target_prob": float(probs[target]) if target is not None else None,
        "adversarial_index": a, "adversarial_class": vm.categories[a], "adversarial_prob": float(probs[a]),
        "success": bool(success), "linf": int(np.abs(delta).max()),
        "l2": float(np.sqrt((delta.astype(np.float64) ** 2).sum())), "seconds": round(seconds, 3)}
    if args.json:
        print(json.dumps(report))
    else:
        what = (f"p({report['target_class']}) = {report['target_prob']:.3f}" if target is not None
                else f"p({report['original_class']}) = {float(probs[o]):.3f}")
        verdict = "fooled" if success else "NOT fooled"
        print(f"wrote {out}: {report['original_class']} ({report['original_prob']:.3f}) -> "
              f"{report['adversarial_class']} ({report['adversarial_prob']:.3f}), {what}, {verdict}; "
              f"L-inf {report['linf']}, L2 {report['l2']:.1f} levels, {last.step} steps")
    return 0
