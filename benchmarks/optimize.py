"""Activation-maximization speed on this machine: steps/s and seconds to reach 0.9 class probability.

Compares DeepVis's `default` preset with the peer default (Lucid/Lucent's render_vis: Fourier + decorrelated
colour, Adam lr 0.05, 128 px, standard transforms pad 12 / jitter 8 / scale 0.9..1.1 / rotate -10..10 /
jitter 4, 512 steps), implemented here independently of our engine, on the same model and classes.
"Probability" is the model's softmax for the class on the current image quantized to 8 bits, resized to the
model's input the way `deepvis optimize --json` scores a saved PNG; it is checked every `--check-every`
steps and the checks are excluded from the timing. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import torch
import torch.nn.functional as F

from deepvis_app.optimize import iter_optimize
from deepvis_app.optimize import objectives as O
from deepvis_app.zoo import load_model

# ---- the peer implementation (Lucent's render_vis defaults), self-contained ------------------------------

_CC = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_CC = _CC / _CC.norm(dim=0).max()


def lucent_steps(net, class_index: int, mean, std, *, size: int = 128, steps: int = 512, seed: int = 0):
    """Yield (step, image [1,3,H,W] in [0,1]) after each step, as Lucent's render_vis would optimize."""
    gen = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    freqs = torch.sqrt(fx * fx + fy * fy)
    scale = 1.0 / torch.clamp(freqs, min=1.0 / size)
    spectrum = (torch.randn(1, 3, *freqs.shape, 2, generator=gen) * 0.01).requires_grad_(True)
    opt = torch.optim.Adam([spectrum], lr=0.05)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)

    def image() -> torch.Tensor:
        t = torch.fft.irfft2(torch.view_as_complex(spectrum) * scale, s=(size, size), norm="ortho") / 4.0
        t = torch.einsum("ij,njhw->nihw", _CC, t)
        return torch.sigmoid(t)

    def pick(values, g):
        return values[int(torch.randint(len(values), (1,), generator=g))]

    def jit(x, d):
        dy, dx = (int(v) for v in torch.randint(d, (2,), generator=gen))
        h, w = x.shape[2:]
        return x[:, :, dy:h - (d - 1) + dy, dx:w - (d - 1) + dx]

    scales = [1 + (i - 5) / 50 for i in range(11)]
    angles = list(range(-10, 11)) + 5 * [0]
    for step in range(1, steps + 1):
        x = F.pad(image(), (12,) * 4, value=0.5)
        x = jit(x, 8)
        sc = pick(scales, gen)
        h = x.shape[2]
        x = F.interpolate(x, size=(round(h * sc), round(h * sc)), mode="bilinear", align_corners=False)
        a = math.radians(pick(angles, gen))
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
        grid = F.affine_grid(theta[None], list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
        x = jit(x, 4)
        loss = -net((x - m) / s)[0, class_index]
        opt.zero_grad()
        loss.backward()
        opt.step()
        yield step, image()


def ours_steps(vm, class_index: int, *, seed: int = 0, steps: int | None = None, preset: str = "default"):
    for prog in iter_optimize(vm, O.class_logit(class_index), preset=preset, seed=seed, steps=steps,
                              use_cache=False):
        if prog.images is not None:
            yield prog.step, torch.from_numpy(prog.images[:1]).permute(0, 3, 1, 2).float() / 255.0


def measure(stepper, vm, class_index: int, check_every: int, target: float) -> dict:
    """Run a stepper, timing only the steps; return steps/s, steps and seconds to `target` probability."""
    spent = 0.0
    hit_step = hit_s = None
    best = 0.0
    n = 0
    t = time.perf_counter()
    for step, img in stepper:
        spent += time.perf_counter() - t
        n = step
        if step % check_every == 0:
            rgb = (img[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            with torch.no_grad():
                p = torch.softmax(vm.net(vm.preprocess(rgb)), 1)[0, class_index].item()
            best = max(best, p)
            if p >= target and hit_step is None:
                hit_step, hit_s = step, spent
                break
        t = time.perf_counter()
    return {"steps_per_s": round(n / spent, 2), "steps_run": n, "steps_to_target": hit_step,
            "seconds_to_target": None if hit_s is None else round(hit_s, 2), "best_probability": round(best, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    ap.add_argument("--classes", default="goose,dumbbell,flamingo")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--check-every", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids oversubscription)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vm = load_model("efficientnet_lite0", device=args.device)
    rows = {"deepvis_default": [], "lucent_default": []}
    for name in args.classes.split(","):
        i = vm.categories.index(name)
        ours = measure(ours_steps(vm, i, seed=args.seed, steps=512), vm, i, args.check_every, args.target)
        peer = measure(lucent_steps(vm.net, i, vm.spec.mean, vm.spec.std, seed=args.seed), vm, i,
                       args.check_every, args.target)
        rows["deepvis_default"].append(dict(ours, cls=name))
        rows["lucent_default"].append(dict(peer, cls=name))

    def summary(rs: list[dict]) -> dict:
        secs = [r["seconds_to_target"] for r in rs if r["seconds_to_target"] is not None]
        return {"mean_steps_per_s": round(sum(r["steps_per_s"] for r in rs) / len(rs), 2),
                "reached": f"{len(secs)}/{len(rs)}",
                "median_seconds_to_target": sorted(secs)[len(secs) // 2] if secs else None, "per_class": rs}

    print(json.dumps({
        "benchmark": "optimize", "model": "efficientnet_lite0", "device": "cpu", "threads": args.threads,
        "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "target": args.target,
        "check_every": args.check_every, "note": "deepvis default runs up to 512 steps here (its preset "
        "stops at 256) so both get the same budget",
        "deepvis_default": summary(rows["deepvis_default"]), "lucent_default": summary(rows["lucent_default"]),
    }))


if __name__ == "__main__":
    main()
