"""The incremental plan (Krypton, Nakandala et al., SIGMOD 2019): where to cut the net and how large a crop each
cut needs, from the measured receptive-field geometry.

A patch changes only the units of a layer whose receptive field meets it. Along the chain of top-level blocks, each
stage runs the net's block(s) between two cut layers on a *crop* of the previous cut's activation, just large
enough to hold the dependencies of the next cut's affected units and aligned to the blocks' stride so the crop's
grid is the full map's grid. Cuts stop at the first layer that is not local (squeeze-excitation, global pooling:
`rf_is_local`) or where a patch affects most of the map. Windows cut at the image edge (Captum's placement) are
planned for too: a crop holds what any window position needs.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import DeepVisError
from ..probe import layer_table
from ..values import Layout
from .windows import window_span

MAX_AREA = 0.6  # a cut is worth it while a crop is at most this fraction of the map


@dataclass(frozen=True)
class Axis:
    """One axis of a layer: unit u sees input [u*s + o, u*s + o + z); the layer has n units."""

    s: int
    o: int
    z: int
    n: int

    def affected(self, p: int, w: int) -> tuple[int, int]:
        """Units whose receptive field meets input [p, p + w)."""
        lo = (p - self.o - self.z) // self.s + 1
        hi = -((-(p + w - self.o)) // self.s)
        return max(lo, 0), min(hi, self.n)

    def deps(self, prev: Axis, lo: int, hi: int, margin: int) -> tuple[int, int]:
        """Units of `prev` (the previous cut) that units [lo, hi) of this layer depend on."""
        r0 = lo * self.s + self.o
        r1 = (hi - 1) * self.s + self.o + self.z
        a = -((-(r0 - prev.o)) // prev.s) - margin
        b = (r1 - prev.o - prev.z) // prev.s + 1 + margin
        return max(a, 0), min(b, prev.n)

    def input_deps(self, lo: int, hi: int, size: int, margin: int) -> tuple[int, int]:
        """Input pixels (of an axis of `size`) that units [lo, hi) of this layer depend on."""
        return max(lo * self.s + self.o - margin, 0), min((hi - 1) * self.s + self.o + self.z + margin, size)


@dataclass
class Stage:
    """Cut `name` (a module called once): units on each axis, and the crop taken from the previous cut's map."""

    name: str
    ay: Axis
    ax: Axis
    ratio_y: int = 1  # this cut's stride / the previous cut's stride
    ratio_x: int = 1
    crop_y: int = 0  # crop length at the previous cut (in its units)
    crop_x: int = 0


@dataclass
class Plan:
    """The cuts in forward order (empty: full recomputation), a note saying why it ends there, the last cut."""

    stages: list[Stage]
    note: str
    until: str | None


def chain_candidates(net: nn.Module, x: Tensor, before: str | None) -> list[tuple[str, tuple[int, ...]]]:
    """Layers the whole forward flows through, in order: top-level modules and the items of top-level
    Sequential/ModuleList containers, called once, with a channels-first spatial output; only those before
    `before`."""
    modules = dict(net.named_modules())
    with torch.no_grad():
        table = layer_table(net, x)
    out = []
    for info in table:
        name = info.name
        if "@" in name:
            if before is not None and name.partition("@")[0] == before:
                break
            continue
        if before is not None and name == before:
            break
        parent = name.rpartition(".")[0]
        chain = parent == "" or (isinstance(modules.get(parent), nn.Sequential | nn.ModuleList)
                                 and "." not in parent)
        if (chain and info.layout is Layout.CHANNELS_FIRST and len(info.shape) == 3
                and min(info.shape[1:]) > 1):  # bare names: modules called once
            out.append((name, info.shape))
    return out


