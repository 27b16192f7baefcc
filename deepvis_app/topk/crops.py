"""Deconvnet / guided-backprop crops of top-k entries: batched, windowed where exact, and lazily per unit.

Each entry's crop is the `norm` view of `attribute(net, fitted image, layer, (c, y, x), kind)` cut to the
unit's receptive-field box. Computing it that way costs a whole-network forward and backward per entry; here:

* the forward stops at the entry's layer (`probe.Capture(stop=True)`: nothing after it can change the unit or its
  gradients), and the unit is read through the layer's layout (`layouts.as_maps`), so channels-last and token
  layers work as channels-first ones do; a token layer's unit sees the whole image, so its crop is the frame;
* when the layer is local (`receptive_field.rf_is_local`: no squeeze-excitation or global pooling below it),
  only a window of the input that contains the box goes through the net. The window is aligned to the layer's
  total stride T and its size is congruent to the input size modulo T, and it sits on the image border where the
  box does, so every conv sees the same pixels and the same zero padding in the unit's cone as on the whole
  image: value and gradients are the same (each windowed unit's value is also checked against the scan's value,
  falling back to the whole image on a mismatch);
* entries are batched across units and images (all windows of a layer have one size), entries sharing a window
  share one forward (the graph is kept and backpropagated once per entry round), inputs are channels-last.

The GUI API is `iter_render_unit` / `render_unit`: one unit's k crops, written into the store atomically.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..devices import halve_batch, is_out_of_memory
from ..errors import DeepVisError
from ..fileio import atomic_write_png
from ..layouts import as_maps
from ..probe import Capture
from ..values import LayerInfo
from .store import TopKStore, crop_box, remove_temp_files

ATTRIBUTION_KINDS = ("deconv", "guided")


# ---------------------------------------------------------------- crop jobs

@dataclass(frozen=True)
class CropJob:
    """One entry to render: unit `channel` of `layer` at (y, x) of the layer's maps (`layouts.as_maps`; None for
    vectors) on `image` (the fitted SxS uint8 RGB the net saw; `image_key` identifies it), cut to `box`. `value`:
    the unit's activation from the scan, which checks the windowed forward (None: no check)."""

    layer: str
    channel: int
    y: int | None
    x: int | None
    box: tuple[int, int, int, int]
    image: np.ndarray
    image_key: int
    value: float | None = None


