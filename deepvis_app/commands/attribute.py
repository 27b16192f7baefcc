"""`deepvis attribute IMAGE --layer L --unit C ...`: one unit's attribution map as a PNG view, a heat overlay on the
image (`--overlay`, what goes on slides) or raw .npy."""

from __future__ import annotations

import argparse
import io
import sys

import cv2
import numpy as np
import torch

from ..attribution import METHODS, OBJECTIVES, VIEWS, explain_unit, render_view, rule_note, unruled_activations
from ..errors import DeepVisError
from ..evaluate.job import default_cam_layer
from ..fileio import atomic_write_bytes, atomic_write_png, encode_png
from ..methods.cam import CAM_METHODS
from ..methods.ig import BASELINES
from ..methods.lrp import COMPOSITES, DEFAULT_COMPOSITE
from ..methods.registry import check_method, explain, method_names
from ..methods.targets import output_logits
from ..probe import unknown_layer_message
from ..render import OVERLAY_ALPHA, overlay_heat
from ..sources import read_image
from ..values import ClassTarget, Unit
from .common import (
    add_model_args,
    batch_arg,
    check_distinct,
    check_output_file,
    float_in,
    int_in,
    model_from_args,
    model_inputs,
    position_arg,
    seed_arg,
    unit_arg,
)
from .optimize import resolve_class

EXTRA_METHODS = tuple(m for m in method_names() if m not in METHODS)  # beyond the live rules: methods/registry
ALL_METHODS = (*METHODS, *EXTRA_METHODS)
# Methods whose map is already a smooth, non-negative heat map: shown as it is; gradient-like maps are speckled
# per pixel and read better blurred (the toolbox's normblur view).
_SMOOTH_METHODS = ("gradcam", "saliency", *CAM_METHODS)
_MAGNITUDE_VIEWS = ("norm", "normblur")


def overlay_view(method: str, view: str | None) -> str:
    """The magnitude view an overlay shows: the one asked for, else the method's natural one; signed views
    (raw, gray) have no heat to show, so they are refused in one line."""
    if view is None:
        return "norm" if method in _SMOOTH_METHODS else "normblur"
    if view not in _MAGNITUDE_VIEWS:
        raise DeepVisError(f"--overlay shows the map's magnitude: use --view norm or normblur, not {view}")
    return view


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
    p.add_argument("--unit", type=unit_arg, help="channel (or class index for logit/prob)")
    p.add_argument("--class", dest="cls", metavar="NAME|INDEX|top",
                   help="explain a class instead of a unit (its logit; --objective prob for its probability)")
    p.add_argument("--y", type=position_arg, default=None, help="row of the neuron (default: the channel's argmax)")
    p.add_argument("--x", type=position_arg, default=None,
                   help="column of the neuron (default: the channel's argmax)")
    p.add_argument("--method", default="guided", choices=ALL_METHODS, metavar="METHOD",
                   help="live rules: " + ", ".join(METHODS) + "; more methods: " + ", ".join(EXTRA_METHODS))
    p.add_argument("--objective", default="neuron", choices=OBJECTIVES,
                   help="neuron (default), channel (sum), seed (old toolbox), logit / prob (class --unit)")
    p.add_argument("--cam-layer", default=None,
                   help="CAM layer (default: --layer; for a class, the last layer with positions)")
    p.add_argument("--steps", type=int_in(1, 1024), default=32, help="ig: integration steps (default: 32)")
    p.add_argument("--baseline", choices=BASELINES, default="black", help="ig: the baseline image (default: black)")
    p.add_argument("--samples", type=int_in(1, 1000), default=25,
                   help="smoothgrad:/vargrad: noisy samples (default: 25)")
    p.add_argument("--noise", type=float_in(0.0, 10.0), default=0.15,
                   help="smoothgrad:/vargrad: noise level, a fraction of the input's range (default: 0.15)")
    p.add_argument("--composite", choices=COMPOSITES, default=DEFAULT_COMPOSITE, help="lrp: zennit composite")
    p.add_argument("--batch", type=batch_arg, default=32, help="scorecam: masked images per forward (default 32)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the noise (smoothgrad:, vargrad:, ig noise)")
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
    check_distinct({"IMAGE": args.image, **model_inputs(args)}, {"--out": out})
    if args.overlay and out.suffix.lower() != ".png":
        raise DeepVisError(f"--overlay writes a picture: --out must end in .png, got {args.out!r}")
    if args.overlay:
        view = overlay_view(args.method, args.view)
    else:
        view = args.view or "raw"
    if (args.cls is None) == (args.unit is None):
        raise DeepVisError("give --unit C (a unit of --layer, or a class with --objective logit/prob) or --class C")
    if args.cls is not None and (args.y is not None or args.x is not None):
        raise DeepVisError("--y/--x go with --unit, not --class")
    extra = args.method in EXTRA_METHODS
    if extra:
        check_method(args.method, "auto")
    rgb = read_image(args.image)
    vm = model_from_args(args)
    class_target = args.cls is not None or args.objective in ("logit", "prob")
    if args.layer is None and not class_target:
        raise DeepVisError(f"--layer is required for --objective {args.objective}; valid layers: "
                           + ", ".join(vm.layers[:40]))
    for name in (args.layer, args.cam_layer):
        if name is not None and name not in vm.layers and name not in {n.partition("@")[0] for n in vm.layers}:
            raise DeepVisError(unknown_layer_message(name, vm.layers))
    fitted = vm.preprocess.fit(rgb)
    x = vm.preprocess.to_tensor(fitted)
    target: Unit | ClassTarget
    score = "prob" if args.objective == "prob" else "logit"
    if args.cls is not None:
        index = top_class(vm, x) if args.cls == "top" else resolve_class(args.cls, vm.categories)
        target = ClassTarget(index, score)
    elif class_target:
        target = ClassTarget(args.unit, args.objective)
        if vm.num_classes:
            vm.check_class(args.unit)
    else:
        target = Unit(args.layer, args.unit, args.y, args.x)
        vm.check_unit(target)
    if extra or (args.method == "gradcam" and isinstance(target, ClassTarget)):  # a class's CAM: the registry's
        return run_extra(args, vm, x, fitted, target, out, view)
    exp = explain_unit(vm.net, x, args.layer, target, (args.method,),
                       objective=args.objective if args.cls is None else score,
                       cam_layer=args.cam_layer)
    write_map(out, exp[args.method], fitted, view, args)
    done = exp.unit
    where = f" at (y={done.y}, x={done.x})" if isinstance(done, Unit) and done.position is not None else ""
    number = done.index if isinstance(done, ClassTarget) else done.channel
    what = f"{args.method} overlay ({view})" if args.overlay else args.method
    print(f"{what} of {args.layer or 'output'} unit {number}{where} -> {out}")
    if args.method in ("deconv", "guided", "guided_gradcam") and unruled_activations(vm.net):
        print(f"deepvis: note: {rule_note(vm.net)}", file=sys.stderr)
    return 0


