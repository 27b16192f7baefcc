"""`deepvis run`: the live pipeline, in the window or `--headless` (printing a JSON report)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..pipeline import ATTRIBUTION_METHODS, MAX_TIMEOUT, run_headless, validate_request
from ..render import NORM_MODES
from ..sources import open_source
from .common import float_in, int_in, json_dump, model_from_args
from .live_args import add_gui_args, request_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="run the live pipeline (window, or --headless with a JSON report)",
                              description="Run the live pipeline. With --headless no window is opened and a "
                                          "report (fps, drops, latency) is printed.")
    add_gui_args(p)
    p.add_argument("--headless", action="store_true", help="no window: process --frames frames and report")
    p.add_argument("--frames", type=int_in(1, 10**8), default=100,
                   help="frames to process in --headless mode (default 100)")
    p.add_argument("--norm", choices=NORM_MODES, default="layer", help="grid normalization (default: layer)")
    p.add_argument("--gamma", type=float_in(0.05, 20.0), default=1.0,
                   help="gamma boost of the grid (< 1 lifts faint units)")
    p.add_argument("--attribution", default="",
                   help=f"comma-separated methods for the selected unit: {','.join(ATTRIBUTION_METHODS)}")
    p.add_argument("--timeout", type=float_in(0.0, MAX_TIMEOUT, lo_open=True), default=600.0,
                   help="give up after this many seconds; the report covers the frames done (headless)")
    p.add_argument("--json", action="store_true", help="print the headless report as JSON")
    p.set_defaults(func=run, opens_window=lambda args: not args.headless)  # the CLI opens the window


def run(args: argparse.Namespace) -> int:
    """`deepvis run --headless`: the live pipeline without a window, then its report."""
    model = model_from_args(args)
    request = request_from_args(args, model.default_layer)
    validate_request(model, request)
    notices: list[str] = []
    source = open_source(args.source, fallback_to_demo=args.source is None, notice=notices.append)
    for note in notices:
        print(f"deepvis: {note}", file=sys.stderr)
    report = run_headless(model, source, frames=args.frames, request=request, fps=args.fps,
                          mirror=args.mirror, timeout=args.timeout,
                          on_status=lambda msg: print(f"deepvis: {msg}", file=sys.stderr))
    if args.json:
        print(json_dump(dataclasses.asdict(report)))
    else:
        print(f"{report.frames_processed} frames of {report.source} through {report.model} on {report.device}: "
              f"{report.pipeline_fps:.1f} fps, {report.frames_dropped} dropped, latency p50 "
              f"{report.latency_ms_p50:.0f} ms / p95 {report.latency_ms_p95:.0f} ms")
    if report.timed_out:  # the partial report is printed above; the run still did not do what was asked
        print(f"deepvis: timed out after {args.timeout:g} s with {report.frames_processed} of {args.frames} "
              "frames (the report covers those)", file=sys.stderr)
        return 1
    return 0
