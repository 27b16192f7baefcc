"""`deepvis attribute IMAGE --layer L --unit C ...`: one unit's attribution map as a PNG view, a heat overlay on the
image (`--overlay`, what goes on slides) or raw .npy."""

from __future__ import annotations

import argparse
import io
import sys

import cv2
import numpy as np
import torch

from ..attribution import (
    METHODS,
    OBJECTIVES,
    VIEWS,
    Unit,
    check_unit,
    explain_unit,
    render_view,
    rule_note,
    unruled_activations,
)
from ..errors import DeepVisError
from ..fileio import atomic_write_bytes, atomic_write_png, encode_png
from ..probe import unknown_layer_message
from ..sources import read_image
from .common import add_model_args, check_output_file, float_in, int_in, model_from_args

OVERLAY_ALPHA = 0.75
# Methods whose map is already a smooth, non-negative heat map: shown as it is; gradient-like maps are speckled
# per pixel and read better blurred (the toolbox's normblur view).
_SMOOTH_METHODS = ("gradcam", "saliency")
_MAGNITUDE_VIEWS = ("norm", "normblur")


def overlay_view(method: str, view: str | None) -> str:
    """The magnitude view an overlay shows: the one asked for, else the method's natural one; signed views
    (raw, gray) have no heat to show, so they are refused in one line."""
    if view is None:
        return "norm" if method in _SMOOTH_METHODS else "normblur"
    if view not in _MAGNITUDE_VIEWS:
        raise DeepVisError(f"--overlay shows the map's magnitude: use --view norm or normblur, not {view}")
    return view


