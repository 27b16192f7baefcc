"""`deepvis embed DATA --out DIR`: codes of every image, a t-SNE (or UMAP) map of them, and its pictures."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import DeepVisError
from .common import (
    add_model_args,
    batch_arg,
    check_distinct,
    check_output_folder,
    float_in,
    int_in,
    json_dump,
    model_from_args,
    model_inputs,
    print_notice,
    seed_arg,
    workers_arg,
)

MAX_PERPLEXITY = 10_000.0  # t-SNE caps it at (N - 1) / 3 anyway


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed", help="lay out images by what the network finds similar (t-SNE of its codes)",
        description="Extract the code before the classifier (pooled penultimate features, or --layer pooled) "
                    "of every image in DATA, lay the codes out in 2-D with openTSNE (or UMAP), and write the "
                    "codes, a CSV of positions and predicted classes, and two pictures: thumbnails at their "
                    "positions and snapped to a grid. DATA may also be a codes.npz from an earlier run (no "
                    "extraction). Runs under `torchrun --nproc_per_node=N -m deepvis_app embed ...`.")
    p.add_argument("data", metavar="DATA", help="folder of images (recursive), a text file of paths, or codes.npz")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: new, empty or an earlier embed's (created; locked while written)")
    p.add_argument("--force", action="store_true", help="write into a --out folder that holds other files")
    add_model_args(p)
    p.add_argument("--layer", default=None,
                   help="layer whose output is pooled into the code (default: the classifier's input; "
                        "NAME:input means the input of module NAME)")
    p.add_argument("--method", default="tsne", help="tsne (openTSNE, default) or umap (needs deepvis[umap])")
    p.add_argument("--perplexity", type=float_in(0.0, MAX_PERPLEXITY, lo_open=True), default=30.0,
                   help="t-SNE perplexity, (0, 10000] (default 30; capped at (N-1)/3)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed of the layout (default 0)")
    p.add_argument("--batch-size", type=batch_arg, default=32, help="images per forward pass (default 32)")
    p.add_argument("--workers", type=workers_arg, default=None,
                   help="decoding worker processes, 0..64 (default: inline on CPU, min(8, CPUs) on a GPU)")
    p.add_argument("--thumb-size", type=int_in(0, 256), default=32,
                   help="stored thumbnail side in pixels, 0..256 (default 32)")
    p.add_argument("--no-pictures", action="store_true", help="skip map.png and grid.png")
    p.add_argument("--resume", action="store_true", help="continue an interrupted extraction into the same DIR")
    p.add_argument("--checkpoint-every", type=int_in(1, 10**6), default=4, metavar="N",
                   help="keep finished batches on disk every N batches (default 4)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


@contextlib.contextmanager
def _undone_on_failure(out: Path) -> Iterator[None]:
    """Inside the output lock: when the run fails, remove the folder it created and its lock file (a failed run
    leaves nothing new; the lock is still ours, so no other run can be using the file). Ctrl-C keeps a new
    folder's parts for --resume."""
    from ..topk.store import lock_path

    created = not out.exists()
    try:
        yield
    except (DeepVisError, OSError, MemoryError):
        if created:
            shutil.rmtree(out, ignore_errors=True)
            lock_path(out).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    from ..embed.codes import CODES_FILE, Codes, extract_codes, is_embed_folder, resolve_code_layer
    from ..embed.job import OUTPUT_FILES, embed_outputs, output_locked
    from ..embed.maps import METHODS, UMAP_HINT
    from ..outputs import same_file

    method = args.method.strip().lower()
    if method not in METHODS:
        raise DeepVisError(f"unknown --method {args.method!r}; use tsne or umap")
    if method == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise DeepVisError(UMAP_HINT) from None
    data = Path(args.data).expanduser()
    if not data.exists():
        raise DeepVisError(f"DATA not found: {data} (give a folder of images, a text file listing image paths or "
                           "a codes.npz)")
    out = check_output_folder(Path(args.out).expanduser(), ours=is_embed_folder, force=args.force)
    if data.is_dir() and same_file(data, out):
        raise DeepVisError(f"--out {out} is the DATA folder: the run's own pictures would be embedded by the next "
                           "one; choose a folder beside or below it")
    from_codes = data.is_file() and data.suffix.lower() == ".npz"
    in_place = from_codes and same_file(data, out / CODES_FILE)  # re-embedding a folder's own codes
    outputs = {f"--out {name}": out / name for name in OUTPUT_FILES if not (in_place and name == CODES_FILE)}
    check_distinct({"DATA": data, **model_inputs(args)}, outputs)
    codes = Codes.load(data) if from_codes else None  # every array checked before anything is written
    if codes is not None:
        with output_locked(out), _undone_on_failure(out):
            report, _ = embed_outputs(codes, out, method=method, perplexity=args.perplexity, seed=args.seed,
                                      pictures=not args.no_pictures, with_codes=not in_place)
    else:
        from ..topk.scan import init_distributed

        dist, args.device = init_distributed(args.device)
        rank = dist.rank
        try:
            vm = model_from_args(args)
            resolve_code_layer(vm, args.layer)  # an unknown layer is one line before anything is written
            locked = contextlib.ExitStack()
            if rank == 0:
                locked.enter_context(output_locked(out))
                locked.enter_context(_undone_on_failure(out))
            with locked:
                codes = extract_codes(vm, str(data), out, layer=args.layer, batch_size=args.batch_size,
                                      workers=args.workers, resume=args.resume, thumb=args.thumb_size,
                                      checkpoint_every=args.checkpoint_every, dist=dist, progress=not args.quiet,
                                      on_notice=print_notice)
                if rank != 0 or codes is None:
                    return 0
                report, _ = embed_outputs(codes, out, method=method, perplexity=args.perplexity, seed=args.seed,
                                          pictures=not args.no_pictures)
        finally:
            dist.close()
    if args.json:
        print(json_dump({**report, "out": str(out)}))
    else:
        e = report["embedding"]
        print(f"wrote {out}: {report['images']} images ({report['unreadable']} unreadable skipped), "
              f"{report['code_dims']}-d codes of {report['code_layer']}, {method} in {e['seconds']} s",
              file=sys.stderr)
    return 0
