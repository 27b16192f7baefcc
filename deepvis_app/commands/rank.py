"""`deepvis rank IMAGE --layer L [--class C] [--by gradxact|ablation]`: the channels of a layer that drive a class,
best first."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from ..errors import DeepVisError, ParamError
from ..interventions import RANK_METHODS, rank_channels
from ..sources import read_image
from ..values import ClassTarget
from .common import LazyBar, add_model_args, batch_arg, int_in, json_dump, model_from_args
from .optimize import resolve_class

FLAGS = {"channels": "--units", "layer": "--layer", "by": "--by", "batch": "--batch"}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "rank", help="rank a layer's channels by how much a class needs them",
        description="Rank the channels of --layer for a class on IMAGE: by activation x gradient summed over the "
                    "layer's positions (gradxact, one backward), or by the drop in the class probability when "
                    "each channel alone is zeroed (ablation, batched; only the layers above --layer rerun). "
                    "See docs/interventions.md.")
    p.add_argument("image", metavar="IMAGE", help="input image file")
    p.add_argument("--layer", required=True, help="layer name (see `deepvis layers`), e.g. _blocks.10")
    p.add_argument("--class", dest="cls", metavar="NAME|INDEX",
                   help="class name or index (default: the image's top-1 class)")
    p.add_argument("--by", choices=RANK_METHODS, default="gradxact",
                   help="gradxact: activation x gradient (default); ablation: drop when the channel is zeroed")
    p.add_argument("--score", choices=("prob", "logit"), default=None,
                   help="the class score ranked on (default: logit for gradxact, as Captum's "
                        "LayerGradientXActivation; prob for ablation)")
    p.add_argument("--top", type=int_in(1, 10**9), default=None, help="list only the N best channels (default: all)")
    p.add_argument("--batch", type=batch_arg, default=32, help="ablation: channels per batched forward (default 32)")
    p.add_argument("--json", action="store_true", help="print the ranking as JSON: [{channel, score}, ...] best first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ParamError as err:  # the core's parameter names -> this command's flags
        raise DeepVisError(err.flag_message(FLAGS)) from None


def _run(args: argparse.Namespace) -> int:
    rgb = read_image(args.image)  # a bad image: one line before the model loads
    vm = model_from_args(args)
    info = vm.info(args.layer)
    x = vm.preprocess(rgb)
    if args.cls is not None:
        cls = resolve_class(args.cls, vm.categories)
    else:
        with torch.no_grad():
            cls = int(vm.net(x).argmax())
    score = args.score or ("logit" if args.by == "gradxact" else "prob")
    bar = None if args.quiet or args.by != "ablation" else LazyBar(info.channels, "rank", unit="ch")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.show(done, total=total)

    try:
        ranking = rank_channels(vm.net, x, args.layer, ClassTarget(cls, score), info, by=args.by, batch=args.batch,
                                progress=progress)
    finally:
        if bar is not None:
            bar.close()
    rows = ranking.as_list(args.top)
    if args.json:
        print(json_dump(rows))
        return 0
    label = vm.categories[cls] if cls < len(vm.categories) else str(cls)
    if args.by == "gradxact":
        print(f"{args.layer}: channels for {label!r} ({cls}) by activation x gradient of its {score}, summed over "
              "positions")
    else:
        print(f"{args.layer}: channels for {label!r} ({cls}) by the drop in its {score} when zeroed alone; "
              f"{score} without intervention: {ranking.base:.6g}\n  ({ranking.note})")
    for row in rows:
        print(f"  {row['channel']:6d}  {row['score']:+.6g}")
    return 0