def overlay_heat(rgb: np.ndarray, magnitude: np.ndarray, *, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend an inferno heat map over an image, opacity growing with the value: `alpha * m` at value m in [0, 1].

    Where the map is 0 the image is returned unchanged (so the photo stays readable around the hot region);
    at the map's maximum the heat colour covers `alpha` of it. rgb: uint8 HxWx3; magnitude: float HxW in [0, 1]
    (or uint8 0..255) of the same size. Plain function, Qt-free, for the GUI's inspector too.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DeepVisError(f"overlay_heat expects an RGB uint8 HxWx3 image, got {rgb.shape} {rgb.dtype}")
    m = magnitude.astype(np.float32) / 255.0 if magnitude.dtype == np.uint8 else magnitude.astype(np.float32)
    if m.shape != rgb.shape[:2]:
        raise DeepVisError(f"overlay_heat: map {m.shape} and image {rgb.shape[:2]} differ in size")
    m = np.clip(m, 0.0, 1.0)
    heat = cv2.cvtColor(cv2.applyColorMap((m * 255.0).round().astype(np.uint8), cv2.COLORMAP_INFERNO),
                        cv2.COLOR_BGR2RGB).astype(np.float32)
    a = (alpha * m)[..., None]
    out = rgb.astype(np.float32) * (1.0 - a) + heat * a
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def render_overlay(attr: torch.Tensor, fitted: np.ndarray, view: str, *, percentile: float = 99.5,
                   alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Attribution Tensor[1, C, H, W] + the fitted uint8 input -> the overlay image (same size as `fitted`).

    The magnitude is exactly what `render_view(attr, view)` shows (norm/normblur, percentile-scaled), so the
    overlay and the plain PNG agree on where the map is hot."""
    mag = render_view(attr, view, percentile=percentile)[..., 0]
    if mag.shape != fitted.shape[:2]:
        mag = cv2.resize(mag, (fitted.shape[1], fitted.shape[0]), interpolation=cv2.INTER_LINEAR)
    return overlay_heat(fitted, mag, alpha=alpha)


def register(subparsers) -> None:
    p = subparsers.add_parser("attribute", help="explain one unit: gradient, deconv, guided backprop, saliency, "
                                                "Grad-CAM of a unit w.r.t. the input image",
                              description="Attribution map of one unit of a layer w.r.t. the input image.")
    p.add_argument("image", help="input image file")
    p.add_argument("--layer", help="layer name (see `deepvis layers`); optional for --objective logit/prob")
    p.add_argument("--unit", type=int_in(0, 10**9), required=True, help="channel (or class index for logit/prob)")
    p.add_argument("--y", type=int_in(0, 10**6), default=None, help="row of the neuron (default: the channel's argmax)")
    p.add_argument("--x", type=int_in(0, 10**6), default=None,
                   help="column of the neuron (default: the channel's argmax)")
    p.add_argument("--method", default="guided", choices=METHODS)
    p.add_argument("--objective", default="neuron", choices=OBJECTIVES,
                   help="neuron (default), channel (sum), seed (old toolbox), logit / prob (class --unit)")
    p.add_argument("--cam-layer", default=None, help="Grad-CAM layer (default: --layer)")
    p.add_argument("--view", default=None, choices=VIEWS,
                   help="how a .png shows the map (default: raw; with --overlay: norm for gradcam/saliency, "
                        "normblur for the others; --overlay takes norm or normblur only)")
    p.add_argument("--overlay", action="store_true",
                   help="write the map's magnitude as an inferno heat overlay on the input image as the network "
                        "sees it (cropped, resized); transparent where the map is 0 (.png only)")
    p.add_argument("--alpha", type=float_in(0.0, 1.0), default=OVERLAY_ALPHA,
                   help=f"--overlay opacity at the map's maximum (default {OVERLAY_ALPHA})")
    p.add_argument("--percentile", type=float_in(0.0, 100.0, lo_open=True), default=99.5,
                   help="magnitude percentile shown at full brightness in a .png (100 = the max; default 99.5)")
    p.add_argument("--out", required=True, help="FILE.png (rendered view) or FILE.npy (raw float32 C x H x W)")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, (".png", ".npy"))
    if args.overlay and out.suffix.lower() != ".png":
        raise DeepVisError(f"--overlay writes a picture: --out must end in .png, got {args.out!r}")
    if args.overlay:
        view = overlay_view(args.method, args.view)
    else:
        view = args.view or "raw"
    rgb = read_image(args.image)
    vm = model_from_args(args)
    class_target = args.objective in ("logit", "prob")
    if args.layer is None and not class_target:
        raise DeepVisError(f"--layer is required for --objective {args.objective}; valid layers: "
                           + ", ".join(vm.layers[:40]))
    for name in (args.layer, args.cam_layer):
        if name is not None and name not in vm.layers and name not in {n.partition("@")[0] for n in vm.layers}:
            raise DeepVisError(unknown_layer_message(name, vm.layers))
    unit = Unit(args.unit, args.y, args.x, args.objective)
    if class_target:
        n = len(vm.categories) or None
        if n is not None and not 0 <= args.unit < n:
            raise DeepVisError(f"class {args.unit} out of range (valid: 0..{n - 1})")
    else:
        check_unit((1, *vm.info(args.layer).shape), unit, args.layer)
    fitted = vm.preprocess.fit(rgb)
    x = vm.preprocess.to_tensor(fitted)
    exp = explain_unit(vm.net, x, args.layer, unit, (args.method,), cam_layer=args.cam_layer)
    attr = exp[args.method]
    if out.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, attr[0].detach().float().cpu().numpy())
        atomic_write_bytes(out, buf.getvalue())
    elif args.overlay:
        atomic_write_png(out, render_overlay(attr, fitted, view, percentile=args.percentile, alpha=args.alpha))
    else:
        atomic_write_bytes(out, encode_png(render_view(attr, view, percentile=args.percentile)))
    where = f" at (y={exp.unit.y}, x={exp.unit.x})" if exp.unit.y is not None else ""
    what = f"{args.method} overlay ({view})" if args.overlay else args.method
    print(f"{what} of {args.layer or 'output'} unit {exp.unit.channel}{where} -> {out}")
    if args.method in ("deconv", "guided", "guided_gradcam") and unruled_activations(vm.net):
        print(f"deepvis: note: {rule_note(vm.net)}", file=sys.stderr)
    return 0
