"""Attribution methods side by side with the reference libraries, in one run (medians of --repeat runs, ms).

CAM family vs pytorch-grad-cam (same model, layer, input, class), Integrated Gradients vs Captum (same baseline,
steps, Gauss-Legendre rule). Each pair also reports the max abs difference after the reference's scaling, so a
speed-up never hides a different map. (LRP is zennit itself, called by us: nothing to compare.) Prints JSON.

Usage: python benchmarks/methods.py [--model efficientnet_lite0|torchvision:resnet50] [--device cpu|cuda]
       [--repeat 5] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import numpy as np
import skimage.data
import torch


def timed(fn, repeat: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--layer", default=None, help="CAM layer (default: the last layer with positions)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ig-steps", type=int, default=32)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from deepvis_app import load_model
    from deepvis_app.evaluate.job import default_cam_layer
    from deepvis_app.methods.cam import CAM_METHODS
    from deepvis_app.methods.ig import IntegratedGradients
    from deepvis_app.values import ClassTarget

    vm = load_model(args.model, weights=args.weights, device=args.device)
    layer = args.layer or default_cam_layer(vm)
    x = vm.preprocess(skimage.data.coffee())
    with torch.no_grad():
        cls = int(vm.net(x)[0].argmax())
    ref = copy.deepcopy(vm.net)
    for p in ref.parameters():
        p.requires_grad_(True)
    ref_layer = dict(ref.named_modules())[layer.partition("@")[0]]
    size = tuple(x.shape[-2:])
    rows = {}
    refs = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM,
            "hirescam": HiResCAM, "scorecam": ScoreCAM, "eigencam": EigenCAM}
    for name, cls_ref in refs.items():
        ours_ms, ours = timed(lambda name=name: CAM_METHODS[name](vm.net, layer, vm=vm).attribute(x, cls),
                              1 if name == "scorecam" else args.repeat)
        with cls_ref(model=ref, target_layers=[ref_layer]) as reference:
            theirs_ms, theirs = timed(lambda r=reference: r(input_tensor=x, targets=[ClassifierOutputTarget(cls)]),
                                      1 if name == "scorecam" else args.repeat)
        diff = float(np.abs(scale_cam_image(scale_cam_image(ours.low.cpu().numpy(), size[::-1])) - theirs).max())
        rows[name] = {"ours_ms": round(ours_ms, 2), "pytorch_grad_cam_ms": round(theirs_ms, 2),
                      "ratio": round(ours_ms / theirs_ms, 3), "max_abs_diff": diff}

    from captum.attr import IntegratedGradients as CaptumIG

    ig = IntegratedGradients(vm.net, vm=vm, steps=args.ig_steps)
    base = ig.baseline_for(x)
    ours_ms, ours = timed(lambda: ig.attribute(x, ClassTarget(cls, "logit")).attribution, args.repeat)
    theirs_ms, theirs = timed(lambda: CaptumIG(vm.net).attribute(x, baselines=base, target=cls,
                                                                 n_steps=args.ig_steps, internal_batch_size=16),
                              args.repeat)
    rows["ig"] = {"ours_ms": round(ours_ms, 2), "captum_ms": round(theirs_ms, 2),
                  "ratio": round(ours_ms / theirs_ms, 3),
                  "max_rel_diff": float((ours - theirs).abs().max() / theirs.abs().max())}
    print(json.dumps({"model": vm.name, "layer": layer, "device": args.device, "threads": torch.get_num_threads(),
                      "class": cls, "methods": rows}, indent=1))


if __name__ == "__main__":
    main()
