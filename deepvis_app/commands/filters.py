"""`deepvis filters --out filters.png`: a conv layer's weights as tiles (first layer in colour)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DeepVisError
from .common import add_model_args, json_dump, model_from_args


def _int_list(text: str | None, what: str) -> list[int] | None:
    """'0-7,12' -> [0..7, 12]."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise DeepVisError(f"{what} {text!r}: give indices like 0-7,12") from None
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "filters", help="draw a conv layer's filters (first layer: colour tiles, grey = 0)",
        description="Draw the weights of a conv layer: the first layer's filters as colour tiles (each scaled "
                    "symmetrically around 0, so grey = 0), deeper layers as one grey tile per (filter, input "
                    "channel). --compare-random puts the same architecture, freshly initialised, beside it.")
    add_model_args(p)
    p.add_argument("--layer", default=None, help="conv layer name (default: the first conv layer)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--filters", default=None, metavar="LIST",
                   help="filter indices, e.g. 0-15,40 (default: all, at most 256)")
    p.add_argument("--inputs", default=None, metavar="LIST",
                   help="deeper layers: input-channel indices (default: the first 32)")
    p.add_argument("--zoom", type=int, default=None, help="pixels per weight (default: about 24 px per tile)")
    p.add_argument("--compare-random", action="store_true",
                   help="trained and randomly initialised (same architecture, --seed) side by side")
    p.add_argument("--seed", type=int, default=0, help="seed of the random twin (default 0)")
    p.add_argument("--json", action="store_true", help="print what was drawn as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..fileio import atomic_write_png
    from ..filters import filter_tiles, random_twin, side_by_side

    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".png":
        raise DeepVisError(f"--out {out}: give a .png file name")
    if not out.parent.is_dir():
        raise DeepVisError(f"--out {out}: the folder {out.parent} does not exist")
    if out.is_dir():
        raise DeepVisError(f"--out {out} is a directory; give a .png file name")
    vm = model_from_args(args)
    kw = dict(filters=_int_list(args.filters, "--filters"), inputs=_int_list(args.inputs, "--inputs"),
              zoom=args.zoom)
    tiles = filter_tiles(vm, args.layer, **kw)
    info = {"model": vm.name, "weights": str(vm.weights), **tiles.info(), "out": str(out)}
    image = tiles.image
    if args.compare_random:
        twin = filter_tiles(random_twin(vm, args.seed), tiles.layer, **kw)
        left = "trained" if vm.weights == "default" else Path(str(vm.weights)).name
        image = side_by_side(tiles.image, twin.image, labels=(left, f"random (seed {args.seed})"))
        info["random"] = {"seed": args.seed, "scale": twin.scale}
        info["image_shape"] = list(image.shape)
    atomic_write_png(out, image)
    if args.json:
        print(json_dump(info))
    else:
        shape = "x".join(str(s) for s in tiles.weight_shape)
        print(f"wrote {out}: {tiles.layer} ({shape}), {len(tiles.filters)} filters as {tiles.kind} tiles"
              + (" (truncated: use --filters/--inputs)" if tiles.truncated else ""))
        if tiles.caveat:
            print(f"note: {tiles.caveat}", file=sys.stderr)
    return 0
