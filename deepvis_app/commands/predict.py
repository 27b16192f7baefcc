"""`deepvis predict IMAGE...`: top-5 classes with probabilities."""

from __future__ import annotations

import argparse

import torch

from ..render import top_predictions
from ..sources import read_image
from .common import add_model_args, int_in, json_dump, model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="classify images (top-5 with probabilities)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=int_in(1, 100_000), default=5, help="how many classes (default 5)")
    p.add_argument("--crop", choices=("center", "stretch"), default=None, help="fit policy (default: spec's)")
    p.add_argument("--json", action="store_true", help="JSON: [{image, predictions: [{index, label, prob}]}]")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    images = [(path, read_image(path)) for path in args.images]  # all bad paths fail before the model loads
    model = model_from_args(args)
    out = []
    for path, rgb in images:
        with torch.inference_mode():
            logits = model.net(model.preprocess(rgb, args.crop))
        preds = top_predictions(logits[0], model.categories, k=args.top)
        out.append({"image": path, "predictions": [{"index": i, "label": name, "prob": round(p, 6)}
                                                    for i, name, p in preds]})
    if args.json:
        print(json_dump(out))
    else:
        for entry in out:
            print(entry["image"])
            for p in entry["predictions"]:
                print(f"  {p['prob'] * 100:6.2f}%  {p['label']}  ({p['index']})")
    return 0
