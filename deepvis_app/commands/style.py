"""`deepvis style`: paint a content photo in the style of another (Gatys et al. 2015), L-BFGS by default.

Works offline with the default model (EfficientNet-Lite0 layers chosen by stride, see docs/style.md); with
`--model vgg16` it uses Gatys's VGG layers when the VGG weights are present, and says so in one line when not.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..errors import DeepVisError, WeightsMissingError
from ..fileio import encode_png
from ..optimize.style import DEFAULT_STEPS, INITS, OPTIMIZERS, style_transfer
from ..outputs import write_files
from .common import (
    add_model_args,
    bar_update,
    check_distinct,
    check_output_file,
    float_in,
    job_bar,
    model_from_args,
    model_inputs,
    seed_arg,
    side_arg,
    steps_arg,
)
from .invert import read_photo

MAX_WEIGHT = 1e9


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "style", help="neural style: paint a photo in the style of another (Gatys et al. 2015)",
        description="Optimize an image to keep CONTENT's activations at one layer and take STYLE's Gram matrices "
                    "at several layers; L-BFGS (default) or Adam. See docs/style.md.")
    p.add_argument("content", metavar="CONTENT", help="the photo whose content is kept")
    p.add_argument("style", metavar="STYLE", help="the image whose style is taken")
    p.add_argument("--content-layer", help="content layer (default: the model's; see docs/style.md)")
    p.add_argument("--style-layers", help="comma-separated style layers (default: the model's)")
    p.add_argument("--style-weight", type=float_in(0.0, MAX_WEIGHT), default=1e3,
                   help="weight of the (relative) style loss against the content loss, 0..1e9 (default: 1000)")
    p.add_argument("--content-weight", type=float_in(0.0, MAX_WEIGHT), default=1.0,
                   help="weight of the content loss, 0..1e9 (default: 1)")
    p.add_argument("--steps", type=steps_arg, default=DEFAULT_STEPS,
                   help=f"budget of function evaluations (default: {DEFAULT_STEPS})")
    p.add_argument("--size", type=side_arg, default=256, help="longest side of the result in pixels (default: 256)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs", help="lbfgs (default) or adam")
    p.add_argument("--lr", type=float_in(0.0, 10.0, lo_open=True),
                   help="step size, (0, 10] (default: 1 for L-BFGS, 0.02 for Adam)")
    p.add_argument("--init", choices=INITS, default="recolor",
                   help="start from the content photo recoloured to the style's colour mean and spread (recolor, "
                        "default), from the content photo itself (content), or from noise")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed for --init noise (default: 0)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the result cache")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--json", action="store_true", help="print a JSON report to stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, (".png",))
    check_distinct({"CONTENT": args.content, "STYLE": args.style, **model_inputs(args)}, {"--out": out})
    content, style = read_photo(args.content), read_photo(args.style)
    try:
        vm = model_from_args(args)
    except WeightsMissingError as err:
        raise DeepVisError(f"{err} (neural style works offline with the default model, efficientnet_lite0)") from None
    style_layers = [s.strip() for s in args.style_layers.split(",") if s.strip()] if args.style_layers else None
    for layer in ([args.content_layer] if args.content_layer else []) + (style_layers or []):
        vm.info(layer)  # one line listing the valid layers
    t0 = time.perf_counter()
    with job_bar(args.steps, f"style ({args.optimizer})", args.quiet) as bar:
        res = style_transfer(vm, content, style, content_layer=args.content_layer, style_layers=style_layers,
                             style_weight=args.style_weight, content_weight=args.content_weight, steps=args.steps,
                             size=args.size, optimizer=args.optimizer, lr=args.lr, init=args.init, seed=args.seed,
                             use_cache=not args.no_cache, yield_every=1,
                             on_step=lambda st: bar_update(bar, st.step, st.losses))
    write_files({out: encode_png(res.image)})
    report = {"content": args.content, "style": args.style, "out": str(out), "model": vm.name, "weights": vm.weights,
              "content_layer": res.settings["content_layer"], "style_layers": res.settings["style_layers"],
              "style_weight": args.style_weight, "content_weight": args.content_weight, "optimizer": args.optimizer,
              "init": args.init, "steps": args.steps, "evals": res.evals, "width": int(res.image.shape[1]),
              "height": int(res.image.shape[0]), "content_loss_start": res.losses_start["content"],
              "style_loss_start": res.losses_start["style"], "style_loss_photo": res.losses_photo.get("style"),
              "content_loss_end": res.losses_end["content"],
              "style_loss_end": res.losses_end["style"], "total_loss_start": res.losses_start["total"],
              "total_loss_end": res.losses_end["total"], "cached": res.cached,
              "seconds": round(time.perf_counter() - t0, 3)}
    if args.json:
        print(json.dumps(report))
    else:
        photo = report["style_loss_photo"]
        before = f"{photo:.4g} (content photo) -> " if photo is not None and args.init != "content" else ""
        print(f"wrote {out}: style loss {before}{report['style_loss_start']:.4g} -> {report['style_loss_end']:.4g}, "
              f"content loss {report['content_loss_start']:.4g} -> {report['content_loss_end']:.4g} "
              f"({res.evals} evaluations, {args.optimizer})")
    return 0