def _window_1d(lo: int, hi: int, size: int, stride: int, length: int) -> int:
    """Start a of [a, a + length) containing [lo, hi) (clipped box), a multiple of `stride`, inside [0, size]."""
    a = (max(lo, 0) // stride) * stride
    if a + length > size:
        a = size - length
    return a


def _window_length(extent: int, size: int, stride: int) -> int:
    """Smallest L >= extent + stride - 1 with L = size (mod stride), capped at size."""
    need = min(extent + stride - 1, size)
    length = need + ((size - need) % stride)
    return min(length, size)


def _render_norm(grads: Tensor) -> np.ndarray:
    """`render_view(g, "norm")` for a batch [n, C, H, W] -> uint8 [n, H, W] (same ops, per sample)."""
    img = grads.detach().float().abs().sum(dim=1)
    scale = img.flatten(1).amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny).view(-1, 1, 1)
    img = (img / scale).clamp(0, 1)
    return (img * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def iter_crops(vm, jobs: Sequence[CropJob], kinds: Sequence[str] = ATTRIBUTION_KINDS, *, batch: int = 8,
               window: bool = True,
               on_notice: Callable[[str], None] | None = None) -> Iterator[tuple[int, str, np.ndarray]]:
    """Yield (job index, kind, uint8 HxWx3 crop) for every job and kind, batched (see the module docstring).

    Abortable between yields (close the generator). window=False runs whole images (the reference path). A batch
    that runs out of memory is split in halves and run again (`on_notice` hears it once per halving; the crops
    are the same).
    """
    kinds = [k for k in dict.fromkeys(kinds)]
    bad = [k for k in kinds if k not in ATTRIBUTION_KINDS]
    if bad:
        raise DeepVisError(f"unknown attribution {bad[0]!r}; use deconv or guided")
    if not kinds or not jobs:
        return
    by_layer: dict[str, list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        by_layer[job.layer].append(i)
    for layer, idx in by_layer.items():
        yield from _layer_crops(vm, layer, [jobs[i] for i in idx], idx, kinds, batch, window, on_notice)


def _layer_crops(vm, layer: str, jobs: list[CropJob], ids: list[int], kinds: list[str], batch: int,
                 window: bool, on_notice: Callable[[str], None] | None = None
                 ) -> Iterator[tuple[int, str, np.ndarray]]:
    from ..attribution import AttributionContext
    from ..receptive_field import rf_geometry, rf_is_local

    net, size = vm.net, int(vm.input_size)
    info = vm.info(layer)
    spatial = jobs[0].y is not None
    ly = lx = size
    ty = tx = 1
    if window and spatial and rf_is_local(net, layer, size, info):
        geom = rf_geometry(net, layer, size, info)
        ty, tx = max(1, geom.stride_y), max(1, geom.stride_x)
        ly, lx = _window_length(geom.size_y, size, ty), _window_length(geom.size_x, size, tx)
    windowed = (ly, lx) != (size, size)
    example = torch.zeros(1, 3, size, size, device=vm.device)
    tensors: dict[int, Tensor] = {}

    def tensor_of(job: CropJob) -> Tensor:
        if job.image_key not in tensors:
            if len(tensors) > 64:
                tensors.clear()
            tensors[job.image_key] = vm.preprocess.to_tensor(job.image).detach()
        return tensors[job.image_key]

    # windows: (image, top, left) -> the jobs that share that input
    groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for j, job in enumerate(jobs):
        if spatial and windowed:
            t, lft, b, r = job.box
            a_y = _window_1d(t, b, size, ty, ly)
            a_x = _window_1d(lft, r, size, tx, lx)
        else:
            a_y = a_x = 0
        groups[(job.image_key, a_y, a_x)].append(j)
    per_batch = batch if not windowed else min(64, max(batch, int(batch * size * size / (ly * lx))))
    fallback: list[int] = []
    with Capture(net, [layer], example=example, stop=True) as capture:
        plans = list(_pack(groups, per_batch))
        while plans:
            plan = plans.pop(0)
            try:  # a batch's crops are handed out once it is complete, so a retry never repeats one
                done = list(_run_batch(vm, capture, info, jobs, ids, kinds, plan, (ly, lx), (ty, tx), spatial,
                                       windowed, tensor_of, fallback, AttributionContext))
            except Exception as err:  # noqa: BLE001 - only running out of memory is retried
                if not is_out_of_memory(err):
                    raise
                size = halve_batch(err, len(plan), device=vm.device, what="crop windows", on_notice=on_notice)
                plans[:0] = [plan[i:i + size] for i in range(0, len(plan), size)]
                continue
            yield from done
    fallback = sorted(set(fallback))  # a batch run again may have reported its mismatches twice
    if fallback:  # windowed value disagreed with the scan's: redo those on whole images
        yield from _layer_crops(vm, layer, [jobs[j] for j in fallback], [ids[j] for j in fallback], kinds, batch,
                                False, on_notice)


def _pack(groups: dict[tuple[int, int, int], list[int]], per_batch: int) -> Iterator[list[tuple[tuple, list[int]]]]:
    """Forward batches: each slot holds one window; a window with m jobs gets min(m, per_batch) slots and its jobs
    take turns in rounds over the kept graph."""
    plan: list[tuple[tuple, list[int]]] = []
    used = 0
    for key, members in groups.items():
        slots = min(len(members), per_batch)
        if used + slots > per_batch and plan:
            yield plan
            plan, used = [], 0
        for s in range(slots):
            plan.append((key, members[s::slots]))
        used += slots
    if plan:
        yield plan


def _run_batch(vm, capture: Capture, info: LayerInfo, jobs: list[CropJob], ids: list[int], kinds: list[str],
               plan: list[tuple[tuple, list[int]]], lengths: tuple[int, int], strides: tuple[int, int],
               spatial: bool, windowed: bool, tensor_of, fallback: list[int],
               context) -> Iterator[tuple[int, str, np.ndarray]]:
    ly, lx = lengths
    ty, tx = strides
    rows = []
    for (_key, a_y, a_x), members in plan:
        full = tensor_of(jobs[members[0]])
        rows.append(full[:, :, a_y:a_y + ly, a_x:a_x + lx])
    x = torch.cat(rows).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    with torch.enable_grad(), context(vm.net) as ac:
        capture.run(x)
        maps = as_maps(capture[info.name], info)  # N x C x H x W whatever the layer's layout
    rounds = max(len(m) for _, m in plan)
    skip: set[int] = set()
    if windowed:  # the window must reproduce the scan's value of the unit exactly (up to float noise)
        for slot, ((_k, a_y, a_x), members) in enumerate(plan):
            for j in members:
                job = jobs[j]
                if job.value is None:
                    continue
                got = float(maps[slot, job.channel, job.y - a_y // ty, job.x - a_x // tx].detach())
                if not math.isclose(got, job.value, rel_tol=1e-3, abs_tol=1e-3):
                    skip.add(j)
                    fallback.append(j)
    for r in range(rounds):
        chosen = [(slot, members[r], key) for slot, (key, members) in enumerate(plan)
                  if r < len(members) and members[r] not in skip]
        if not chosen:
            continue
        terms = []
        for slot, j, (_k, a_y, a_x) in chosen:
            job = jobs[j]
            if spatial:
                terms.append(maps[slot, job.channel, job.y - a_y // ty, job.x - a_x // tx])
            else:
                terms.append(maps[slot, job.channel, 0, 0])  # a vector: N x C x 1 x 1
        objective = torch.stack(terms).sum()
        for m, kind in enumerate(kinds):
            last = r == rounds - 1 and m == len(kinds) - 1
            (grad,) = ac.grad(objective, x, kind, retain_graph=not last)
            if grad is None:
                grad = torch.zeros_like(x)
            views = _render_norm(grad[[slot for slot, _, _ in chosen]])
            for n, (_slot, j, (_k, a_y, a_x)) in enumerate(chosen):
                t, lft, b, rr = jobs[j].box
                cut = crop_box(views[n], (t - a_y, lft - a_x, b - a_y, rr - a_x))[0]
                yield ids[j], kind, np.repeat(cut[:, :, None], 3, axis=2)
    del maps, x


# ---------------------------------------------------------------- lazy crops for viewers (GUI, CLI)

@dataclass(frozen=True)
class RenderedCrop:
    """One rendered crop: the unit's rank-th entry, `kind` ("deconv" / "guided"), uint8 HxWx3 RGB. `written`:
    stored in the store (False when the store is read-only for us; the image is still good)."""

    layer: str
    unit: int
    rank: int
    kind: str
    image: np.ndarray
    written: bool


def _check_model(store: TopKStore, vm) -> None:
    name = store.model.get("name")
    if name and name != vm.name:
        raise DeepVisError(f"store {store.root} was scanned with model {name!r}, not {vm.name!r}; load that model "
                           "to render its crops")
    weights = store.model.get("weights")
    if weights and str(weights) != str(vm.weights):
        raise DeepVisError(f"store {store.root} was scanned with weights {weights!r}, not {vm.weights!r}")
    if int(store.input_size) != int(vm.input_size):
        raise DeepVisError(f"store {store.root} has input size {store.input_size}, the model {vm.input_size}")


def iter_render_unit(store: TopKStore, vm, layer: str, unit: int, kinds: Sequence[str] = ATTRIBUTION_KINDS, *,
                     force: bool = False, write: bool = True,
                     on_notice: Callable[[str], None] | None = None) -> Iterator[RenderedCrop]:
    """Render one unit's deconv / guided crops that the store lacks, yielding each as it is ready, and write it
    into the store atomically (temp file + rename; two viewers rendering the same unit both write whole files,
    the last one wins). Crops already stored are yielded as read (force=True renders them again).

    Uses `vm.net` read-only with hooks that act only in the calling thread, so it may run in a background thread
    while another thread runs the live forward. Abortable between yields (close the generator). `on_notice` hears
    a batch halved because memory ran out (`iter_crops`).
    """
    _check_model(store, vm)
    info = store.layer_info(layer)
    entries = store.entries(layer, unit)
    jobs, ranks = [], []
    for e in entries:
        todo = []
        for kind in kinds:
            path = store.crop_path(layer, unit, e.rank, kind)
            if not force and path.is_file():
                img = store.crop(layer, unit, e.rank, kind)
                if img is not None:
                    yield RenderedCrop(layer, unit, e.rank, kind, img, True)
                    continue
            todo.append(kind)
        if not todo:
            continue
        fitted = store.fitted(e)
        if fitted is None:  # an old store without its images: nothing to render from
            continue
        spatial = bool(info.get("spatial", True))
        jobs.append(CropJob(layer, unit, e.y if spatial else None, e.x if spatial else None, e.box, fitted,
                            e.image_id, e.value))
        ranks.append((e.rank, todo))
    if not jobs:
        return
    wanted = [k for k in ATTRIBUTION_KINDS if k in kinds]
    folder = store.crop_path(layer, unit, 0, "input").parent
    if write:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            remove_temp_files(folder, older_than_s=600)  # a viewer killed mid-write long ago
        except OSError:
            write = False
    for j, kind, img in iter_crops(vm, jobs, wanted, on_notice=on_notice):
        rank, todo = ranks[j]
        if kind not in todo:
            continue
        ok = False
        if write:
            try:
                atomic_write_png(store.crop_path(layer, unit, rank, kind), img)
                ok = True
            except OSError:
                ok = False
        yield RenderedCrop(layer, unit, rank, kind, img, ok)


def render_unit(store: TopKStore, vm, layer: str, unit: int, kinds: Sequence[str] = ATTRIBUTION_KINDS, *,
                force: bool = False, write: bool = True,
                on_notice: Callable[[str], None] | None = None) -> dict[tuple[int, str], np.ndarray]:
    """All of `iter_render_unit` at once: {(rank, kind): crop}."""
    return {(c.rank, c.kind): c.image for c in iter_render_unit(store, vm, layer, unit, kinds, force=force,
                                                                write=write, on_notice=on_notice)}

