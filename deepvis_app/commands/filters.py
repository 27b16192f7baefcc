"""`deepvis filters --out filters.png`: a conv layer's weights as tiles (first layer in colour)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DeepVisError
from .common import (
    add_model_args,
    check_distinct,
    check_output_file,
    int_in,
    json_dump,
    model_from_args,
    model_inputs,
    seed_arg,
)

MAX_ZOOM = 64


def index_list(text: str | None, what: str, limit: int = 100_000) -> list[int] | None:
    """'0-7,12' -> [0..7, 12]; a range that runs down (7-0), a negative index or more than `limit` indices is
    one line naming `what` (the option)."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.strip().isdigit() or (sep and not hi.strip().isdigit()):
            raise DeepVisError(f"{what} {text!r}: give indices like 0-7,12")
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise DeepVisError(f"{what} {text!r}: the range {part} runs down; write it as {b}-{a}")
        if len(out) + b - a + 1 > limit:
            raise DeepVisError(f"{what} {text!r}: more than {limit} indices")
        out.extend(range(a, b + 1))
    if not out:
        raise DeepVisError(f"{what} {text!r}: give indices like 0-7,12")
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
    p.add_argument("--zoom", type=int_in(1, MAX_ZOOM), default=None,
                   help=f"pixels per weight, 1..{MAX_ZOOM} (default: about 24 px per tile)")
    p.add_argument("--compare-random", action="store_true",
                   help="trained and randomly initialised (same architecture, --seed) side by side")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the random twin (default 0)")
    p.add_argument("--json", action="store_true", help="print what was drawn as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..fileio import atomic_write_png
    from ..filters import filter_tiles, random_twin, side_by_side

    out = check_output_file(Path(args.out).expanduser(), (".png",))
    check_distinct(model_inputs(args), {"--out": out})
    kw = dict(filters=index_list(args.filters, "--filters"), inputs=index_list(args.inputs, "--inputs"),
              zoom=args.zoom)
    vm = model_from_args(args)
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
