"""`deepvis embed DATA --out DIR`: codes of every image, a t-SNE (or UMAP) map of them, and its pictures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DeepVisError
from .common import add_model_args, json_dump, model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed", help="lay out images by what the network finds similar (t-SNE of its codes)",
        description="Extract the code before the classifier (pooled penultimate features, or --layer pooled) "
                    "of every image in DATA, lay the codes out in 2-D with openTSNE (or UMAP), and write the "
                    "codes, a CSV of positions and predicted classes, and two pictures: thumbnails at their "
                    "positions and snapped to a grid. DATA may also be a codes.npz from an earlier run (no "
                    "extraction). Runs under `torchrun --nproc_per_node=N -m deepvis_app embed ...`.")
    p.add_argument("data", metavar="DATA", help="folder of images (recursive), a text file of paths, or codes.npz")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    add_model_args(p)
    p.add_argument("--layer", default=None,
                   help="layer whose output is pooled into the code (default: the classifier's input; "
                        "NAME:input means the input of module NAME)")
    p.add_argument("--method", default="tsne", help="tsne (openTSNE, default) or umap (needs deepvis[umap])")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30; capped at (N-1)/3)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the layout (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding worker processes (default: inline on CPU, min(8, CPUs) on a GPU)")
    p.add_argument("--thumb-size", type=int, default=32, help="stored thumbnail side in pixels (default 32)")
    p.add_argument("--no-pictures", action="store_true", help="skip map.png and grid.png")
    p.add_argument("--resume", action="store_true", help="continue an interrupted extraction into the same DIR")
    p.add_argument("--checkpoint-every", type=int, default=4, metavar="N",
                   help="keep finished batches on disk every N batches (default 4)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..embed.codes import CODES_FILE, Codes, extract_codes
    from ..embed.job import embed_outputs
    from ..embed.maps import METHODS, UMAP_HINT

    method = args.method.strip().lower()
    if method not in METHODS:
        raise DeepVisError(f"unknown --method {args.method!r}; use tsne or umap")
    if method == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise DeepVisError(UMAP_HINT) from None
    if not args.perplexity > 0:
        raise DeepVisError(f"--perplexity must be positive, got {args.perplexity}")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise DeepVisError(f"--out {out} exists and is not a directory")
    if not out.parent.is_dir():
        raise DeepVisError(f"--out {out}: the folder {out.parent} does not exist")
    data = Path(args.data).expanduser()
    rank = 0
    if data.is_file() and data.suffix.lower() == ".npz":
        codes = Codes.load(data)
        target = out / CODES_FILE
        if not target.exists() or not target.samefile(data):
            out.mkdir(exist_ok=True)
            codes.save(target)  # the folder holds everything its map refers to
    else:
        from ..topk.scan import init_distributed

        dist, args.device = init_distributed(args.device)
        rank = dist.rank
        try:
            vm = model_from_args(args)
            codes = extract_codes(vm, str(data), out, layer=args.layer, batch_size=args.batch_size,
                                  workers=args.workers, resume=args.resume, thumb=args.thumb_size,
                                  checkpoint_every=max(1, args.checkpoint_every), dist=dist,
                                  progress=not args.quiet)
        finally:
            dist.close()
    if rank != 0 or codes is None:
        return 0
    report, _ = embed_outputs(codes, out, method=method, perplexity=args.perplexity, seed=args.seed,
                              pictures=not args.no_pictures)
    if args.json:
        print(json_dump({**report, "out": str(out)}))
    else:
        e = report["embedding"]
        print(f"wrote {out}: {report['images']} images ({report['unreadable']} unreadable skipped), "
              f"{report['code_dims']}-d codes of {report['code_layer']}, {method} in {e['seconds']} s",
              file=sys.stderr)
    return 0
