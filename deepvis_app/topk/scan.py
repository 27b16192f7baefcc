"""Dataset scan: the k images (and receptive-field patches) that excite every unit of chosen layers most.

Pass 1 streams the images through the net up to the deepest chosen layer (DataLoader workers decode and fit;
the device computes per-channel spatial max/argmax of each layer's maps (`layouts.as_maps`: channels-first,
channels-last and token layers alike) and merges them into a running top-k, with no per-image host sync). Pass 2
stores each winning image once (the fitted SxS input; input crops are cut from it on view) and, with
`attribution`, the deconvnet / guided-backprop crops of every entry (`crops.iter_crops`: batched and windowed).
By default those are left to the viewer (`crops.render_unit`), so a scan costs about one forward pass.

Under torchrun every rank scans a strided shard (image i goes to rank i % world); the per-rank top-k merge
exactly (total order: value desc, image index asc), so the store equals a single-process run. Resumable:
each rank checkpoints its running state and the images it finished (atomically) every few batches.

Beside this module: `images` (which files, decoding, batches, progress), `distributed` (ranks), `checkpoint`
(resume state), `plan` (what pass 2 will write), `store` (the STORE format), `crops` (deconv / guided crops).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..devices import halve_batch, is_out_of_memory
from ..errors import ParamError
from ..fileio import atomic_write_json, atomic_write_png, fsync_dir, fsync_files
from ..layouts import as_maps
from ..probe import Capture
from ..values import LayerInfo
from .checkpoint import checkpoint_path, checkpoints, drop_older_generations, load_checkpoint, save_checkpoint
from .crops import ATTRIBUTION_KINDS, CropJob, iter_crops
from .distributed import Dist, init_distributed
from .images import Progress, image_batches, list_images
from .plan import format_bytes, plan_store
from .running import EMPTY_ID, RunningTopK
from .store import (
    FORMAT,
    VERSION,
    check_target,
    crop_relpath,
    image_relpath,
    kill_point,
    layer_key,
    output_lock,
    png_complete,
    publish,
    read_rgb,
    recover,
    remove_temp_files,
    staging_path,
    write_layer,
)

# Names callers imported from here before the split (commands/embed.py and benchmarks/embed.py still do).
__all__ = ["Dist", "Progress", "format_bytes", "image_batches", "init_distributed", "list_images", "resolve_layers",
           "scan"]

MAX_TOP_K = 10_000


def resolve_layers(vm: Any, layers: str | Sequence[str] | None) -> list[LayerInfo]:
    """The layers to scan, as the model knows them (layout, channels, grid): the spec's shown layers by default,
    `all`, or the names given (a string with commas or a list)."""
    if layers is None or layers == "" or layers == []:
        names = [ls.name for ls in vm.shown_layers] or [vm.default_layer]
    elif isinstance(layers, str) and layers.strip().lower() == "all":
        return list(vm.layer_info)
    else:
        names = [n.strip() for n in layers.split(",")] if isinstance(layers, str) else list(layers)
        names = [n for n in names if n]
    return [vm.info(name) for name in dict.fromkeys(names)]


# ---------------------------------------------------------------- the scan

def scan(vm: Any, data: str | os.PathLike, out: str | os.PathLike, *, layers: str | Sequence[str] | None = None,
         top_k: int = 9, batch_size: int = 32, workers: int | None = None, resume: bool = False,
         attribution: Sequence[str] = (), checkpoint_every: int = 20, progress: bool = True,
         crops: bool = True, dist: Dist | None = None, stop_after_batches: int | None = None,
         on_plan: Callable[[dict[str, Any]], None] | None = None, wait_lock: bool = False,
         on_notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Scan DATA with `vm` and write the top-k store at `out`; returns the report (also in report.json).

    attribution=() (default): deconv / guided crops are rendered lazily by viewers (`crops.render_unit`); naming
    kinds computes them for every entry now. crops=False skips pass 2 (entries and boxes only, no images).
    workers=None: decode inline on a CPU device (worker processes would steal the cores the forward uses),
    else min(8, CPUs per local process). `on_plan(plan)` sees `plan_store`'s dict before pass 2 and may raise
    DeepVisError to stop (the CLI's size confirmation). `stop_after_batches` raises KeyboardInterrupt after that
    many batches (for testing `resume`). `on_notice(text)` hears what the scan decided on its own (nothing to
    resume, an interrupted scan discarded, a batch halved because memory ran out: the store is the same); rank 0
    only. The output is locked (`STORE.lock`) for the whole run.
    Bad parameter values raise `ParamError` naming the parameter.
    """
    dist = dist or Dist()
    if top_k < 1:
        raise ParamError("top_k", f"must be at least 1, got {top_k}")
    if batch_size < 1:
        raise ParamError("batch_size", f"must be at least 1, got {batch_size}")
    bad_kinds = [k for k in attribution if k not in ATTRIBUTION_KINDS]
    if bad_kinds:
        raise ParamError("attribution", f"has an unknown kind {bad_kinds[0]!r}; use deconv, guided or none")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ParamError("out", f"{out} exists and is not a directory; choose another folder")
    if not out.parent.is_dir():
        raise ParamError("out", f"{out}: the folder {out.parent} does not exist")
    check_target(out)
    chosen = resolve_layers(vm, layers)
    if top_k > MAX_TOP_K:
        raise ParamError("top_k", f"is too large: at most {MAX_TOP_K} images per unit, got {top_k}")
    lock = output_lock(out, wait=wait_lock) if dist.rank == 0 else contextlib.nullcontext()
    notice = on_notice if on_notice is not None and dist.rank == 0 else _silent
    with lock:
        if dist.rank == 0:
            recover(out)
        return _scan_locked(vm, data, out, chosen, top_k, batch_size, workers, resume, list(attribution),
                            checkpoint_every, progress, crops, dist, stop_after_batches, on_plan, notice)


