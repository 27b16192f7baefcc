"""`deepvis evaluate IMAGE|FOLDER --method M[,M...] [--class C] --json`: faithfulness figures of attribution
methods (deletion/insertion AUC, ROAD, average drop/increase, sanity), each beside a random map's."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from typing import Any

from ..errors import DeepVisError
from ..evaluate.faithfulness import FILLS
from ..evaluate.job import METRICS, EvalOptions, check_options, evaluate
from ..methods.ig import BASELINES
from ..methods.lrp import COMPOSITES, DEFAULT_COMPOSITE
from ..sources import read_image
from ..topk.images import list_images
from .common import (
    LazyBar,
    add_model_args,
    check_distinct,
    check_output_file,
    float_in,
    int_in,
    model_from_args,
    model_inputs,
)
from .optimize import resolve_class

MAX_IMAGES = 10_000


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", help="faithfulness of attribution maps: deletion/insertion AUC, ROAD, drop, sanity",
        description="Score how faithful attribution methods are on IMAGE or every image in FOLDER: deletion and "
                    "insertion AUC, ROAD, average drop/increase in confidence, and the cascading-randomization "
                    "sanity check, each beside a random map's figure. See docs/evaluation.md.")
    p.add_argument("images", metavar="IMAGE|FOLDER", help="an image file or a folder of images")
    p.add_argument("--method", required=True,
                   help="comma-separated methods, e.g. gradcam,gradient,random (see `deepvis attribute --help`)")
    p.add_argument("--class", dest="cls", metavar="NAME|INDEX", help="class to explain (default: the top one)")
    p.add_argument("--layer", help="the CAM layer (default: the last layer with positions)")
    p.add_argument("--metrics", default=",".join(METRICS),
                   help=f"comma-separated, from {', '.join(METRICS)} (default: all)")
    p.add_argument("--fill", choices=FILLS, default="blur",
                   help="what deleted pixels become: blur (default) or grey (the normalization's mean colour)")
    p.add_argument("--curve-steps", type=int_in(1, 1000), default=20,
                   help="intervals of the deletion/insertion curves (default: 20)")
    p.add_argument("--road-percentiles", default="10,20,30,40,50,60,70,80,90",
                   help="percentages of pixels ROAD removes, comma-separated (default: 10 to 90 by 10)")
    p.add_argument("--score", choices=("prob", "logit"), default="prob", help="class score (default: prob)")
    p.add_argument("--steps", type=int_in(1, 1024), default=32, help="IG integration steps (default: 32)")
    p.add_argument("--baseline", choices=BASELINES, default="black", help="IG baseline (default: black)")
    p.add_argument("--samples", type=int_in(1, 1000), default=25, help="SmoothGrad/VarGrad samples (default: 25)")
    p.add_argument("--noise", type=float_in(0, 10), default=0.15,
                   help="SmoothGrad/VarGrad noise, a fraction of the input's range (default: 0.15)")
    p.add_argument("--composite", choices=COMPOSITES, default=DEFAULT_COMPOSITE, help="LRP composite")
    p.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0, help="seed of the random maps and noise")
    p.add_argument("--limit", type=int_in(1, MAX_IMAGES), default=MAX_IMAGES, help="at most this many images")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> EvalOptions:
    methods = tuple(m.strip() for m in args.method.split(",") if m.strip())
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    if not methods:
        raise DeepVisError("--method is empty: give one or more methods, e.g. gradcam,random")
    if not metrics:
        raise DeepVisError("--metrics is empty: give one or more of " + ", ".join(METRICS))
    try:
        percentiles = tuple(int(p) for p in args.road_percentiles.split(","))
    except ValueError:
        percentiles = ()
    if not percentiles or not all(1 <= p <= 99 for p in percentiles):
        raise DeepVisError(f"--road-percentiles takes whole numbers from 1 to 99, e.g. 20,50,80; got "
                           f"{args.road_percentiles!r}")
    extra = (("steps", args.steps), ("baseline", args.baseline), ("samples", args.samples), ("noise", args.noise),
             ("composite", args.composite))
    return EvalOptions(methods=methods, layer=args.layer, metrics=metrics, fill=args.fill,
                       curve_steps=args.curve_steps, score=args.score, seed=args.seed,
                       road_percentiles=percentiles, method_options=extra)


def run(args: argparse.Namespace) -> int:
    options = _options(args)
    check_options(options)
    out = check_output_file(args.out, (".json",)) if args.out else None
    check_distinct({"IMAGE|FOLDER": args.images, **model_inputs(args)}, {"--out": out})
    if os.path.isdir(args.images):
        paths = list_images(args.images)[: args.limit]
        if not paths:
            raise DeepVisError(f"no images in {args.images}")
    else:
        paths = [args.images]
    images = [read_image(p) for p in paths]
    vm = model_from_args(args)
    if options.layer:
        vm.info(options.layer)
    if args.cls is not None:
        options = replace(options, cls=resolve_class(args.cls, vm.categories))
    bar = None if args.quiet else LazyBar(0, "evaluate", unit="map")
    try:
        report = evaluate(vm, images, options, progress=None if bar is None else
                          (lambda done, total: bar.show(done, total=total)))
    finally:
        if bar is not None:
            bar.close()
    report["paths"] = [str(p) for p in paths]
    text = json.dumps(report)
    if out is not None:
        from ..outputs import write_files

        write_files({out: text.encode()})
    if args.json:
        print(text)
    else:
        for method, figures in report["methods"].items():
            line = ", ".join(f"{k} {v['value']:.3f} (random {v['random']:.3f})" for k, v in figures.items()
                             if k != "per_image")
            print(f"{method}: {line}")
    return 0
