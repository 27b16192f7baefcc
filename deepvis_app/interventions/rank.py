"""Which channels of a layer drive a class: activation x gradient, and the drop when a channel is switched off.

- `gradxact`: per channel, the sum over the layer's positions of activation x d(class score)/d(activation), from one
  forward and one backward (Captum's `LayerGradientXActivation` summed over space, tested).
- `ablation`: per channel, class score without interventions minus the score with that channel zeroed (or clamped,
  scaled). Exactly one forward per channel in meaning, but batched, and only the layers above the intervened one
  are run per channel: `Replay` computes the layers below once and feeds their output to the rest of the net.

Replay's cut: the output of the intervened layer itself when the rest of the network depends on the input only
through it (a block's output), else the nearest earlier layer call that is such a cut (for a unit inside a
residual block: the block's input). A cut is found by feeding the network a NaN image with the candidate's
output replaced by its real value: the logits are finite and equal the real ones only if nothing after the
candidate reads anything else. No cut within a few candidates: every variant runs the whole network (batched).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import DeepVisError, ParamError
from ..layouts import as_maps
from ..probe import Capture, output_logits, resolve_calls
from ..values import ClassTarget, LayerInfo, check_channel, check_class_index
from .apply import writable_maps
from .spec import parse_mode

RANK_METHODS = ("gradxact", "ablation")
ABLATION_MODES = ("zero", "clamp", "scale")
MAX_CUT_TRIES = 12
DUMMY_SIDE = 32  # the side of the NaN input the layers below a cut run on


def class_scores(logits: Tensor, target: ClassTarget) -> Tensor:
    """Per image: the target class's softmax probability or logit."""
    flat = logits.flatten(1)
    check_class_index(target.index, flat.shape[1])
    return flat.softmax(dim=1)[:, target.index] if target.score == "prob" else flat[:, target.index]


@dataclass(frozen=True)
class Ranking:
    """Channel scores of one layer for one class (summed over the images ranked): higher = drives it more.
    `channels` are the channels scored (all of the layer's unless a subset was asked for)."""

    layer: str
    by: str
    target: ClassTarget
    channels: tuple[int, ...]
    scores: tuple[float, ...]
    base: float | None = None  # ablation: the class score of the unchanged network
    note: str = ""  # how it was computed (ablation: which layers were rerun)

    def order(self) -> list[int]:
        """Channels best first (ties: lower channel first)."""
        pairs = sorted(zip(self.scores, self.channels, strict=True), key=lambda p: (-p[0], p[1]))
        return [c for _, c in pairs]

    def top(self, n: int) -> list[int]:
        return self.order()[:n]

    def score_of(self, channel: int) -> float:
        return self.scores[self.channels.index(channel)]

    def as_list(self, n: int | None = None) -> list[dict[str, float | int]]:
        """[{channel, score}, ...] best first (the first `n`)."""
        return [{"channel": c, "score": self.score_of(c)} for c in self.order()[:n]]


def gradxact_maps(net: nn.Module, x: Tensor, layer: str, target: ClassTarget, info: LayerInfo, *,
                  example: Tensor | None = None) -> Tensor:
    """Activation x gradient of the class score at `layer`, as channels-first maps N x C x H x W (one forward, one
    backward; the layers below `layer` record no graph)."""
    grabbed: list[Tensor] = []

    def grab(out: Tensor) -> Tensor:
        leaf = out.detach().requires_grad_(True)
        grabbed.append(leaf)
        return leaf.clone()  # downstream (inplace ReLUs too) gets a non-leaf copy

    if torch.is_inference_mode_enabled():
        raise DeepVisError("activation x gradient cannot run inside torch.inference_mode()")
    with torch.enable_grad(), Capture(net, modify={layer: grab}, example=example if example is not None else x):
        scores = class_scores(output_logits(net(x)), target)
        if not grabbed:
            raise DeepVisError(f"layer {layer!r} produced no output in this forward pass")
        (grad,) = torch.autograd.grad(scores.sum(), grabbed[0])
    return as_maps(grabbed[0].detach() * grad, info)


def rank_gradxact(net: nn.Module, x: Tensor, layer: str, target: ClassTarget, info: LayerInfo, *,
                  example: Tensor | None = None) -> Ranking:
    """Channels of `layer` by activation x gradient summed over space (and over the images of `x`)."""
    contrib = gradxact_maps(net, x, layer, target, info, example=example).sum(dim=(0, 2, 3))
    values = contrib.double().cpu().tolist()
    return Ranking(layer, "gradxact", target, tuple(range(len(values))), tuple(values),
                   note="activation x gradient summed over positions")


# -- Replay: the layers above a cut on a batch of variants ------------------------------------------------------