def write_map(out, values: torch.Tensor, fitted: np.ndarray, view: str, args: argparse.Namespace) -> None:
    """`--out`: .npy the raw map at input resolution (CAMs after their ReLU, unscaled), else a PNG view or, with
    --overlay, the heat over the image the network saw."""
    if out.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, values[0].detach().float().cpu().numpy())
        atomic_write_bytes(out, buf.getvalue())
    elif args.overlay:
        atomic_write_png(out, render_overlay(values, fitted, view, percentile=args.percentile, alpha=args.alpha))
    else:
        atomic_write_bytes(out, encode_png(render_view(values, view, percentile=args.percentile)))


def top_class(vm, x) -> int:
    """The class the network predicts for `x`."""
    with torch.no_grad():
        return int(output_logits(vm.net(x))[0].argmax())


def run_extra(args: argparse.Namespace, vm, x, fitted: np.ndarray, target: Unit | ClassTarget, out, view: str) -> int:
    """The methods beyond the live rules (CAM family, IG, SmoothGrad/VarGrad, LRP) through `methods.registry`."""
    layer = args.cam_layer or args.layer
    if args.method in CAM_METHODS and layer is None:
        layer = default_cam_layer(vm)
    result = explain(vm.net, x, args.method, target, layer=layer, vm=vm, steps=args.steps, baseline=args.baseline,
                     samples=args.samples, noise=args.noise, composite=args.composite, batch_size=args.batch,
                     seed=args.seed)
    write_map(out, result.values, fitted, view, args)
    what = f"{args.method} of {target_label(target)}" + (f" at {layer}" if args.method in CAM_METHODS else "")
    print(f"{what} -> {out}")
    gap = result.extra.get("completeness_gap")
    if gap is not None:
        print(f"ig completeness gap: {gap[0]:.4g} (sum of the map minus score(x) - score(baseline): "
              f"{result.extra['score'][0]:.4g} - {result.extra['baseline_score'][0]:.4g})")
    return 0


def target_label(target: Unit | ClassTarget) -> str:
    return f"class {target.index} ({target.score})" if isinstance(target, ClassTarget) else f"unit {target}"
