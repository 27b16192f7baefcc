"""`deepvis scan DATA --out STORE` (top-k images of every unit) and `deepvis topk STORE --layer L --unit C`."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import DeepVisError
from .common import add_model_args, batch_arg, int_in, model_from_args, print_notice, unit_arg, workers_arg

ASK_ABOVE_GB = 3.0  # an interactive scan asks before writing a store estimated above this


def confirm_plan(args: argparse.Namespace):
    """Print pass 2's plan (entries, images, estimated size) and ask for large stores when interactive."""
    from ..topk.plan import format_bytes

    def on_plan(plan: dict) -> None:
        eager = f", {plan['crop_files']} {'/'.join(plan['eager_kinds'])} crop files" if plan["eager_kinds"] else ""
        if not args.quiet:
            print(f"deepvis: plan: {plan['entries']} entries, {plan['images']} images to store{eager}; "
                  f"store about {format_bytes(plan['estimated_bytes'])}", file=sys.stderr)
        if plan["estimated_bytes"] <= ASK_ABOVE_GB * 1e9 or args.yes or not sys.stdin.isatty():
            return
        try:
            answer = input(f"write about {format_bytes(plan['estimated_bytes'])} to {args.out}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            raise DeepVisError("stopped before writing the store; pass 1 is saved: rerun with --resume --yes to "
                               "write it, or choose fewer --layers / a smaller --top-k")

    return on_plan


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "scan", help="find the top-k images (and patches) exciting each unit over a dataset",
        description="Pipe a folder (recursive) or a list file of images through the net; for every channel of "
                    "the chosen layers keep the k images with the highest spatial maximum in a STORE directory "
                    "(each winning image stored once; receptive-field crops are cut from it, deconvnet / "
                    "guided-backprop crops are rendered on first view, or now with --attribution). Also runs under "
                    "`torchrun --nproc_per_node=N -m deepvis_app scan ...` (see docs/scan.md).")
    p.add_argument("data", metavar="DATA", help="folder of images (searched recursively) or a text file of paths")
    p.add_argument("--out", required=True, metavar="STORE", help="store directory to write (replaced atomically)")
    add_model_args(p)
    p.add_argument("--layers", default=None,
                   help="comma-separated layer names, or 'all' (default: the model spec's shown layers)")
    p.add_argument("--top-k", type=int_in(1, 10_000), default=9, help="images kept per unit, 1..10000 (default 9)")
    p.add_argument("--batch-size", type=batch_arg, default=32, help="images per forward pass, 1..4096 (default 32)")
    p.add_argument("--workers", type=workers_arg, default=None,
                   help="decoding worker processes (default: 0 = inline on a CPU device, whose cores the "
                        "forward needs; min(8, CPUs per process) on a GPU)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted scan of the same STORE")
    p.add_argument("--attribution", default="none",
                   help="compute these crops for every entry now: 'deconv,guided', one of them, or 'none' "
                        "(default: rendered on first view of a unit, in the app or by `deepvis topk --render`)")
    p.add_argument("--no-crops", action="store_true",
                   help="skip pass 2: store entries and boxes only, no images (viewers then show no pixels)")
    p.add_argument("--yes", action="store_true",
                   help=f"write the store without asking even when it is estimated above {ASK_ABOVE_GB:g} GB")
    p.add_argument("--checkpoint-every", type=int_in(1, 10**6), default=20, metavar="N",
                   help="checkpoint the running top-k every N batches (default 20)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no plan")
    p.set_defaults(func=run)

    t = subparsers.add_parser("topk", help="print the top-k entries of one unit from a STORE",
                              description="Print a unit's entries (rank, value, y, x, box, path) from a STORE "
                                          "written by `deepvis scan` or the live top-k.")
    t.add_argument("store", metavar="STORE")
    t.add_argument("--layer", default=None, help="layer name (default: the store's first layer)")
    t.add_argument("--unit", type=unit_arg, required=True, help="channel index")
    t.add_argument("--json", action="store_true", help="JSON output")
    t.add_argument("--render", action="store_true",
                   help="render the unit's deconv / guided crops the store lacks and write them into it "
                        "(needs the store's model: --model/--weights)")
    add_model_args(t)
    t.set_defaults(func=run_topk)


def run(args: argparse.Namespace) -> int:
    from ..topk.distributed import init_distributed
    from ..topk.scan import scan

    text = (args.attribution or "none").strip().lower()
    attribution = [] if text in ("none", "") else [k.strip() for k in text.split(",") if k.strip()]
    dist, args.device = init_distributed(args.device)
    try:
        vm = model_from_args(args)
        report = scan(vm, args.data, args.out, layers=args.layers, top_k=args.top_k, batch_size=args.batch_size,
                      workers=args.workers, resume=args.resume, attribution=attribution,
                      checkpoint_every=args.checkpoint_every, progress=not args.quiet,
                      crops=not args.no_crops, dist=dist, on_plan=confirm_plan(args),
                      on_notice=print_notice)
    finally:
        dist.close()
    if dist.rank == 0 and not args.quiet:
        print(f"wrote {args.out}: {report['images_scanned']} images scanned, {report['bad_count']} unreadable "
              f"skipped, {report['images_per_s']} img/s", file=sys.stderr)
    return 0


def run_topk(args: argparse.Namespace) -> int:
    from ..topk.store import TopKStore

    store = TopKStore.open(args.store)
    layer = args.layer or (store.layers[0] if store.layers else None)
    if layer is None:
        raise DeepVisError(f"{args.store}: the store has no layers")
    channels = store.channels(layer)
    if not 0 <= args.unit < channels:
        raise DeepVisError(f"--unit {args.unit} is out of range: layer {layer!r} has units 0..{channels - 1}")
    entries = store.entries(layer, args.unit)
    if args.render:
        return _render(args, store, layer, entries)
    if args.json:
        print(json.dumps({"layer": layer, "unit": args.unit, "entries": [
            {"rank": e.rank, "path": e.path, "image_id": e.image_id, "value": e.value, "y": e.y, "x": e.x,
             "box": list(e.box), "padded": e.padded} for e in entries]}, indent=1))
        return 0
    print(f"{layer} unit {args.unit}: {len(entries)} entries")
    for e in entries:
        pad = " padded" if e.padded else ""
        print(f"{e.rank:3d}  {e.value:12.5g}  y={e.y:<4d} x={e.x:<4d} box={list(e.box)}{pad}  {e.path}")
    return 0


def _render(args: argparse.Namespace, store, layer: str, entries: list) -> int:
    import time

    from ..topk.crops import iter_render_unit

    vm = model_from_args(args)
    t0 = time.perf_counter()
    done = list(iter_render_unit(store, vm, layer, args.unit))
    seconds = time.perf_counter() - t0
    written = sum(c.written for c in done)
    if args.json:
        print(json.dumps({"layer": layer, "unit": args.unit, "seconds": round(seconds, 3), "crops": [
            {"rank": c.rank, "kind": c.kind, "path": str(store.crop_path(layer, args.unit, c.rank, c.kind)),
             "written": c.written} for c in done]}, indent=1))
        return 0
    print(f"{layer} unit {args.unit}: {len(done)} deconv/guided crops for {len(entries)} entries "
          f"({written} written into {store.root}) in {seconds:.2f} s")
    return 0
