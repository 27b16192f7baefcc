"""Adversarial examples: nudge an image, by a change too small to see, into any class (or out of its own).

Everything happens in pixel space, 0..255 before normalization, on the image the network actually sees (the
frame fitted to its input size). The loop quantizes inside: every forward pass runs on the rounded 8-bit image,
so the image a step reports is exactly what a PNG holds and "success" is measured on what will be saved. The
continuous perturbation behind it is kept in float between steps (sign-gradient steps smaller than one level
accumulate until they round), and the rounded one always stays in the L-inf ball of radius floor(eps) levels.

`iter_attack` is the one loop (FGSM = one step of size eps; PGD = many small projected steps), a generator the
GUI drives from a worker thread: a few steps per live frame (pass the previous state's `delta` to resume on
the next frame) or to completion on a frozen frame; it checks `abort` between steps. `fgsm`, `pgd_targeted` and
`fooling_image` run it to the end. `linear_demo`, `linear_growth` and `effect_vs_pixels` are the lecture's
"why": many tiny changes, each aligned with the gradient, add up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .abort import Abort, aborted
from .errors import DeepVisError, ParamError
from .optimize.engine import Cancelled, unpack_model

METHODS = ("pgd", "fgsm")
STARTS = ("noise", "shapes")


@dataclass(frozen=True)
class AttackState:
    """One step of an attack. `image` is uint8 HxWx3 (what a PNG of it holds), `delta` = image - original as
    int16 in pixel levels, `probs` the network's probabilities for `image`. `target` None = untargeted (push
    the original top-1 out). `step` counts the updates applied to reach `image`; `done` marks the last state."""

    step: int
    steps: int
    image: np.ndarray
    delta: np.ndarray
    probs: np.ndarray = field(repr=False)
    target: int | None
    orig_top1: int
    orig_prob: float
    success: bool
    done: bool
    seconds: float

    @property
    def top1(self) -> int:
        return int(self.probs.argmax())

    @property
    def top1_prob(self) -> float:
        return float(self.probs.max())

    @property
    def target_prob(self) -> float | None:
        return None if self.target is None else float(self.probs[self.target])

    @property
    def orig_class_prob(self) -> float:
        """Probability the current image still gives the original top-1 class."""
        return float(self.probs[self.orig_top1])

    @property
    def linf(self) -> int:
        return int(np.abs(self.delta).max()) if self.delta.size else 0

    @property
    def l2(self) -> float:
        return float(np.sqrt((self.delta.astype(np.float64) ** 2).sum()))


def _fit(net: Any, image: np.ndarray) -> np.ndarray:
    if hasattr(net, "preprocess") and hasattr(net, "spec"):
        return net.preprocess.fit(image)  # validates: RGB uint8 HxWx3
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DeepVisError(f"expected an RGB uint8 image of shape HxWx3, got {getattr(image, 'shape', image)!r}")
    return np.ascontiguousarray(image)


def _n_classes(net: Any) -> int | None:
    cats = getattr(net, "categories", None)
    return len(cats) if cats else None


def _check(method: str, eps: float, step: float | None, steps: int, target: int | None, n: int | None) -> None:
    if method not in METHODS:
        raise ParamError("method", f"{method!r} is not an attack (choose: {', '.join(METHODS)})")
    if not math.isfinite(eps) or eps < 1 or eps > 255:
        raise ParamError("eps", f"must be between 1 and 255 pixel levels (an 8-bit image changes by whole levels), "
                         f"got {eps}")
    if step is not None and (not math.isfinite(step) or step <= 0 or step > 255):
        raise ParamError("step", f"must be above 0 and at most 255 pixel levels, got {step}")
    if steps < 0:
        raise ParamError("steps", f"must be >= 0, got {steps}")
    if target is not None and n is not None and not 0 <= target < n:
        raise ParamError("target", f"class {target} is out of range (valid: 0..{n - 1})")


def default_step(eps: float, method: str = "pgd") -> float:
    """FGSM takes one step of eps; PGD steps of eps/4 (at least 1/4 level): small enough to follow the gradient,
    large enough that four agreeing steps move a pixel by eps."""
    return float(eps) if method == "fgsm" else max(float(eps) / 4.0, 0.25)


def iter_attack(net: Any, image: np.ndarray, target: int | None, *, method: str = "pgd", eps: float = 2.0,
                step: float | None = None, steps: int = 20, abort: Abort = None, delta: np.ndarray | None = None,
                until: float | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                device: torch.device | str | None = None) -> Iterator[AttackState]:
    """Attack `image` (RGB uint8; fitted to the model's input first) towards class `target` (None: away from
    its own top-1), yielding an `AttackState` after every forward pass: step 0 is the starting image, each
    further state follows one update; the last has `done=True`.

    method: "pgd" (iterated sign-gradient steps of `step` levels, projected into the L-inf ball of `eps`
    levels and into 0..255; default step: `default_step`) or "fgsm" (one step of `eps`; `steps` is ignored).
    Stops early on success: the target is top-1 (untargeted: the original top-1 no longer is), or, with
    `until`, the target's probability reaches `until`. delta: a previous state's `delta` (int, HxWx3) to
    resume from, e.g. on the next live frame; it is clipped into this call's ball. abort: callable or
    threading.Event checked between steps; when set the generator just ends.
    net: a VisModel, or an eval-mode nn.Module taking `(img/255 - mean) / std` (mean/std in 0..1 units).
    """
    n_cls = _n_classes(net)
    target = None if target is None else int(target)
    _check(method, eps, step, steps, target, n_cls)
    fitted = _fit(net, image)
    module, mean_, std_, dev, _ = unpack_model(net, mean, std, device, None)
    if method == "fgsm":
        steps, step = 1, float(eps)
    step = default_step(eps, method) if step is None else float(step)
    radius = float(math.floor(eps + 1e-9))  # the 8-bit result can only differ by whole levels
    t0 = time.perf_counter()

    if delta is not None and np.shape(delta) != fitted.shape:
        raise DeepVisError(f"delta has shape {np.shape(delta)}, expected {fitted.shape} (the fitted image's)")
    with torch.inference_mode(False):  # normal tensors even when the caller runs under inference_mode
        scale = torch.tensor(std_, device=dev).view(1, 3, 1, 1) * 255.0
        shift = torch.tensor(mean_, device=dev).view(1, 3, 1, 1) * 255.0
        x0 = torch.from_numpy(fitted).to(dev).permute(2, 0, 1).unsqueeze(0).float()
        lo, hi = torch.clamp(-x0, min=-radius), torch.clamp(255.0 - x0, max=radius)  # 0..255 and the ball
        d = torch.zeros_like(x0)
        if delta is not None:
            prev = torch.from_numpy(np.asarray(delta, np.float32)).to(dev).permute(2, 0, 1).unsqueeze(0)
            d = torch.maximum(torch.minimum(prev, hi), lo)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        out = module((x - shift) / scale)
        out = out[0] if isinstance(out, tuple | list) else out
        return out.float()

    with torch.no_grad():
        if delta is None:
            orig_logits = None  # the first forward below is on x0 itself
        else:
            orig_logits = logits_of(x0)
    orig_top1 = orig_prob = None
    if orig_logits is not None:
        p0 = torch.softmax(orig_logits, 1)[0]
        orig_top1, orig_prob = int(p0.argmax()), float(p0.max())

    for k in range(steps + 1):
        if aborted(abort):
            return
        q = torch.round(x0 + torch.round(d).clamp(-radius, radius)).clamp(0, 255)  # the 8-bit image
        last = k == steps
        with torch.inference_mode(False), torch.enable_grad():  # also under a caller's inference_mode
            q = q.clone().requires_grad_(not last)
            logits = logits_of(q)
            probs = torch.softmax(logits.detach(), 1)[0]
            if orig_top1 is None:
                orig_top1, orig_prob = int(probs.argmax()), float(probs.max())
            top = int(probs.argmax())
            if target is None:
                success = top != orig_top1
            else:
                success = top == target and (until is None or float(probs[target]) >= until)
            done = last or success
            grad = None
            if not done:
                label = torch.tensor([orig_top1 if target is None else target], device=dev)
                loss = F.cross_entropy(logits, label)
                (grad,) = torch.autograd.grad(loss, q)
        img = q.detach()[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy()
        yield AttackState(step=k, steps=steps, image=img,
                          delta=img.astype(np.int16) - fitted.astype(np.int16),
                          probs=probs.cpu().numpy(), target=target, orig_top1=orig_top1, orig_prob=orig_prob,
                          success=success, done=done, seconds=time.perf_counter() - t0)
        if done:
            return
        with torch.no_grad():
            direction = grad.sign() if target is None else -grad.sign()  # untargeted: climb the original's loss
            d = torch.maximum(torch.minimum(d + step * direction, hi), lo)


def run_attack(net: Any, image: np.ndarray, target: int | None, *, abort: Abort = None,
               on_progress: Callable[[AttackState], None] | None = None, **kwargs: Any) -> AttackState:
    """Run `iter_attack` to the end and return its last state; raises `Cancelled` if `abort` fired."""
    for state in iter_attack(net, image, target, abort=abort, **kwargs):
        if on_progress is not None:
            on_progress(state)
        if state.done:
            return state
    raise Cancelled("attack was cancelled")


def fgsm(net: Any, image: np.ndarray, *, eps: float = 2.0, target: int | None = None, **kwargs: Any) -> AttackState:
    """Fast gradient sign method: one step of `eps` levels along the sign of the loss gradient; untargeted
    (away from the image's top-1) unless a `target` is given."""
    return run_attack(net, image, target, method="fgsm", eps=eps, **kwargs)


def pgd_targeted(net: Any, image: np.ndarray, target: int, *, eps: float = 2.0, step: float | None = None,
                 steps: int = 20, **kwargs: Any) -> AttackState:
    """Iterated targeted attack in the L-inf ball of `eps` levels; stops as soon as `target` is top-1."""
    return run_attack(net, image, int(target), method="pgd", eps=eps, step=step, steps=steps, **kwargs)


def start_image(kind: str, size: int, seed: int = 0) -> np.ndarray:
    """The start of a fooling image: "noise" (uniform random pixels) or "shapes" (a few flat-coloured discs,
    rectangles and stripes on grey): things that plainly show no object."""
    if kind not in STARTS:
        raise ParamError("start", f"{kind!r} is not a start image (choose: {', '.join(STARTS)})")
    if not 0 <= seed < 2**64:
        raise ParamError("seed", f"must be between 0 and 2^64 - 1, got {seed}")
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    img = np.full((size, size, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    if rng.random() < 0.5:
        img[(yy // max(size // 8, 1)) % 2 == 0] = rng.integers(60, 200, 3)
    for _ in range(6):
        colour = rng.integers(0, 256, 3)
        cy, cx = rng.integers(0, size, 2)
        r = int(rng.integers(size // 10, size // 4 + 1))
        if rng.random() < 0.5:
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour
        else:
            img[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r] = colour
    return img


def fooling_image(net: Any, target: int, *, start: str = "noise", eps: float = 32.0, step: float | None = None,
                  steps: int = 200, confidence: float = 0.99, seed: int = 0, size: int | None = None,
                  **kwargs: Any) -> AttackState:
    """An image that shows nothing (noise or flat shapes) yet is classified as `target` with at least
    `confidence`: the targeted attack started from `start_image`, allowed `eps` levels so the start stays
    recognisable. The state's `success` says whether the confidence was reached within `steps`."""
    if not 0 < confidence < 1:
        raise ParamError("confidence", f"must be between 0 and 1, got {confidence}")
    if size is None:
        size = getattr(net, "input_size", None) or 224
    img = start_image(start, int(size), seed)
    return run_attack(net, img, int(target), method="pgd", eps=eps, step=1.0 if step is None else step,
                      steps=steps, until=confidence, **kwargs)


def magnify(delta: np.ndarray, gain: float = 20.0) -> np.ndarray:
    """A perturbation made visible: 128 + gain * delta as uint8 (grey = unchanged). Label it with the gain."""
    return np.clip(128.0 + gain * np.asarray(delta, np.float32), 0, 255).round().astype(np.uint8)


# --- why it works ------------------------------------------------------------------------------------------

#: The lecture's 10-d logistic regression (CS231n, "Breaking linear classifiers"): score w.x = -3, P(class 1) = 0.047.
LECTURE_X = (2.0, -1.0, 3.0, -2.0, 2.0, 2.0, 1.0, -4.0, 5.0, 1.0)
LECTURE_W = (-1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def linear_demo(x: Sequence[float] = LECTURE_X, w: Sequence[float] = LECTURE_W, b: float = 0.0,
                eps: float = 0.5) -> dict[str, Any]:
    """Logistic regression P(class 1) = sigmoid(w.x + b), attacked by moving every coordinate by `eps` along
    sign(w): each moves a little, the score moves by eps * |w|_1. With the defaults: -3 -> 2, 0.047 -> 0.88."""
    xv, wv = np.asarray(x, np.float64), np.asarray(w, np.float64)
    if xv.shape != wv.shape or xv.ndim != 1:
        raise DeepVisError(f"x and w must be vectors of the same length, got {xv.shape} and {wv.shape}")
    x_adv = xv + eps * np.sign(wv)
    score, score_adv = float(wv @ xv + b), float(wv @ x_adv + b)
    return {"x": xv.tolist(), "w": wv.tolist(), "x_adv": x_adv.tolist(), "eps": eps,
            "score": score, "score_adv": score_adv, "score_change": score_adv - score,
            "prob": _sigmoid(score), "prob_adv": _sigmoid(score_adv),
            "class": int(score > 0), "class_adv": int(score_adv > 0)}


def linear_growth(dims: Sequence[int] = (10, 100, 1000, 10_000, 100_000, 150_528), *, eps: float = 1.0 / 255,
                  seed: int = 0) -> list[dict[str, float]]:
    """For random linear classifiers (w ~ N(0, 1)) of growing input dimension n: the score change that `eps`
    per coordinate along sign(w) causes, eps * |w|_1 (about 0.8 * eps * n), next to the typical size of the
    score itself (its standard deviation sqrt(n) for inputs x ~ N(0, 1)). The change grows like n, the score
    like sqrt(n), so in high dimension the tiny per-coordinate change wins: with eps = one 8-bit level of a
    unit-range input it overtakes the score near n = 100 000; 150 528 = 224 x 224 x 3 is an ImageNet input."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in dims:
        change = float(eps * np.abs(rng.standard_normal(int(n))).sum())
        rows.append({"dim": int(n), "eps": eps, "score_change": change, "typical_score": math.sqrt(n),
                     "ratio": change / math.sqrt(n)})
    return rows


def effect_vs_pixels(net: Any, image: np.ndarray, *, eps: float = 1.0,
                     fractions: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
                     seed: int = 0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     device: torch.device | str | None = None) -> list[dict[str, float]]:
    """The same on the real model: move a random `fraction` of the input values (pixel x channel) by `eps`
    levels against the gradient of the top-1 class's logit and measure how far that logit drops. Each value
    moves by eps, yet the drop grows with how many of them move, close to the linear prediction eps * sum |g|.
    Rows: fraction, values changed, predicted and actual logit drop, the class's probability after."""
    fitted = _fit(net, image)
    module, mean_, std_, dev, _ = unpack_model(net, mean, std, device, None)
    with torch.inference_mode(False):
        scale = torch.tensor(std_, device=dev).view(1, 3, 1, 1) * 255.0
        shift = torch.tensor(mean_, device=dev).view(1, 3, 1, 1) * 255.0
        x0 = torch.from_numpy(fitted).to(dev).permute(2, 0, 1).unsqueeze(0).float()

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        out = module((x - shift) / scale)
        return (out[0] if isinstance(out, tuple | list) else out).float()

    with torch.inference_mode(False), torch.enable_grad():
        x = x0.clone().requires_grad_(True)
        logits = logits_of(x)
        cls = int(logits.argmax())
        (g,) = torch.autograd.grad(logits[0, cls], x)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(g.numel())).to(dev)
    rows = []
    with torch.no_grad():
        base = float(logits[0, cls])
        for frac in fractions:
            k = max(1, int(round(float(frac) * g.numel())))
            mask = torch.zeros(g.numel(), device=dev)
            mask[order[:k]] = 1.0
            step = -eps * g.sign() * mask.view_as(g)
            q = (x0 + step).clamp(0, 255)
            step = q - x0  # what the clamp to 0..255 left of it
            out = logits_of(q)
            rows.append({"fraction": float(frac), "values_changed": k, "eps": eps,
                         "predicted_drop": float(-(g * step).sum()), "logit_drop": base - float(out[0, cls]),
                         "prob": float(torch.softmax(out, 1)[0, cls]), "class": cls})
    return rows