def _silent(_text: str) -> None:
    return None


def _scan_locked(vm: Any, data: Any, out: Path, chosen: list[LayerInfo], top_k: int,
                 batch_size: int, workers: int | None, resume: bool, attribution: list[str],
                 checkpoint_every: int, progress: bool, crops: bool, dist: Dist, stop_after_batches: int | None,
                 on_plan: Callable[[dict[str, Any]], None] | None,
                 notice: Callable[[str], None]) -> dict[str, Any]:
    paths = list_images(data)
    staging = staging_path(out)
    names = [info.name for info in chosen]
    config = {"files": hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest(),
              "layers": names, "top_k": top_k, "model": vm.name,
              "weights": str(vm.weights), "input_size": vm.input_size}

    # Resume state: the newest checkpoint generation holds everything done so far, spread over its rank files.
    done = np.zeros(len(paths), dtype=bool)
    tops = {info.name: RunningTopK(info.channels, top_k, vm.device) for info in chosen}
    bad: dict[int, str] = {}
    gen, files = checkpoints(staging) if resume else (-1, [])
    if resume and not files:
        notice(f"nothing to resume at {staging}; scanning from the start")
    prior_scan_s = 0.0
    for f in files:
        ck = load_checkpoint(f, config, staging)
        done |= ck["done"].numpy().astype(bool)
        bad.update(ck["bad"])
        prior_scan_s = max(prior_scan_s, float(ck.get("seconds", 0.0)))
        if dist.rank == 0:  # rank 0 carries all earlier work into the next generation
            for name in tops:
                tops[name].merge(RunningTopK.from_state(ck["states"][name], vm.device))
    if dist.rank == 0:
        if not resume and staging.exists():
            if checkpoints(staging)[1]:
                notice(f"discarding the interrupted scan in {staging} (resuming would have continued it)")
            shutil.rmtree(staging)
        (staging / "layers").mkdir(parents=True, exist_ok=True)
        remove_temp_files(staging)  # a killed run's half-written temp files never reach the store
    gen += 1
    dist.barrier()
    my_done = done.copy() if dist.rank == 0 else np.zeros_like(done)
    my_bad = dict(bad) if dist.rank == 0 else {}
    started = time.perf_counter()

    def checkpoint() -> None:
        save_checkpoint(checkpoint_path(staging, gen, dist.rank),
                        {"config": config, "done": torch.from_numpy(my_done), "bad": my_bad,
                         "seconds": prior_scan_s + time.perf_counter() - started,
                         "states": {name: t.state() for name, t in tops.items()}})

    if dist.rank == 0:
        checkpoint()  # the consolidated new generation exists before any other rank writes to it
    dist.barrier()
    if dist.rank == 0:
        drop_older_generations(staging, gen)

    todo = [i for i in np.flatnonzero(~done).tolist() if i % dist.world == dist.rank]
    loader = image_batches(vm, paths, todo, batch_size=batch_size, workers=workers, dist=dist)
    bar = Progress(len(todo), "scan" if not dist.on else f"scan (rank 0 of {dist.world})",
                   enabled=progress and dist.rank == 0)
    mean, inv_std = vm.preprocess.mean, vm.preprocess.inv_std
    batches = 0
    example = torch.zeros(1, 3, vm.input_size, vm.input_size, device=vm.device)
    fits = batch_size  # images per forward: halved when memory runs out (the top-k is the same)

    def forward(capture: Capture, ids: torch.Tensor, images: torch.Tensor) -> None:
        x = images.to(vm.device, non_blocking=True).permute(0, 3, 1, 2).float()
        capture.run((x - mean) * inv_std)
        ids_dev = ids.to(vm.device, non_blocking=True)
        for info in chosen:  # units are (channel, y, x) of the layer's maps, whatever its layout
            tops[info.name].update(as_maps(capture[info.name], info), ids_dev)

    # The forward stops once the deepest chosen layer is captured: later layers cannot change the top-k.
    with torch.no_grad(), Capture(vm.net, names, example=example, stop=True, detach=True) as capture:
        for ids, images, bad_items in loader:
            for i, err in bad_items:
                my_bad[i] = err
                my_done[i] = True
            start = 0
            while start < len(ids):
                part = slice(start, start + fits)
                # a merge makes new tensors (never in place): keeping the references keeps the state before it
                kept = {name: (top.values, top.ids, top.y, top.x) for name, top in tops.items()}
                try:
                    forward(capture, ids[part], images[part])
                except Exception as err:  # noqa: BLE001 - only running out of memory is retried
                    if not is_out_of_memory(err):
                        raise
                    for name, (values, top_ids, top_y, top_x) in kept.items():  # layers merged before it: undone
                        top = tops[name]
                        top.values, top.ids, top.y, top.x = values, top_ids, top_y, top_x
                    fits = halve_batch(err, len(ids[part]), device=vm.device, what="images", on_notice=notice)
                    continue
                start += len(ids[part])
            if len(ids):
                my_done[ids.numpy()] = True
            bar.update(len(ids) + len(bad_items))
            batches += 1
            if batches % checkpoint_every == 0:
                checkpoint()
                if batches >= 2 * checkpoint_every:
                    kill_point("pass1")
            if stop_after_batches is not None and batches >= stop_after_batches:
                checkpoint()
                raise KeyboardInterrupt
    checkpoint()
    bar.close()
    scan_s = time.perf_counter() - started

    # Exact merge of the ranks' partial results (every rank gets the same merged top-k).
    gathered = dist.all_gather({"states": {n: t.state() for n, t in tops.items()}, "bad": my_bad,
                                "done": int(my_done.sum())})
    merged = {}
    for name in names:
        top = RunningTopK.from_state(gathered[0]["states"][name])
        for part in gathered[1:]:
            top.merge(RunningTopK.from_state(part["states"][name]))
        merged[name] = {k: v.numpy() for k, v in top.state().items()}
    for part in gathered:
        bad.update(part["bad"])

    kinds = (["input"] + [k for k in ATTRIBUTION_KINDS if k in attribution]) if crops else []
    boxes = {info.name: _boxes(vm, info, merged[info.name]) for info in chosen}
    plan = plan_store(vm.input_size, names, merged, boxes, kinds, images=crops)
    if dist.rank == 0 and on_plan is not None:
        on_plan(plan)
    # Pass 2 is split across ranks when they share a file system (one node); otherwise rank 0 does it.
    share = dist.local_world == dist.world
    crops_s = 0.0
    if kinds and (share or dist.rank == 0):
        t0 = time.perf_counter()
        _second_pass(vm, paths, chosen, merged, boxes, staging, kinds,
                     part=(dist.rank, dist.world) if share else (0, 1), progress=progress and dist.rank == 0,
                     notice=notice)
        crops_s = time.perf_counter() - t0
    if share:
        dist.barrier()  # every rank's files are on disk

    report: dict[str, Any] = {}
    if dist.rank == 0:
        report = _write_store(vm, data, paths, chosen, merged, boxes, staging, out, kinds, bad, config,
                              scan_s + prior_scan_s, crops_s, dist.world, resumed=bool(files), plan=plan)
    return report