_ORDER: weakref.WeakKeyDictionary[nn.Module, dict[tuple, list[str]]] = weakref.WeakKeyDictionary()
_CUTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str | None]] = weakref.WeakKeyDictionary()


@torch.no_grad()
def completion_order(net: nn.Module, x: Tensor) -> list[str]:
    """`name@k` of every named module call that returns a tensor, in the order the calls finish (cached per net
    and input shape)."""
    key = (tuple(x.shape), x.dtype, x.device)
    cached = _ORDER.get(net, {}).get(key)
    if cached is not None:
        return cached
    order: list[str] = []
    counts: dict[str, int] = {}
    handles = []

    def make(name: str):
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            k = counts.get(name, 0)
            counts[name] = k + 1
            if isinstance(out, Tensor):
                order.append(f"{name}@{k}")
        return hook

    try:
        for name, module in net.named_modules():
            if name:
                handles.append(module.register_forward_hook(make(name)))
        net(x)
    finally:
        for h in handles:
            h.remove()
    _ORDER.setdefault(net, {})[key] = order
    return order


class Replay:
    """Runs the part of `net` above `layer` for batches of variants of one image `x` (N=1), reusing the layers
    below, which run once. `run(n, change)` returns the logits of n variants, where `change(maps)` edits the
    layer's channels-first maps (n x C x H x W, a writable view) in place."""

    def __init__(self, net: nn.Module, x: Tensor, layer: str, info: LayerInfo, *,
                 example: Tensor | None = None) -> None:
        if x.shape[0] != 1:
            raise ParamError("x", f"must hold one image, got a batch of {x.shape[0]}")
        self.net, self.x, self.layer, self.info = net, x, layer, info
        example = example if example is not None else x
        name, call = resolve_calls(net, [layer], example)[layer]
        self.exact_layer = f"{name}@{call}"
        with torch.no_grad():
            self.cut, self.cut_act, self.base_logits = self._find_cut()

    @property
    def note(self) -> str:
        """How the variants are run, in words for a report."""
        if self.cut is None:
            return f"every variant ran the whole network: no layer below {self.layer} carries all the rest needs"
        if self.cut == self.exact_layer:
            return f"only the layers above {self.layer} reran; the layers below ran once"
        return f"only the layers above {self.cut} reran: the nearest layer below {self.layer} that all the rest " \
               "depends on; the layers below it ran once"

    def _find_cut(self) -> tuple[str | None, Tensor | None, Tensor]:
        order = completion_order(self.net, self.x)
        if self.exact_layer not in order:
            raise DeepVisError(f"layer {self.layer!r} produced no output in this forward pass")
        pos = order.index(self.exact_layer)
        cands = order[max(0, pos - MAX_CUT_TRIES + 1):pos + 1][::-1]
        key = (tuple(self.x.shape), self.x.dtype, self.x.device, self.exact_layer)
        known = _CUTS.get(self.net, {}).get(key, "?")
        if known != "?":
            cands = [known] if known is not None else []
        with Capture(self.net, cands, detach=True, example=self.x) as cap:
            logits = output_logits(cap.run(self.x)).detach()
            acts = {c: cap[c] for c in cands}
        found, side = None, 0
        for cand in cands:
            side = self._check(cand, acts[cand], logits)
            if side:
                found = cand
                break
        _CUTS.setdefault(self.net, {})[key] = found
        self.dummy_side = side
        return found, (acts[found] if found is not None else None), logits

    def _dummy(self, n: int, side: int) -> Tensor:
        """A NaN input of n images (the layers below the cut run on it; any value of it reaching the logits shows)."""
        return torch.full((n, *self.x.shape[1:-2], side, side), float("nan"), dtype=self.x.dtype,
                          device=self.x.device)

    def _check(self, cand: str, act: Tensor, logits: Tensor) -> int:
        """The side of a dummy input with which replacing `cand`'s output by `act` gives the real logits (a small
        one if the layers below take it, else the image's size); 0 when `cand` is not a cut."""
        for side in dict.fromkeys((min(DUMMY_SIDE, self.x.shape[-1]), self.x.shape[-1])):
            try:
                with Capture(self.net, replace={cand: act.clone()}, example=self.x) as cap:
                    out = output_logits(cap.run(self._dummy(1, side)))
            except (RuntimeError, ValueError, DeepVisError):
                continue  # shapes disagree: the rest of the net also reads something else, or needs a bigger input
            if bool(torch.isfinite(out).all()) and torch.allclose(out, logits, rtol=1e-5, atol=1e-6):
                return side
        return 0

    def run(self, n: int, change: Callable[[Tensor], None]) -> Tensor:
        """Logits (n x classes) of n variants: `change` edits the layer's maps of the batch in place."""

        def at_layer(output: Tensor) -> Tensor:
            out, maps = writable_maps(output, self.info)
            change(maps)
            return out

        with torch.no_grad():
            if self.cut is None:
                batch = self.x.expand(n, *self.x.shape[1:]).contiguous()
                with Capture(self.net, modify={self.exact_layer: at_layer}, example=self.x):
                    return output_logits(self.net(batch))
            assert self.cut_act is not None
            start = self.cut_act.expand(n, *self.cut_act.shape[1:]).clone()
            dummy = self._dummy(n, self.dummy_side)
            if self.cut == self.exact_layer:
                start = at_layer(start)
                with Capture(self.net, replace={self.cut: start}, example=self.x) as cap:
                    out = output_logits(cap.run(dummy))
            else:
                with Capture(self.net, replace={self.cut: start}, example=self.x) as cap, \
                        Capture(self.net, modify={self.exact_layer: at_layer}, example=self.x):
                    out = output_logits(cap.run(dummy))
        if not bool(torch.isfinite(out).all()):
            raise DeepVisError(f"replaying the layers above {self.cut!r} gave non-finite logits")
        return out


