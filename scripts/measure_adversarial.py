"""Measure targeted attacks on real photos: success after the PNG round trip, steps and seconds per attack.

Every photo (scikit-image's) is attacked towards N random target classes (seeded, never its own top-1) at each
eps, with a step budget of --steps; an attack counts as a success only if the PNG it would save, encoded and
decoded again, is classified as the target. Because the loop stops at the first success and is deterministic,
a run with budget B also tells the success rate for every smaller budget (the CLI's default is 20). FGSM
(untargeted, one step) is measured on the same photos. Prints JSON on stdout.

    flock /tmp/deepvis-heavy.lock .venv/bin/python scripts/measure_adversarial.py > adversarial.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import cv2
import numpy as np
import skimage.data
import torch

from deepvis_app import adversarial as adv
from deepvis_app import load_model
from deepvis_app.fileio import encode_png

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def classify_png(vm, rgb: np.ndarray) -> np.ndarray:
    """Top probabilities of the image after an 8-bit PNG encode/decode, as the CLI would measure it."""
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(encode_png(rgb), np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
    with torch.no_grad():
        return torch.softmax(vm.net(vm.preprocess(decoded)).float(), 1)[0].cpu().numpy()


def float_pgd(vm, photo: np.ndarray, target: int, eps: float, steps: int) -> tuple[bool, np.ndarray]:
    """The textbook loop (as in torchattacks' PGD): float image, steps of eps/4 levels, projection, no rounding
    inside; stops when the float image is classified as the target. Returns (float success, rounded uint8)."""
    mean = torch.tensor(vm.spec.mean, device=vm.device).view(1, 3, 1, 1)
    std = torch.tensor(vm.spec.std, device=vm.device).view(1, 3, 1, 1)
    x0 = torch.from_numpy(photo).to(vm.device).permute(2, 0, 1).unsqueeze(0).float() / 255
    e, a = eps / 255, adv.default_step(eps) / 255
    x = x0.clone()
    label = torch.tensor([target], device=vm.device)
    ok = False
    for _ in range(steps + 1):
        x.requires_grad_(True)
        logits = vm.net((x - mean) / std).float()
        ok = int(logits.argmax()) == target
        if ok:
            break
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, label), x)
        with torch.no_grad():
            x = (x0 + (x - a * g.sign() - x0).clamp(-e, e)).clamp(0, 1)
    img = (x.detach()[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return ok, img


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--photos", nargs="+", default=list(PHOTOS))
    ap.add_argument("--targets", type=int, default=10, help="random target classes per photo")
    ap.add_argument("--eps", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    ap.add_argument("--steps", type=int, default=100, help="step budget per attack")
    ap.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 50, 100])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--float-baseline", action="store_true",
                    help="also run a float PGD without 8-bit rounding in the loop and count what the PNG loses")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    vm = load_model(args.model, device=args.device)
    sync = torch.cuda.synchronize if vm.device.type == "cuda" else (lambda: None)
    load0 = os.getloadavg()
    t_all = time.perf_counter()
    attacks = []
    fgsm_rows = []
    for name in args.photos:
        photo = vm.preprocess.fit(getattr(skimage.data, name)()[..., :3])
        orig = int(classify_png(vm, photo).argmax())
        rng = np.random.default_rng([args.seed, len(attacks)])
        targets = rng.choice(np.setdiff1d(np.arange(len(vm.categories)), [orig]), args.targets, replace=False)
        for eps in args.eps:
            st = adv.fgsm(vm, photo, eps=eps)
            fgsm_rows.append({"photo": name, "eps": eps,
                              "success": bool(classify_png(vm, st.image).argmax() != orig)})
            for target in targets.tolist():
                sync()
                t0 = time.perf_counter()
                st = adv.pgd_targeted(vm, photo, target, eps=eps, steps=args.steps)
                sync()
                seconds = time.perf_counter() - t0
                probs = classify_png(vm, st.image)
                ok = bool(int(probs.argmax()) == target)
                attacks.append({"photo": name, "original": vm.categories[orig], "target": vm.categories[target],
                                "eps": eps, "success": ok, "reported_success": st.success,
                                "steps": st.step, "seconds": round(seconds, 4), "target_prob": float(probs[target]),
                                "linf": st.linf})
                if args.float_baseline:
                    fok, fimg = float_pgd(vm, photo, target, eps, args.steps)
                    attacks[-1]["float_success"] = fok
                    attacks[-1]["float_success_after_png"] = bool(int(classify_png(vm, fimg).argmax()) == target)
                print(f"{name:22s} eps {eps:g} -> {vm.categories[target][:24]:24s} "
                      f"{'ok ' if ok else 'FAIL'} {st.step:3d} steps {seconds:6.2f}s", file=sys.stderr, flush=True)
    summary = []
    for eps in args.eps:
        rows = [a for a in attacks if a["eps"] == eps]
        won = [a for a in rows if a["success"]]
        entry = {"eps": eps, "attacks": len(rows),
                 "success_rate": {str(b): round(sum(a["success"] and a["steps"] <= b for a in rows) / len(rows), 4)
                                  for b in sorted(set(args.budgets) | {args.steps}) if b <= args.steps},
                 "median_steps": median([a["steps"] for a in won]),
                 "median_seconds": median([a["seconds"] for a in won]),
                 "median_seconds_per_step": median([a["seconds"] / max(a["steps"], 1) for a in won]),
                 "median_target_prob": median([a["target_prob"] for a in won]),
                 "max_linf": max((a["linf"] for a in rows), default=None),
                 "fgsm_untargeted_success_rate": round(
                     sum(r["success"] for r in fgsm_rows if r["eps"] == eps) / len(args.photos), 4)}
        if args.float_baseline:
            entry["float_pgd_success_rate"] = round(sum(a["float_success"] for a in rows) / len(rows), 4)
            entry["float_pgd_success_rate_after_png"] = round(
                sum(a["float_success_after_png"] for a in rows) / len(rows), 4)
        summary.append(entry)
    report = {"model": vm.name, "device": str(vm.device),
              "device_name": torch.cuda.get_device_name(vm.device) if vm.device.type == "cuda" else platform.processor()
              or platform.machine(),
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
              "photos": args.photos, "targets_per_photo": args.targets, "step_budget": args.steps,
              "seconds_total": round(time.perf_counter() - t_all, 1),
              "summary": summary, "fgsm": fgsm_rows, "attacks": attacks}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