def _boxes(vm: Any, info: LayerInfo, state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Receptive-field box [C,k,4] and padded flag [C,k] of every entry (the whole image where a unit sees all of
    it: vectors, token layers, units after global pooling)."""
    size = vm.input_size
    c, k = state["ids"].shape
    box = np.zeros((c, k, 4), dtype=np.int32)
    box[..., 2:] = size
    padded = np.zeros((c, k), dtype=bool)
    if info.grid is None:
        return box, padded
    from ..receptive_field import rf_geometry

    geom = rf_geometry(vm.net, info.name, size, info)
    if geom.full:
        return box, padded
    y, x = state["y"].astype(np.int64), state["x"].astype(np.int64)
    box[..., 0] = y * geom.stride_y + geom.offset_y
    box[..., 1] = x * geom.stride_x + geom.offset_x
    box[..., 2] = box[..., 0] + geom.size_y
    box[..., 3] = box[..., 1] + geom.size_x
    box[state["ids"] == EMPTY_ID] = (0, 0, size, size)
    padded = (box[..., 0] < 0) | (box[..., 1] < 0) | (box[..., 2] > size) | (box[..., 3] > size)
    padded &= state["ids"] != EMPTY_ID
    return box, padded


def _second_pass(vm: Any, paths: list[str], chosen: list[LayerInfo],
                 merged: dict[str, dict[str, np.ndarray]], boxes: dict[str, tuple[np.ndarray, np.ndarray]],
                 staging: Path, kinds: list[str], part: tuple[int, int], progress: bool,
                 image_chunk: int = 128, notice: Callable[[str], None] = _silent) -> None:
    """Store this rank's share of the winning images (each decoded and written once) and, for eager kinds, the
    crops of this rank's share of entries. Files already complete on disk (an interrupted run) are kept.

    Files are written without a flush each (atomic renames, normal permissions) and fsync'd together, with their
    directories, before the store is published; nothing syncs the whole host.
    """
    methods = [k for k in kinds if k != "input"]
    used: list[int] = sorted({int(i) for info in chosen for i in np.unique(merged[info.name]["ids"])
                              if i != EMPTY_ID})
    (staging / "images").mkdir(parents=True, exist_ok=True)
    mine_images = [i for n, i in enumerate(used) if n % part[1] == part[0]]
    by_image: dict[int, list[tuple[int, str, int, int]]] = defaultdict(list)
    if methods:
        n = 0
        for li, info in enumerate(chosen):
            (staging / "crops" / layer_key(li)).mkdir(parents=True, exist_ok=True)
            ids = merged[info.name]["ids"]
            for ci, ri in zip(*np.nonzero(ids != EMPTY_ID), strict=True):
                if n % part[1] == part[0]:
                    by_image[int(ids[ci, ri])].append((li, info.name, int(ci), int(ri)))
                n += 1
    from concurrent.futures import Future, ThreadPoolExecutor

    written: list[Path] = []
    pool = ThreadPoolExecutor(max_workers=2)  # PNG encoding releases the GIL: overlap it with the backwards
    pending: list[Future] = []

    def write(path: Path, rgb: np.ndarray) -> None:
        written.append(path)
        pending.append(pool.submit(atomic_write_png, path, rgb, fsync=False))
        if len(pending) > 256:
            for f in pending[:128]:
                f.result()
            del pending[:128]

    todo_images = sorted(set(mine_images) | set(by_image))
    bar = Progress(len(mine_images) + sum(len(v) for v in by_image.values()), "store", enabled=progress,
                   unit="file")
    killed_once = False
    try:
        for start in range(0, len(todo_images), image_chunk):
            chunk = todo_images[start:start + image_chunk]
            fitted: dict[int, np.ndarray] = {}
            jobs: list[CropJob] = []
            targets: list[tuple[int, int, int]] = []
            for image_id in chunk:
                entries = [e for e in by_image.get(image_id, [])
                           if not all(png_complete(staging / crop_relpath(layer_key(e[0]), e[2], e[3], k))
                                      for k in methods)]
                image_path = staging / image_relpath(image_id)
                need_image = image_id in mine_images and not png_complete(image_path)
                if image_id in mine_images and not need_image:
                    bar.update(1)
                bar.update(len(by_image.get(image_id, [])) - len(entries))
                if not entries and not need_image:
                    continue
                rgb = read_rgb(paths[image_id])
                if rgb is None:  # vanished since pass 1: keep the entries, without pixels
                    bar.update(len(entries) + int(need_image))
                    continue
                img = vm.preprocess.fit(rgb)
                if need_image:
                    write(image_path, img)
                    bar.update(1)
                fitted[image_id] = img
                for li, name, ci, ri in entries:
                    spatial = chosen[li].grid is not None
                    st = merged[name]
                    jobs.append(CropJob(name, ci, int(st["y"][ci, ri]) if spatial else None,
                                        int(st["x"][ci, ri]) if spatial else None,
                                        tuple(int(v) for v in boxes[name][0][ci, ri]),  # type: ignore[arg-type]
                                        img, image_id, float(st["values"][ci, ri])))
                    targets.append((li, ci, ri))
            counted = [0] * len(jobs)
            for j, kind, crop in iter_crops(vm, jobs, methods, on_notice=notice):
                li, ci, ri = targets[j]
                write(staging / crop_relpath(layer_key(li), ci, ri, kind), crop)
                counted[j] += 1
                if counted[j] == len(methods):
                    bar.update(1)
                if not killed_once:
                    killed_once = True
                    for f in pending:
                        f.result()
                    kill_point("crops")
        for f in pending:
            f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    # Crops kept from an interrupted run were not fsync'd either: flush every file of the store's folders.
    mine = set(written)
    fsync_files([*written, *(p for d in ("images", "crops") for p in (staging / d).rglob("*.png") if p not in mine)])
    for d in [staging / "images", *((staging / "crops").glob("*") if (staging / "crops").is_dir() else [])]:
        fsync_dir(d)


def _write_store(vm: Any, data: Any, paths: list[str], chosen: list[LayerInfo],
                 merged: dict[str, dict[str, np.ndarray]], boxes: dict[str, tuple[np.ndarray, np.ndarray]],
                 staging: Path, out: Path, kinds: list[str], bad: dict[int, str], config: dict[str, Any],
                 scan_s: float, crops_s: float, world: int, resumed: bool, plan: dict[str, Any]) -> dict[str, Any]:
    used: set[int] = set()
    layer_index = []
    for li, info in enumerate(chosen):
        name = info.name
        st = merged[name]
        ids = np.where(st["ids"] == EMPTY_ID, -1, st["ids"])
        used.update(int(i) for i in np.unique(ids) if i >= 0)
        values = np.where(ids >= 0, st["values"], -np.inf).astype(np.float32)
        box, padded = boxes[name]
        write_layer(staging / "layers" / f"{layer_key(li)}.npz", values, ids, st["y"], st["x"], box, padded)
        layer_index.append({"name": name, "key": layer_key(li), "kind": info.kind, "shape": list(info.shape),
                            "channels": info.channels, "spatial": info.grid is not None,
                            "layout": info.layout.value})
    atomic_write_json(staging / "images.json", {str(i): paths[i] for i in sorted(used)})
    n_bad = len(bad)
    report = {"data": str(data), "images_total": len(paths), "images_scanned": len(paths) - n_bad,
              "bad_count": n_bad, "bad": [{"path": paths[i], "error": bad[i]} for i in sorted(bad)],
              "seconds_scan": round(scan_s, 3), "seconds_store": round(crops_s, 3),
              "images_per_s": round((len(paths) - n_bad) / scan_s, 2) if scan_s > 0 else None,
              "world_size": world, "resumed": resumed, "plan": plan}
    atomic_write_json(staging / "report.json", report)
    lazy = [k for k in ATTRIBUTION_KINDS if k not in kinds] if kinds else []
    atomic_write_json(staging / "index.json", {
        "format": FORMAT, "version": VERSION, "complete": True, "source": "scan",
        "model": {"name": vm.name, "weights": str(vm.weights)}, "input_size": vm.input_size,
        "crop": vm.preprocess.crop, "crop_pct": vm.preprocess.crop_pct,
        "interpolation": vm.preprocess.interpolation, "top_k": config["top_k"], "kinds": kinds,
        "lazy_kinds": lazy, "view": "norm",
        "order": "value desc, image id asc", "num_images": len(paths), "layers": layer_index,
        "images": "images" if kinds else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    publish(staging, out)
    return report