def _ablation_change(channels: Sequence[int], kind: str, value: float | None) -> Callable[[Tensor], None]:
    """Edit variant k of the batch: channel `channels[k]` zeroed / clamped / scaled."""

    def change(maps: Tensor) -> None:
        rows = torch.arange(len(channels), device=maps.device)
        idx = torch.tensor(list(channels), dtype=torch.long, device=maps.device)
        if kind == "zero":
            maps[rows, idx] = 0
        elif kind == "clamp":
            maps[rows, idx] = value
        else:
            maps[rows, idx] = maps[rows, idx] * value

    return change


def iter_ablation(net: nn.Module, x: Tensor, layer: str, target: ClassTarget, info: LayerInfo, *,
                  channels: Sequence[int] | None = None, mode: str = "zero", batch: int = 32,
                  example: Tensor | None = None, replay: Replay | None = None) -> Iterator[tuple[int, int, Ranking]]:
    """The ablation ranking as a cancellable generator: yields (done, total, ranking of the channels done so far)
    after each batch of channels (stop iterating to cancel). Score = base score - score with the channel changed
    (`mode`: zero, clamp:V or scale:F), one image `x`. `replay`: a `Replay` of the same net, image and layer made
    earlier (e.g. to rank the same frame for another class without capturing it again)."""
    kind, value = parse_mode(mode)
    if kind not in ABLATION_MODES:
        raise ParamError("mode", f"must be zero, clamp:V or scale:F for an ablation ranking, got {mode!r}")
    if batch < 1:
        raise ParamError("batch", f"must be at least 1, got {batch}")
    chans = list(range(info.channels)) if channels is None else list(dict.fromkeys(channels))
    for c in chans:
        check_channel(info, c)
    if replay is None:
        replay = Replay(net, x, layer, info, example=example)
    elif replay.net is not net or replay.x is not x or replay.layer != layer:
        raise ParamError("replay", "must be a Replay of the same net, image and layer")
    base = float(class_scores(replay.base_logits, target)[0])
    done: list[int] = []
    scores: list[float] = []
    for start in range(0, len(chans), batch):
        part = chans[start:start + batch]
        logits = replay.run(len(part), _ablation_change(part, kind, value))
        after = class_scores(logits, target).double().cpu().tolist()
        done += part
        scores += [base - a for a in after]
        yield len(done), len(chans), Ranking(layer, "ablation", target, tuple(done), tuple(scores), base,
                                             note=replay.note)


def rank_ablation(net: nn.Module, x: Tensor, layer: str, target: ClassTarget, info: LayerInfo, *,
                  channels: Sequence[int] | None = None, mode: str = "zero", batch: int = 32,
                  example: Tensor | None = None, replay: Replay | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Ranking:
    """Channels of `layer` by the drop in the class score when each is zeroed (see `iter_ablation`)."""
    ranking: Ranking | None = None
    for done, total, partial in iter_ablation(net, x, layer, target, info, channels=channels, mode=mode,
                                              batch=batch, example=example, replay=replay):
        ranking = partial
        if progress is not None:
            progress(done, total)
    if ranking is None:
        raise ParamError("channels", "must name at least one channel")
    return ranking


def rank_channels(net: nn.Module, x: Tensor, layer: str, target: ClassTarget, info: LayerInfo, *,
                  by: str = "gradxact", batch: int = 32, example: Tensor | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Ranking:
    """One entry for both rankings: `by` = "gradxact" (images of `x` summed) or "ablation" (one image)."""
    if by not in RANK_METHODS:
        raise ParamError("by", f"must be one of {', '.join(RANK_METHODS)}, got {by!r}")
    if by == "gradxact":
        return rank_gradxact(net, x, layer, target, info, example=example)
    return rank_ablation(net, x, layer, target, info, batch=batch, example=example, progress=progress)