def crop_len(stage: Stage, prev: Stage | None, size: int, window: int, margin: int) -> tuple[int, int]:
    """Longest crop (previous cut's units) any window position needs, edge-cut windows included, aligned so every
    clamped start is a multiple of the stride ratio."""
    res = []
    for axis, pax, r in ((stage.ay, prev.ay if prev else None, stage.ratio_y),
                         (stage.ax, prev.ax if prev else None, stage.ratio_x)):
        n_prev = pax.n if pax else size
        need = 0
        for p in range(0, size):
            lo, hi = axis.affected(p, window_span(p, window, size))
            if lo >= hi:
                continue
            a, b = axis.deps(pax, lo, hi, margin) if pax else axis.input_deps(lo, hi, size, margin)
            need = max(need, b - (a // r) * r)
        length = min(n_prev, need + (n_prev - need) % r)
        res.append(length)
    return res[0], res[1]


def make_plan(net: nn.Module, x: Tensor, window: int, stop_layer: str | None, margin: int) -> Plan:
    """The cuts for `window` on inputs shaped like `x`, before module `stop_layer` (None: the whole net)."""
    from ..receptive_field import rf_geometry, rf_is_local

    h, w = x.shape[-2:]
    if h != w:
        return Plan([], "full recomputation (incremental inference needs a square input)", None)
    size = int(h)
    stages: list[Stage] = []
    reason = "no local layer to cut at"
    prev: Stage | None = None
    for name, shape in chain_candidates(net, x, stop_layer):
        try:
            geom = rf_geometry(net, name, size)
        except DeepVisError as err:
            reason = f"{name} has no measurable receptive field ({err})"
            break
        if geom.full:
            reason = f"{name} has no spatial footprint"
            break
        st = Stage(name, Axis(geom.stride_y, geom.offset_y, geom.size_y, shape[1]),
                   Axis(geom.stride_x, geom.offset_x, geom.size_x, shape[2]))
        if stages and (stages[-1].ay, stages[-1].ax) == (st.ay, st.ax):
            stages.pop()  # same geometry (BN, ReLU, a container ending in its last block): cut after both
            prev = stages[-1] if stages else None
        py, px = (prev.ay.s, prev.ax.s) if prev else (1, 1)
        if st.ay.s % py or st.ax.s % px:
            reason = f"{name}'s stride is not a multiple of the previous cut's"
            break
        st.ratio_y, st.ratio_x = st.ay.s // py, st.ax.s // px
        st.crop_y, st.crop_x = crop_len(st, prev, size, window, margin)
        prev_y, prev_x = (prev.ay.n, prev.ax.n) if prev else (size, size)
        frac = (st.crop_y * st.crop_x) / (prev_y * prev_x)
        aff_y = max(st.ay.affected(p, window)[1] - st.ay.affected(p, window)[0] for p in range(size - window + 1))
        if frac > MAX_AREA or aff_y / st.ay.n > MAX_AREA:
            reason = f"a {window}px patch affects most of {name}"
            break
        stages.append(st)
        prev = st
    # Locality is inherited along the chain: find the last local cut (global context ends incremental work).
    while stages and not rf_is_local(net, stages[-1].name, size):
        reason = f"{stages[-1].name} is not local (global context such as squeeze-excitation or global pooling)"
        stages.pop()
    if not stages:
        return Plan([], f"full recomputation ({reason})", None)
    last = stages[-1].name
    return Plan(stages, f"incremental up to {last} ({len(stages)} cuts); full recomputation after it: {reason}",
                last)


_PLANS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Plan]] = weakref.WeakKeyDictionary()
_PLANS_LOCK = threading.Lock()


def cached_plan(net: nn.Module, x: Tensor, window: int, stop_layer: str | None, margin: int) -> Plan:
    """`make_plan`, measured once per net (weakly), input shape and device, window, target layer and margin; an
    architecture the receptive-field probing cannot handle gets an empty plan that says why."""
    key = (tuple(x.shape), str(x.device), window, stop_layer, margin)
    with _PLANS_LOCK:
        plan = _PLANS.get(net, {}).get(key)
    if plan is not None:
        return plan
    try:
        plan = make_plan(net, x, window, stop_layer, margin)
    except Exception as err:  # noqa: BLE001 - an architecture the RF probing cannot handle
        plan = Plan([], f"full recomputation (no incremental plan: {str(err)[:120]})", None)
    with _PLANS_LOCK:
        _PLANS.setdefault(net, {})[key] = plan
    return plan
