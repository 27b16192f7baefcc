"""Options of the live view, shared by the window (bare `deepvis`) and `deepvis run [--headless]`, and the first
view request they describe. Its own module so that the CLI, `run` and the window's start-up (`gui.app`) all
import it without importing each other."""

from __future__ import annotations

import argparse

from ..errors import DeepVisError
from ..pipeline import MAX_TIMEOUT, Unit, ViewRequest
from .common import add_model_args, add_source_args, float_in, shared_default


def add_gui_args(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """Options of the live window (shared by bare `deepvis` and `deepvis run`)."""
    add_model_args(parser, top=top)
    add_source_args(parser, top=top)
    parser.add_argument("--layer", default=shared_default(top, None),
                        help="layer shown first (default: the model spec's default layer)")
    parser.add_argument("--select", metavar="LAYER:UNIT", default=shared_default(top, None),
                        help="select a unit at start, e.g. _blocks.3:7")
    parser.add_argument("--store", default=shared_default(top, None),
                        help="a top-k STORE (from `deepvis scan`) for the inspector")
    parser.add_argument("--snapshot", metavar="DIR", default=shared_default(top, None),
                        help="write a snapshot (PNGs + state JSON) into DIR")
    parser.add_argument("--exit-after", type=float_in(0.0, MAX_TIMEOUT), metavar="SECONDS",
                        default=shared_default(top, None),
                        help="quit after SECONDS (with --snapshot: take the snapshot just before)")
    parser.add_argument("--record", metavar="FILE", default=shared_default(top, None),
                        help="record the window to FILE (.mp4) from the start; with --exit-after for scripts")


def request_from_args(args: argparse.Namespace, default_layer: str) -> ViewRequest:
    """The first view request: --layer (or the model's default), --select, --norm, --gamma, --crop, --attribution."""
    unit = Unit.parse(args.select) if getattr(args, "select", None) else None
    methods = tuple(m.strip() for m in (getattr(args, "attribution", "") or "").split(",") if m.strip())
    if methods and unit is None:
        raise DeepVisError("--attribution needs a unit: add --select LAYER:UNIT")
    return ViewRequest(layer=args.layer or default_layer, unit=unit, norm=getattr(args, "norm", "layer"),
                       gamma=getattr(args, "gamma", 1.0), crop=args.crop, attribution=methods)
