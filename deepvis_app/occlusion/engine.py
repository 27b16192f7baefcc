"""The occlusion engine: scores of one target for batches of window positions on one image, exact and fast.

Positions are batched; the forward stops at the target unit's layer; a faster copy of the net is used when it
gives the same scores; and, with a plan (`plan.py`), each stage runs only on crops around the patch (incremental
inference). The layers before a cut are skipped by feeding a tiny dummy input and replacing the cut's output
(`probe.Capture(replace=...)`). Every plan is self-checked against the caller's plain forward at a few window
positions (corners, middle, an edge-cut window); on a mismatch it retries with a one-unit margin, then falls back
to full recomputation and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..devices import check_tolerance, exact_math
from ..fastnet import fast_copy
from ..probe import Capture, resolve_calls, split_layer
from ..values import LayerInfo, Unit
from .plan import Plan, Stage, cached_plan
from .targets import Target, check_class, output_logits, score
from .windows import window_span


class Engine:
    """Scores of `target` (with `info`, its layer's LayerInfo, for units) for batches of window positions on the
    normalized image `x`, windows covered by `fill`; `base_scores` / `base_labels` are the unoccluded ones.

    The self-checks run in full float32 (`devices.exact_math`: TF32 off on a GPU) with the device's tolerance
    (`devices.check_tolerance`), so they test that a fast path computes the same thing, not the GPU's rounding.
    A fast path that fails its check is dropped and `on_notice` says so (one line each). On a GPU at most one
    faster copy of the net is made (BatchNorm folded, channels-last); the CPU also tries the unfolded one.
    """

    def __init__(self, net: nn.Module, x: Tensor, target: Target, info: LayerInfo | None, fill: Tensor,
                 window: int, incremental: bool, on_notice: Callable[[str], None] | None = None) -> None:
        self.net = net
        self.x = x
        self.target = target
        self.info = info
        self.fill = fill
        self.window = window
        self.size = int(x.shape[-1])
        self.notice = on_notice or (lambda _text: None)
        self.stop_layer: str | None = None  # "module@call" of the unit's layer; None: the logits
        self.stop_module: str | None = None
        if isinstance(target, Unit):
            name, call = resolve_calls(net, [target.layer], x)[target.layer]
            self.stop_layer, self.stop_module = f"{name}@{call}", name
        self.run_net = net
        self._margin = 0
        self._bases: dict[str, Tensor] = {}
        # The unoccluded score and the reference positions come from the caller's net itself.
        h, w = int(x.shape[-2]), int(x.shape[-1])
        self._probe = [(0, 0), ((h - window) // 2, (w - window) // 3), (h - window, w - window)]
        if window > 1:
            self._probe.append((h - window // 2, w - (window + 1) // 2))  # a window cut at the image edge
        with torch.no_grad():
            out = self._forward(x, stop=self.stop_layer)
            check_class(target, out)
            self.base_scores, self.base_labels = score(out, target, info)
        with exact_math(x.device):
            self.rtol, self.atol = check_tolerance(x.device)
            self._ref = self.naive(self._probe)[0]
            self.fast = self._checked_copy()
            self.plan = Plan([], "full recomputation (incremental inference off)", None)
            if incremental:
                self.plan = self._checked_plan()

    def same(self, got: Tensor) -> bool:
        """`got` (scores at the probe positions) equals the plain forward's within the device's tolerance."""
        return bool(torch.allclose(got, self._ref, rtol=self.rtol, atol=self.atol))

    def _checked_copy(self) -> str:
        """Run a faster copy of the net (channels-last, BatchNorm folded into the conv before it) when it gives
        the same scores; returns what runs ("plain" when no copy passed its check)."""
        tried = []
        for fold in (True, False) if self.x.device.type == "cpu" else (True,):
            kind = "channels-last" + (", BatchNorm folded" if fold else "")
            try:
                self.run_net = fast_copy(self.net, self.x, fold=fold)
                if self.same(self.naive(self._probe)[0]):
                    return kind
                tried.append(f"{kind}: other scores")
            except Exception as err:  # noqa: BLE001 - any failure of the copy means: use the net itself
                tried.append(f"{kind}: {type(err).__name__}")
        self.run_net = self.net
        self.notice(f"occlusion: the faster copy of the model did not reproduce its scores on {self.x.device} "
                    f"({'; '.join(tried)}); using the model as it is (slower)")
        return "plain"

    # -- forwards
    def _forward(self, batch: Tensor, *, start: tuple[str, Tensor] | None = None,
                 stop: str | None = None) -> Tensor:
        """The run net's forward on `batch`, the output of layer `start[0]` replaced by `start[1]` (the layers
        before it then cost only the dummy `batch`), ending at layer `stop` (None: the logits)."""
        replace = {start[0]: start[1]} if start is not None else None
        with Capture(self.run_net, [stop] if stop else [], replace=replace, stop=stop is not None,
                     example=self.x) as cap:
            out = cap.run(batch)
            return cap[stop] if stop else output_logits(out)

    def _dummy(self, n: int) -> Tensor:
        side = min(self.x.shape[-1], 32)
        return torch.zeros(n, self.x.shape[1], side, side, dtype=self.x.dtype, device=self.x.device
                           ).contiguous(memory_format=torch.channels_last)

    # -- batches
    def patched(self, positions: Sequence[tuple[int, int]]) -> Tensor:
        """The occluded images [N, C, H, W] (windows at the edge are cut there)."""
        w = self.window
        batch = self.x.expand(len(positions), -1, -1, -1).clone()
        for k, (py, px) in enumerate(positions):
            batch[k, :, py:py + w, px:px + w] = self.fill[0, :, py:py + w, px:px + w]
        return batch

    def naive(self, positions: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor | None]:
        """Full forwards of the occluded images (batched), stopping at the target layer."""
        with torch.no_grad():
            batch = self.patched(positions).contiguous(memory_format=torch.channels_last)
            return score(self._forward(batch, stop=self.stop_layer), self.target, self.info)

    def scores(self, positions: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor | None]:
        """The target's scores (and winning classes) with the window at each (top, left) position."""
        if not self.plan.stages:
            return self.naive(positions)
        with torch.no_grad():
            return self._incremental(positions, self.plan, self._bases)

    def _incremental(self, positions: Sequence[tuple[int, int]], plan: Plan,
                     bases: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        w, size, n = self.window, self.size, len(positions)
        spans = [(window_span(py, w, size), window_span(px, w, size)) for py, px in positions]
        prev: Stage | None = None
        out_prev: Tensor | None = None  # previous stage's crop outputs [N, C, ., .]
        off_prev: list[tuple[int, int]] = []  # their top-left units
        for st in plan.stages:
            ry, rx = st.ratio_y, st.ratio_x
            crops = []
            starts = []
            for k, (py, px) in enumerate(positions):
                ylo, yhi = st.ay.affected(py, spans[k][0])
                xlo, xhi = st.ax.affected(px, spans[k][1])
                if prev is None:
                    a_y = st.ay.input_deps(ylo, yhi, size, self._margin)[0]
                    a_x = st.ax.input_deps(xlo, xhi, size, self._margin)[0]
                    ny, nx = size, size
                else:
                    a_y = st.ay.deps(prev.ay, ylo, yhi, self._margin)[0]
                    a_x = st.ax.deps(prev.ax, xlo, xhi, self._margin)[0]
                    ny, nx = prev.ay.n, prev.ax.n
                cy = min((a_y // ry) * ry, ny - st.crop_y)
                cx = min((a_x // rx) * rx, nx - st.crop_x)
                starts.append((cy // ry, cx // rx))
                if prev is None:
                    crop = self.x[0, :, cy:cy + st.crop_y, cx:cx + st.crop_x].clone()
                    y0, y1 = max(py, cy), min(py + w, cy + st.crop_y)
                    x0, x1 = max(px, cx), min(px + w, cx + st.crop_x)
                    if y0 < y1 and x0 < x1:
                        crop[:, y0 - cy:y1 - cy, x0 - cx:x1 - cx] = self.fill[0, :, y0:y1, x0:x1]
                else:
                    assert out_prev is not None
                    crop = bases[prev.name][0, :, cy:cy + st.crop_y, cx:cx + st.crop_x].clone()
                    paste(crop, (cy, cx), out_prev[k], off_prev[k], prev, positions[k], spans[k])
                crops.append(crop)
            batch = torch.stack(crops).contiguous(memory_format=torch.channels_last)
            if prev is None:
                out = self._forward(batch, stop=f"{st.name}@0")
            else:
                out = self._forward(self._dummy(n), start=(f"{prev.name}@0", batch), stop=f"{st.name}@0")
            prev, out_prev, off_prev = st, out, starts
        assert prev is not None and out_prev is not None
        full = bases[prev.name].expand(n, -1, -1, -1).clone()
        for k in range(n):
            paste(full[k], (0, 0), out_prev[k], off_prev[k], prev, positions[k], spans[k])
        full = full.contiguous(memory_format=torch.channels_last)
        out = self._forward(self._dummy(n), start=(f"{prev.name}@0", full), stop=self.stop_layer)
        return score(out, self.target, self.info)

    # -- planning with a self-check
    def _checked_plan(self) -> Plan:
        for margin in (0, 1):
            plan = cached_plan(self.net, self.x, self.window, self.stop_module, margin)
            if not plan.stages:
                return plan
            self._margin = margin
            try:
                self._bases = self._base_acts(plan)
                with torch.no_grad():
                    got, _ = self._incremental(self._probe, plan, self._bases)
                ok = self.same(got)
            except Exception:  # noqa: BLE001 - a net the cuts do not fit (shapes, dummy input): no plan
                ok = False
            if ok:
                return plan
        self._bases = {}
        self.notice(f"occlusion: incremental inference did not reproduce the full forward on {self.x.device}; "
                    "every window is computed in full (slower)")
        return Plan([], "full recomputation (incremental self-check failed for this net)", None)

    def _base_acts(self, plan: Plan) -> dict[str, Tensor]:
        """The unoccluded activations at every cut (the crops' surroundings)."""
        names = [f"{st.name}@0" for st in plan.stages]
        with torch.no_grad(), Capture(self.run_net, names, stop=True, detach=True) as cap:
            cap.run(self.x)
            return {split_layer(name)[0]: cap[name] for name in names}


def paste(dst: Tensor, dst_start: tuple[int, int], src: Tensor, src_start: tuple[int, int], st: Stage,
          pos: tuple[int, int], span: tuple[int, int]) -> None:
    """Copy the units of cut `st` that the window at `pos` (of `span` pixels inside the image) affects, from a stage
    output `src` (whose first unit is `src_start`) into `dst` (a crop of that map starting at `dst_start`), where
    they overlap."""
    ylo, yhi = st.ay.affected(pos[0], span[0])
    xlo, xhi = st.ax.affected(pos[1], span[1])
    ylo, yhi = max(ylo, dst_start[0]), min(yhi, dst_start[0] + dst.shape[1])
    xlo, xhi = max(xlo, dst_start[1]), min(xhi, dst_start[1] + dst.shape[2])
    if ylo >= yhi or xlo >= xhi:
        return
    dst[:, ylo - dst_start[0]:yhi - dst_start[0], xlo - dst_start[1]:xhi - dst_start[1]] = \
        src[:, ylo - src_start[0]:yhi - src_start[0], xlo - src_start[1]:xhi - src_start[1]]
