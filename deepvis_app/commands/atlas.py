"""`deepvis atlas STORE --out SITE`: a static web site of a scan store (see docs/atlas.md)."""

from __future__ import annotations

import argparse
import sys

from ..errors import DeepVisError, ParamError
from ..zoo import DEFAULT_MODEL
from .common import add_model_args, check_output_dir, int_in, print_notice

FLAGS = {"image_format": "--format", "layers": "--layers", "out": "--out", "optimize": "--optimize"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "atlas", help="write a static web site of a top-k STORE: a page per layer and per unit",
        description="Build a static site from a STORE written by `deepvis scan`: an index of layers, a page per "
                    "layer (every unit as a tile, sortable) and a page per unit at SITE/LAYER/UNIT.html (top-k "
                    "images with receptive-field and stored deconv/guided crops, the optimized image when cached, "
                    "activation statistics, a label from the class layer). Opens from the file system. The site "
                    "is replaced atomically; a killed build resumes. Optimized images: with --optimize, missing "
                    "ones are made (also under `torchrun --nproc_per_node=N -m deepvis_app atlas ...`).")
    p.add_argument("store", metavar="STORE", help="a store written by `deepvis scan`")
    p.add_argument("--out", required=True, metavar="SITE", help="folder to write (replaced atomically)")
    p.add_argument("--layers", default=None,
                   help="comma-separated layer names or titles (default: every layer of the store)")
    p.add_argument("--optimize", action="store_true",
                   help="make the optimized images the cache lacks (the app's settings; slow on a CPU)")
    p.add_argument("--format", choices=("webp", "jpeg"), default="webp", help="thumbnail format (default: webp)")
    p.add_argument("--quality", type=int_in(1, 100), default=80, help="thumbnail quality 1-100 (default 80)")
    p.add_argument("--max-images", type=int_in(1, 1_000_000), default=512,
                   help="images of the store run through the model for the statistics (default 512)")
    p.add_argument("--no-model", action="store_true",
                   help="build from the store alone: no statistics beyond the top-k, no labels, no optimized images")
    add_model_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def store_model(args: argparse.Namespace, store, on_notice) -> object | None:
    """The store's model (as recorded in it) unless --model/--weights name another; None when it cannot load and
    none was named (the site is then built from the store alone, with a notice)."""
    from ..zoo import load_model

    recorded = store.model
    named = getattr(args, "model", DEFAULT_MODEL) != DEFAULT_MODEL or getattr(args, "weights", "default") != "default"
    name = args.model if getattr(args, "model", DEFAULT_MODEL) != DEFAULT_MODEL else recorded.get("name", DEFAULT_MODEL)
    weights = args.weights if getattr(args, "weights", "default") != "default" else recorded.get("weights", "default")
    try:
        return load_model(name, weights=weights, device=getattr(args, "device", "auto"))
    except DeepVisError as err:
        if named or args.optimize:
            raise
        on_notice(f"cannot load the store's model {name!r} ({err}); building from the store alone (pass --model "
                  "SPEC to name it)")
        return None


class StageBars:
    """One tqdm bar per stage of the job, on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.stage, self.bar = quiet, None, None

    def __call__(self, p) -> None:
        if self.quiet:
            return
        if p.stage != self.stage:
            self.close()
            from tqdm import tqdm

            self.stage = p.stage
            self.bar = tqdm(total=p.total, desc=f"atlas {p.stage}", file=sys.stderr, leave=False,
                            dynamic_ncols=True, mininterval=0.5)
        self.bar.total = p.total
        self.bar.n = p.done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> int:
    from ..atlas import build_atlas
    from ..atlas.job import check_target
    from ..topk.distributed import init_distributed
    from ..topk.store import TopKStore

    out = check_output_dir(args.out)
    try:
        check_target(out)  # before anything loads: a folder that is not an atlas is never touched
    except ParamError as err:
        raise DeepVisError(err.flag_message(FLAGS)) from None
    store = TopKStore.open(args.store)

    dist, args.device = init_distributed(getattr(args, "device", "auto"))  # under torchrun: rank 0 writes the site
    bars = StageBars(args.quiet or dist.rank != 0)
    try:
        vm = None if args.no_model else store_model(args, store, print_notice)
        report = build_atlas(store.root, out, layers=args.layers, vm=vm, optimize=args.optimize,
                             image_format=args.format, quality=args.quality, max_images=args.max_images,
                             dist=dist, on_progress=bars, on_notice=print_notice)
    except ParamError as err:
        raise DeepVisError(err.flag_message(FLAGS)) from None
    finally:
        bars.close()
        dist.close()
    if report is None:  # a torchrun rank other than 0: it made its share of the optimized images
        return 0
    kept = f", kept {report.kept} files of the interrupted build" if report.resumed else ""
    made = f", {report.optimized_made} optimized images made" if report.optimized_made else ""
    print(f"wrote {report.out}: {len(report.layers)} layers, {report.units} units, {report.pages} pages, "
          f"{report.bytes / 1e6:.1f} MB in {report.files} files{made}{kept} ({report.seconds:.1f} s); "
          f"open {report.out / 'index.html'}")
    return 0
