"""`deepvis layers`: every probe-able layer with its output shape, in forward order."""

from __future__ import annotations

import argparse

from ..errors import DeepVisError
from .common import add_model_args, json_dump, model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("layers", help="list probe-able layers and their output shapes")
    p.add_argument("--json", action="store_true", help="JSON: [{name, kind, shape, title}]")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    titles = {ls.name: ls.title for ls in model.spec.layers}
    rows = [{"name": i.name, "kind": i.kind, "shape": list(i.shape), "title": titles.get(i.name)}
            for i in model.layer_info]
    if args.json:
        print(json_dump(rows))
        return 0
    if not rows:
        raise DeepVisError(f"{model.name} has no probe-able layers (its builder returned a module without any)")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        shape = "x".join(str(d) for d in r["shape"])
        title = f"  # {r['title']}" if r["title"] else ""
        print(f"{r['name']:<{width}}  {r['kind']:<20} {shape}{title}")
    return 0
