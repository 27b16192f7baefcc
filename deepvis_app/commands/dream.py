"""`deepvis dream`: DeepDream a photo at one layer (PNG), or a zoom video (MP4, each frame dreamed from the zoomed
previous one). See docs/dream.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import DeepVisError
from ..fileio import encode_png, fsync_dir
from ..optimize.dream import dream, iter_dream_zoom, octave_sizes
from ..optimize.style import fit_max_side
from ..outputs import write_files
from .common import (
    MAX_STEPS,
    add_model_args,
    bar_update,
    check_distinct,
    check_output_file,
    float_in,
    int_in,
    job_bar,
    model_from_args,
    model_inputs,
    seed_arg,
    side_arg,
)
from .invert import read_photo

MAX_FRAMES = 10_000  # frames are written as they come, so memory does not grow with this


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dream", help="DeepDream: amplify what a layer sees in a photo (PNG, or a zoom video as MP4)",
        description="Gradient ascent on the layer's squared activations with octaves, random roll and normalized "
                    "steps. --out F.png dreams once; --out F.mp4 makes a zoom video. See docs/dream.md.")
    p.add_argument("image", metavar="IMAGE", help="the photo to dream on")
    p.add_argument("--layer", required=True, help="layer name (see `deepvis layers`): low = strokes, high = eyes")
    p.add_argument("--octaves", type=int_in(1, 12), default=4, help="scales, smallest first, 1..12 (default: 4)")
    p.add_argument("--octave-scale", type=float_in(1.0, 4.0, lo_open=True), default=1.4,
                   help="size ratio between octaves, (1, 4] (default: 1.4)")
    p.add_argument("--steps", type=int_in(0, MAX_STEPS), default=10, help="gradient steps per octave (default: 10)")
    p.add_argument("--lr", type=float_in(0.0, 1.0, lo_open=True), default=0.01,
                   help="step in pixel units 0..1 after normalizing the gradient, (0, 1] (default: 0.01)")
    p.add_argument("--jitter", type=int_in(0, 512), default=16, help="largest random roll in pixels (default: 16)")
    p.add_argument("--size", type=side_arg, default=384, help="longest side the photo is resized to (default: 384)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed of the rolls (default: 0)")
    p.add_argument("--frames", type=int_in(1, MAX_FRAMES), help="with --out F.mp4: number of video frames "
                                                                 "(default: 30)")
    p.add_argument("--zoom", type=float_in(1.0, 2.0), default=1.05, help="zoom per video frame, 1..2 (default: 1.05)")
    p.add_argument("--fps", type=float_in(1.0, 120.0), default=10.0, help="video frame rate, 1..120 (default: 10)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the result cache")
    p.add_argument("--out", required=True, help="output .png (one dream) or .mp4 (zoom video)")
    p.add_argument("--json", action="store_true", help="print a JSON report to stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> tuple[Path, bool]:
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".mp4"):
        raise DeepVisError(f"--out must be a .png (one dream) or .mp4 (zoom video), got {args.out!r}")
    out = check_output_file(out, (".png", ".mp4"))
    video = out.suffix.lower() == ".mp4"
    if args.frames is not None and not video:
        raise DeepVisError("--frames makes a video: use --out F.mp4")
    check_distinct({"IMAGE": args.image, **model_inputs(args)}, {"--out": out})
    return out, video


def write_mp4(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write RGB frames as an MP4 (mp4v) next to `path` as they come (memory stays flat), check that OpenCV reads
    it back, then move it into place; on any failure nothing is left. Returns the number of frames read back."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.mp4")
    writer = None
    try:
        for f in frames:
            if writer is None:
                h, w = f.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise DeepVisError(f"cannot write an MP4 video here (OpenCV has no mp4v encoder?): {path}")
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        if writer is None:
            raise DeepVisError(f"no frames to write to {path}")
        writer.release()
        writer = None
        cap = cv2.VideoCapture(str(tmp))
        n = 0
        while cap.isOpened():
            ok, _ = cap.read()
            if not ok:
                break
            n += 1
        cap.release()
        if n == 0:
            raise DeepVisError(f"the MP4 written for {path} could not be read back")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if writer is not None:
            writer.release()
        if tmp.exists():
            tmp.unlink()
    return n


def run(args: argparse.Namespace) -> int:
    out, video = _check(args)
    photo = read_photo(args.image)
    if max(photo.shape[:2]) > args.size:
        photo = fit_max_side(photo, args.size)
    vm = model_from_args(args)
    vm.info(args.layer)  # one line listing the valid layers
    kw = dict(octaves=args.octaves, octave_scale=args.octave_scale, steps=args.steps, lr=args.lr,
              jitter=args.jitter, seed=args.seed)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"image": args.image, "out": str(out), "model": vm.name, "weights": vm.weights,
                              "layer": args.layer, **kw, "width": int(photo.shape[1]), "height": int(photo.shape[0])}
    if video:
        frames_n = args.frames or 30

        def frames(bar: object) -> Iterator[np.ndarray]:
            for st in iter_dream_zoom(vm, photo, args.layer, frames=frames_n, zoom=args.zoom, keep_frames=False,
                                      **kw):
                bar_update(bar, st.step, st.losses)
                yield st.image

        with job_bar(frames_n, "dream video", args.quiet) as bar:
            read_back = write_mp4(out, frames(bar), args.fps)
        report.update(frames=frames_n, zoom=args.zoom, fps=args.fps, frames_read_back=read_back)
        msg = f"wrote {out} ({frames_n} frames, zoom {args.zoom} per frame)"
    else:
        total = args.steps * len(octave_sizes(*photo.shape[:2], args.octaves, args.octave_scale))
        with job_bar(total, f"dream {args.layer}", args.quiet) as bar:
            res = dream(vm, photo, args.layer, use_cache=not args.no_cache, yield_every=1,
                        on_step=lambda st: bar_update(bar, st.step, st.losses), **kw)
        write_files({out: encode_png(res.image)})
        report.update(objective_start=res.objective_start, objective_end=res.objective_end, cached=res.cached)
        msg = f"wrote {out} (layer {args.layer}, {args.octaves} octaves x {args.steps} steps)"
    report["seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(report))
    else:
        print(msg)
    return 0

