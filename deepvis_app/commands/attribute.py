"""`deepvis attribute IMAGE --layer L --unit C ...`: one unit's attribution map as a PNG view or raw .npy."""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np

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
from ..fileio import atomic_write_bytes, encode_png
from ..probe import unknown_layer_message
from ..sources import read_image
from .common import add_model_args, check_output_file, float_in, int_in, model_from_args


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
    p.add_argument("--view", default="raw", choices=VIEWS, help="how a .png shows the map (default: raw)")
    p.add_argument("--percentile", type=float_in(0.0, 100.0, lo_open=True), default=99.5,
                   help="magnitude percentile shown at full brightness in a .png (100 = the max; default 99.5)")
    p.add_argument("--out", required=True, help="FILE.png (rendered view) or FILE.npy (raw float32 C x H x W)")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, (".png", ".npy"))
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
    x = vm.preprocess(rgb)
    exp = explain_unit(vm.net, x, args.layer, unit, (args.method,), cam_layer=args.cam_layer)
    attr = exp[args.method]
    if out.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, attr[0].detach().float().cpu().numpy())
        atomic_write_bytes(out, buf.getvalue())
    else:
        atomic_write_bytes(out, encode_png(render_view(attr, args.view, percentile=args.percentile)))
    where = f" at (y={exp.unit.y}, x={exp.unit.x})" if exp.unit.y is not None else ""
    print(f"{args.method} of {args.layer or 'output'} unit {exp.unit.channel}{where} -> {out}")
    if args.method in ("deconv", "guided", "guided_gradcam") and unruled_activations(vm.net):
        print(f"deepvis: note: {rule_note(vm.net)}", file=sys.stderr)
    return 0
