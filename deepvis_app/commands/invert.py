"""`deepvis invert`: reconstruct a photo from its code at several layers (Mahendran & Vedaldi 2015).

Writes DIR/original.png (the photo as the network sees it), one DIR/<layer>.png per layer, DIR/overview.png
(all side by side, captioned with the relative code error) and DIR/invert.json (the report; it also marks DIR
as ours, so a later run may write into it without --force). Every figure is measured on the PNG as written.
All files are written together at the end: a run that fails leaves nothing new. See docs/inversion.md.
`read_photo` is shared with `dream` and `style`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeepVisError
from ..fileio import encode_png
from ..optimize.invert import invert, side_by_side, top1
from ..outputs import write_files
from ..sources import decode_image, read_image
from .common import (
    add_model_args,
    bar_update,
    check_distinct,
    check_output_folder,
    float_in,
    job_bar,
    model_from_args,
    model_inputs,
    seed_arg,
    side_arg,
    steps_arg,
)

REPORT = "invert.json"
MAX_LAYERS = 64


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "invert", help="reconstruct an image from a layer's code (feature inversion)",
        description="Find an image whose code at each layer matches the photo's (relative code error + alpha-norm "
                    "and total-variation priors). Reconstructions from deeper layers show what they throw away. "
                    "See docs/inversion.md.")
    p.add_argument("image", metavar="IMAGE", help="the photo to invert")
    p.add_argument("--layers", required=True, help="comma-separated layer names (see `deepvis layers`)")
    p.add_argument("--steps", type=steps_arg, default=200, help="optimization steps per layer (default: 200)")
    p.add_argument("--size", type=side_arg, help="square size the photo is cropped and resized to (default: the "
                                                 "model's input size)")
    p.add_argument("--tv-weight", type=float_in(0.0, 1e6),
                   help="total-variation prior weight, 0..1e6 (default: grows with depth)")
    p.add_argument("--alpha-weight", type=float_in(0.0, 1e6), default=1e-3,
                   help="alpha-norm prior weight, 0..1e6 (default: 1e-3)")
    p.add_argument("--lr", type=float_in(0.0, 1.0, lo_open=True), default=0.05,
                   help="Adam step size in pixel units 0..1, (0, 1] (default: 0.05)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed of the start image (default: 0)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the result cache")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: new, empty or an earlier invert's (created if its parent exists)")
    p.add_argument("--force", action="store_true", help="write into a --out folder that holds other files")
    p.add_argument("--json", action="store_true", help="print a JSON report to stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=run)


def read_photo(path: str) -> Any:
    return read_image(path)  # SourceError (a DeepVisError): one line for missing, unreadable or corrupt files


def parse_layers(spec: str) -> list[str]:
    layers = list(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
    if not layers:
        raise DeepVisError("--layers needs at least one layer name, e.g. --layers _blocks.3,_blocks.10")
    if len(layers) > MAX_LAYERS:
        raise DeepVisError(f"--layers names {len(layers)} layers; at most {MAX_LAYERS} per run")
    names: dict[str, str] = {"original.png": "the photo", "overview.png": "the overview"}
    for layer in layers:
        other = names.setdefault(layer_file(layer), f"layer {layer!r}")
        if other != f"layer {layer!r}":
            raise DeepVisError(f"--layers: layer {layer!r} would be written to {layer_file(layer)}, as {other} is")
    return layers


def is_invert_folder(folder: Path) -> bool:
    """A folder an earlier `deepvis invert` wrote (its report is there)."""
    return (folder / REPORT).is_file()


def layer_file(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", layer) + ".png"


def run(args: argparse.Namespace) -> int:
    layers = parse_layers(args.layers)
    out = check_output_folder(args.out, ours=is_invert_folder, force=args.force)
    names = ["original.png", "overview.png", REPORT, *(layer_file(layer) for layer in layers)]
    check_distinct({"IMAGE": args.image, **model_inputs(args)}, {f"--out {name}": out / name for name in names})
    photo = read_photo(args.image)
    vm = model_from_args(args)
    for layer in layers:
        vm.info(layer)  # one line listing the valid layers
    size = args.size or vm.input_size
    results = []
    t0 = time.perf_counter()
    for layer in layers:
        with job_bar(args.steps, f"invert {layer}", args.quiet) as bar:
            res = invert(vm, photo, layer, steps=args.steps, size=size, lr=args.lr, alpha_weight=args.alpha_weight,
                         tv_weight=args.tv_weight, seed=args.seed, use_cache=not args.no_cache, yield_every=1,
                         on_step=lambda st, bar=bar: bar_update(bar, st.step, st.losses))
        png = encode_png(res.image)
        saved = decode_image(np.frombuffer(png, np.uint8))  # measured on the PNG as it will be written
        results.append((layer, res, saved, out / layer_file(layer), png))
    original = results[0][1].original
    o_idx, o_p = top1(vm, original)
    rows = []
    for layer, res, saved, path, _ in results:
        idx, p = top1(vm, saved)
        rows.append({"layer": layer, "out": str(path), "code_error": round(res.code_error, 5),
                     "tv_weight": res.settings["tv_weight"], "top1_index": idx, "top1_class": vm.categories[idx],
                     "top1_prob": round(p, 4), "same_top1": idx == o_idx, "cached": res.cached})
    overview = side_by_side([original] + [r[2] for r in results],
                            ["original"] + [f"{r[0]} err {r[1].code_error:.2f}" for r in results])
    report = {"image": args.image, "out": str(out), "model": vm.name, "weights": vm.weights, "size": size,
              "steps": args.steps, "seed": args.seed, "original_top1_index": o_idx,
              "original_top1_class": vm.categories[o_idx], "original_top1_prob": round(o_p, 4), "layers": rows,
              "seconds": round(time.perf_counter() - t0, 3)}
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    files = {path: png for _, _, _, path, png in results}
    files.update({out / "original.png": encode_png(original), out / "overview.png": encode_png(overview),
                  out / REPORT: json.dumps(report, indent=1).encode("utf-8")})
    try:
        write_files(files)  # all together, at the end
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    if args.json:
        print(json.dumps(report))
    else:
        print(f"original: {vm.categories[o_idx]} ({o_p:.3f})")
        for r in rows:
            same = "same top-1" if r["same_top1"] else "top-1 changed"
            print(f"{r['layer']}: relative code error {r['code_error']:.3f}, {r['top1_class']} ({r['top1_prob']:.3f}),"
                  f" {same} -> {r['out']}")
        print(f"wrote {out / 'overview.png'}")
    return 0
