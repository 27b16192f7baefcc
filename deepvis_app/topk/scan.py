"""Dataset scan: the k images (and receptive-field patches) that excite every unit of chosen layers most.

Pass 1 streams the images through the net up to the deepest chosen layer (DataLoader workers decode and fit;
the device computes per-channel spatial max/argmax and merges them into a running top-k, with no per-image host
sync). Pass 2 stores each winning image once (the fitted SxS input; input crops are cut from it on view) and,
with `attribution`, the deconvnet / guided-backprop crops of every entry (`crops.iter_crops`: batched and
windowed). By default those are left to the viewer (`crops.render_unit`), so a scan costs about one forward pass.

Under torchrun every rank scans a strided shard (image i goes to rank i % world); the per-rank top-k merge
exactly (total order: value desc, image index asc), so the store equals a single-process run. Resumable:
each rank checkpoints its running state and the images it finished (atomically) every few batches.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DeepVisError
from ..fileio import atomic_write_bytes, atomic_write_json, atomic_write_png, fsync_dir, fsync_files
from ..sources import IMAGE_EXTS, fit_image
from ..sources import list_images as folder_images
from .crops import ATTRIBUTION_KINDS, CropJob, Tap, iter_crops
from .running import EMPTY_ID, RunningTopK
from .store import (
    FORMAT,
    VERSION,
    _kill_point,
    check_target,
    crop_relpath,
    image_relpath,
    is_store_dir,
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

# ---------------------------------------------------------------- data

def list_images(data: str | os.PathLike) -> list[str]:
    """Image paths of DATA in a deterministic order (the image index used for tie-breaking).

    A folder is searched recursively for jpg/jpeg/png/bmp/webp (any case), sorted by relative path; a text
    file lists one path per line (blank lines and `#` comments skipped; relative to the file's folder).
    """
    root = Path(data).expanduser()
    if root.is_dir():
        cache: dict[Path, bool] = {}
        paths = sorted(os.path.abspath(p) for p in folder_images(root) if not _in_store(p, root, cache))
        if not paths:
            raise DeepVisError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) found under {root}")
        return paths
    if root.is_file():
        try:
            lines = root.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DeepVisError(f"{root}: cannot read the image list ({err})") from None
        paths = []
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line).expanduser()
                paths.append(os.path.abspath(p if p.is_absolute() else root.parent / p))
        if not paths:
            raise DeepVisError(f"{root}: the image list is empty")
        return paths
    raise DeepVisError(f"DATA not found: {root} (give a folder of images or a text file listing image paths)")


def _in_store(path: Path, root: Path, cache: dict[Path, bool]) -> bool:
    """Whether `path` lies in a top-k store (or its staging / stranded copy) below `root`: a scan must never
    read its own output (`deepvis scan photos --out photos/topk`). `cache`: verdict per folder."""
    for parent in path.parents:
        if parent == root or root not in parent.parents:
            return False
        if parent not in cache:
            cache[parent] = is_store_dir(parent)
        if cache[parent]:
            return True
    return False


class _Images(Dataset):
    """(image id, fitted uint8 SxSx3 or None, error text) for each id; never raises for a bad file."""

    def __init__(self, paths: Sequence[str], ids: Sequence[int], fit: Callable[[np.ndarray], np.ndarray]) -> None:
        self.paths, self.ids, self.fit = paths, list(ids), fit

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str]:
        image_id = self.ids[i]
        path = self.paths[image_id]
        if not os.path.isfile(path):
            return image_id, None, "missing or not a file"
        try:
            rgb = read_rgb(path)
            if rgb is None:
                return image_id, None, "not a decodable image"
            return image_id, self.fit(rgb), ""
        except Exception as err:  # noqa: BLE001 - one bad file must never stop the scan
            return image_id, None, f"{type(err).__name__}: {err}"


def _collate(batch: list[tuple[int, np.ndarray | None, str]]) -> tuple[torch.Tensor, torch.Tensor, list]:
    good = [(i, img) for i, img, _ in batch if img is not None]
    bad = [(i, err) for i, img, err in batch if img is None]
    ids = torch.tensor([i for i, _ in good], dtype=torch.int64)
    images = torch.from_numpy(np.stack([img for _, img in good])) if good else torch.empty(0, dtype=torch.uint8)
    return ids, images, bad


def _worker_init(_worker_id: int) -> None:
    # No cv2.setNumThreads here: after fork it can deadlock on the parent's OpenCV thread pool.
    torch.set_num_threads(1)


def image_batches(vm: Any, paths: Sequence[str], ids: Sequence[int], *, batch_size: int, workers: int | None,
                  dist: Dist) -> DataLoader:
    """Batches (ids, fitted uint8 images, [(id, why)] of unreadable files) over `ids`, for a pass over a dataset
    (scan, embed): the model's own fit, in order; loader processes only on a GPU by default (on the CPU the
    forward needs every core), one torch thread each. A bad file never stops the pass."""
    if workers is None:
        workers = 0 if vm.device.type == "cpu" else min(8, max(1, (os.cpu_count() or 1) // dist.local_world))
    fit = partial(fit_image, size=vm.preprocess.size, crop=vm.preprocess.crop)
    return DataLoader(_Images(paths, ids, fit), batch_size=batch_size, shuffle=False, num_workers=max(0, workers),
                      collate_fn=_collate, pin_memory=vm.device.type == "cuda", worker_init_fn=_worker_init,
                      prefetch_factor=4 if workers > 0 else None)


# ---------------------------------------------------------------- progress

class Progress:
    """Progress on stderr (tqdm: count, rate, ETA), silent when disabled (`--quiet`, ranks other than 0)."""

    def __init__(self, total: int, label: str = "scan", enabled: bool = True, stream: Any = None,
                 unit: str = "img") -> None:
        from tqdm import tqdm

        self.done = 0
        self._bar = tqdm(total=total, desc=label, unit=unit, disable=not enabled, file=stream or sys.stderr,
                         dynamic_ncols=True, mininterval=0.5, leave=True)

    def update(self, n: int, force: bool = False) -> None:
        self.done += n
        self._bar.update(n)
        if force:
            self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


# ---------------------------------------------------------------- distributed

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    initialized_here: bool = False

    @property
    def on(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.on:
            torch.distributed.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        if not self.on:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.initialized_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_distributed(device_spec: str) -> tuple[Dist, str]:
    """Join the torchrun process group when launched by torchrun; returns the rank info and device to use.

    GPUs: one per local rank (`cuda:LOCAL_RANK`, NCCL). CPU processes: gloo, CPU threads split among them.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_spec
    import torch.distributed as dist

    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    from ..devices import resolve_device

    use_cuda = resolve_device(device_spec).type == "cuda"  # also rejects cuda on a machine without it
    if use_cuda:
        device_spec = f"cuda:{local_rank % torch.cuda.device_count()}"
        torch.cuda.set_device(torch.device(device_spec))
    else:
        device_spec = "cpu"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    here = not dist.is_initialized()
    if here:
        from datetime import timedelta

        # Long timeout: ranks wait at the merge while others finish their shard or their crops.
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(hours=6))
    return Dist(rank, world, local_rank, local_world, here), device_spec


# ---------------------------------------------------------------- layers

def resolve_layers(vm: Any, layers: str | Sequence[str] | None) -> list[tuple[str, tuple[int, ...]]]:
    """(name, activation shape) of the layers to scan: the spec's shown layers by default, or `all`."""
    if layers is None or layers == "" or layers == []:
        names = [ls.name for ls in vm.shown_layers] or [vm.default_layer]
    elif isinstance(layers, str) and layers.strip().lower() == "all":
        return [(i.name, tuple(i.shape)) for i in vm.layer_info if len(i.shape) in (1, 3)]
    else:
        names = [n.strip() for n in layers.split(",")] if isinstance(layers, str) else list(layers)
        names = [n for n in names if n]
    out = []
    for name in dict.fromkeys(names):
        shape = tuple(vm.info(name).shape)
        if len(shape) not in (1, 3):
            raise DeepVisError(f"layer {name!r} has activation shape {shape}; scan needs (C,H,W) or (C,)")
        out.append((name, shape))
    return out


# ---------------------------------------------------------------- checkpoints

def _checkpoints(staging: Path) -> tuple[int, list[Path]]:
    """The newest checkpoint generation in `staging` and its per-rank files."""
    found: dict[int, list[Path]] = defaultdict(list)
    for p in glob.glob(str(staging / "checkpoint-g*-r*.pt")):
        name = Path(p).name
        try:
            gen = int(name.split("-")[1][1:])
        except (IndexError, ValueError):
            continue
        found[gen].append(Path(p))
    if not found:
        return -1, []
    gen = max(found)
    return gen, sorted(found[gen])


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path, config: dict[str, Any], staging: Path) -> dict[str, Any]:
    try:  # weights_only: a checkpoint never unpickles code
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise DeepVisError(f"--resume: cannot read checkpoint {path} ({type(err).__name__}); "
                           "run without --resume to start over") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("config"), dict) or "states" not in ck:
        raise DeepVisError(f"--resume: checkpoint {path} lacks its configuration; run without --resume to "
                           "start over")
    if ck["config"] != config:
        diff = [k for k in config if ck["config"].get(k) != config[k]]
        raise DeepVisError(f"--resume: the interrupted scan in {staging} used a different {', '.join(diff)}; "
                           "run without --resume to start over")
    return ck


# ---------------------------------------------------------------- the plan (printed before pass 2)

PNG_IMAGE_RATIO = 0.6   # PNG (compression 1) of a photo: ~60% of the raw RGB bytes (measured on skimage photos)
PNG_CROP_RATIO = 0.35   # of a norm-view attribution crop (mostly dark, one channel repeated)


def plan_store(size: int, chosen: list[tuple[str, tuple[int, ...]]], merged: dict[str, dict[str, np.ndarray]],
               boxes: dict[str, tuple[np.ndarray, np.ndarray]], kinds: list[str], images: bool) -> dict[str, Any]:
    """What pass 2 will write: entries, images stored, crop files, and an estimate of the store's bytes."""
    entries, crop_px, used = 0, 0, set()
    eager = [k for k in kinds if k != "input"]
    for name, _shape in chosen:
        ids = merged[name]["ids"]
        filled = ids != EMPTY_ID
        entries += int(filled.sum())
        used.update(np.unique(ids[filled]).tolist())
        if eager:
            b = boxes[name][0][filled]
            crop_px += int(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum())
    n_images = len(used) if images else 0
    image_bytes = n_images * size * size * 3 * PNG_IMAGE_RATIO
    crop_bytes = crop_px * 3 * PNG_CROP_RATIO * len(eager)
    layer_bytes = sum(merged[n]["ids"].size * 40 for n, _ in chosen)
    return {"entries": entries, "images": n_images, "crop_files": entries * len(eager), "eager_kinds": eager,
            "estimated_bytes": int(image_bytes + crop_bytes + layer_bytes + 4096 + 64 * n_images)}


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ---------------------------------------------------------------- the scan

def scan(vm: Any, data: str | os.PathLike, out: str | os.PathLike, *, layers: str | Sequence[str] | None = None,
         top_k: int = 9, batch_size: int = 32, workers: int | None = None, resume: bool = False,
         attribution: Sequence[str] = (), checkpoint_every: int = 20, progress: bool = True,
         crops: bool = True, dist: Dist | None = None, stop_after_batches: int | None = None,
         on_plan: Callable[[dict[str, Any]], None] | None = None, wait_lock: bool = False) -> dict[str, Any]:
    """Scan DATA with `vm` and write the top-k store at `out`; returns the report (also in report.json).

    attribution=() (default): deconv / guided crops are rendered lazily by viewers (`crops.render_unit`); naming
    kinds computes them for every entry now. crops=False skips pass 2 (entries and boxes only, no images).
    workers=None: decode inline on a CPU device (worker processes would steal the cores the forward uses),
    else min(8, CPUs per local process). `on_plan(plan)` sees `plan_store`'s dict before pass 2 and may raise
    DeepVisError to stop (the CLI's size confirmation). `stop_after_batches` raises KeyboardInterrupt after that
    many batches (for testing `resume`). The output is locked (`STORE.lock`) for the whole run.
    """
    dist = dist or Dist()
    if top_k < 1:
        raise DeepVisError("--top-k must be at least 1")
    if batch_size < 1:
        raise DeepVisError("--batch-size must be at least 1")
    bad_kinds = [k for k in attribution if k not in ATTRIBUTION_KINDS]
    if bad_kinds:
        raise DeepVisError(f"unknown attribution {bad_kinds[0]!r}; use deconv, guided or none")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DeepVisError(f"--out {out} exists and is not a directory; choose another --out")
    if not out.parent.is_dir():
        raise DeepVisError(f"--out {out}: the folder {out.parent} does not exist")
    check_target(out)
    chosen = resolve_layers(vm, layers)
    if top_k > 10_000:
        raise DeepVisError(f"--top-k {top_k} is too large (at most 10000 images per unit)")
    lock = output_lock(out, wait=wait_lock) if dist.rank == 0 else _nolock()
    with lock:
        if dist.rank == 0:
            recover(out)
        return _scan_locked(vm, data, out, chosen, top_k, batch_size, workers, resume, list(attribution),
                            checkpoint_every, progress, crops, dist, stop_after_batches, on_plan)


class _nolock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _scan_locked(vm: Any, data: Any, out: Path, chosen: list[tuple[str, tuple[int, ...]]], top_k: int,
                 batch_size: int, workers: int | None, resume: bool, attribution: list[str],
                 checkpoint_every: int, progress: bool, crops: bool, dist: Dist, stop_after_batches: int | None,
                 on_plan: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    paths = list_images(data)
    staging = staging_path(out)
    config = {"files": hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest(),
              "layers": [name for name, _ in chosen], "top_k": top_k, "model": vm.name,
              "weights": str(vm.weights), "input_size": vm.input_size}

    # Resume state: the newest checkpoint generation holds everything done so far, spread over its rank files.
    done = np.zeros(len(paths), dtype=bool)
    tops = {name: RunningTopK(shape[0], top_k, vm.device) for name, shape in chosen}
    bad: dict[int, str] = {}
    gen, files = _checkpoints(staging) if resume else (-1, [])
    if resume and not files and dist.rank == 0:
        print(f"deepvis: nothing to resume at {staging}; scanning from the start", file=sys.stderr)
    prior_scan_s = 0.0
    for f in files:
        ck = _load_checkpoint(f, config, staging)
        done |= ck["done"].numpy().astype(bool)
        bad.update(ck["bad"])
        prior_scan_s = max(prior_scan_s, float(ck.get("seconds", 0.0)))
        if dist.rank == 0:  # rank 0 carries all earlier work into the next generation
            for name in tops:
                tops[name].merge(RunningTopK.from_state(ck["states"][name], vm.device))
    if dist.rank == 0:
        if not resume and staging.exists():
            if _checkpoints(staging)[1]:
                print(f"deepvis: discarding the interrupted scan in {staging} (use --resume to continue it)",
                      file=sys.stderr)
            import shutil

            shutil.rmtree(staging)
        (staging / "layers").mkdir(parents=True, exist_ok=True)
        remove_temp_files(staging)  # a killed run's half-written temp files never reach the store
    gen += 1
    dist.barrier()
    my_done = done.copy() if dist.rank == 0 else np.zeros_like(done)
    my_bad = dict(bad) if dist.rank == 0 else {}
    started = time.perf_counter()

    def checkpoint() -> None:
        _save_checkpoint(staging / f"checkpoint-g{gen}-r{dist.rank}.pt",
                         {"config": config, "done": torch.from_numpy(my_done), "bad": my_bad,
                          "seconds": prior_scan_s + time.perf_counter() - started,
                          "states": {name: t.state() for name, t in tops.items()}})

    if dist.rank == 0:
        checkpoint()  # the consolidated new generation exists before any other rank writes to it
    dist.barrier()
    if dist.rank == 0:
        for old in glob.glob(str(staging / "checkpoint-g*-r*.pt")):
            if not Path(old).name.startswith(f"checkpoint-g{gen}-"):
                os.unlink(old)

    todo = [i for i in np.flatnonzero(~done).tolist() if i % dist.world == dist.rank]
    loader = image_batches(vm, paths, todo, batch_size=batch_size, workers=workers, dist=dist)
    bar = Progress(len(todo), "scan" if not dist.on else f"scan (rank 0 of {dist.world})",
                   enabled=progress and dist.rank == 0)
    names = [name for name, _ in chosen]
    mean, inv_std = vm.preprocess.mean, vm.preprocess.inv_std
    batches = 0
    example = torch.zeros(1, 3, vm.input_size, vm.input_size, device=vm.device)
    # The forward stops once the deepest chosen layer is captured: later layers cannot change the top-k.
    with torch.no_grad(), Tap(vm.net, names, example, detach=True) as tap:
        for ids, images, bad_items in loader:
            for i, err in bad_items:
                my_bad[i] = err
                my_done[i] = True
            if len(ids):
                x = images.to(vm.device, non_blocking=True).permute(0, 3, 1, 2).float()
                acts = tap.run((x - mean) * inv_std)
                ids_dev = ids.to(vm.device, non_blocking=True)
                for name in names:
                    tops[name].update(acts[name], ids_dev)
                my_done[ids.numpy()] = True
            bar.update(len(ids) + len(bad_items))
            batches += 1
            if batches % checkpoint_every == 0:
                checkpoint()
                if batches >= 2 * checkpoint_every:
                    _kill_point("pass1")
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
    boxes = {name: _boxes(vm, name, shape, merged[name]) for name, shape in chosen}
    plan = plan_store(vm.input_size, chosen, merged, boxes, kinds, images=crops)
    if dist.rank == 0 and on_plan is not None:
        on_plan(plan)
    # Pass 2 is split across ranks when they share a file system (one node); otherwise rank 0 does it.
    share = dist.local_world == dist.world
    crops_s = 0.0
    if kinds and (share or dist.rank == 0):
        t0 = time.perf_counter()
        _second_pass(vm, paths, chosen, merged, boxes, staging, kinds,
                     part=(dist.rank, dist.world) if share else (0, 1), progress=progress and dist.rank == 0)
        crops_s = time.perf_counter() - t0
    if share:
        dist.barrier()  # every rank's files are on disk

    report: dict[str, Any] = {}
    if dist.rank == 0:
        report = _write_store(vm, data, paths, chosen, merged, boxes, staging, out, kinds, bad, config,
                              scan_s + prior_scan_s, crops_s, dist.world, resumed=bool(files), plan=plan)
    return report


def _boxes(vm: Any, layer: str, shape: tuple[int, ...], state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Receptive-field box [C,k,4] and padded flag [C,k] of every entry (whole image for (C,) layers)."""
    size = vm.input_size
    c, k = state["ids"].shape
    box = np.zeros((c, k, 4), dtype=np.int32)
    box[..., 2:] = size
    padded = np.zeros((c, k), dtype=bool)
    if len(shape) != 3:
        return box, padded
    from ..receptive_field import rf_geometry

    geom = rf_geometry(vm.net, layer, size)
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


def _second_pass(vm: Any, paths: list[str], chosen: list[tuple[str, tuple[int, ...]]],
                 merged: dict[str, dict[str, np.ndarray]], boxes: dict[str, tuple[np.ndarray, np.ndarray]],
                 staging: Path, kinds: list[str], part: tuple[int, int], progress: bool,
                 image_chunk: int = 128) -> None:
    """Store this rank's share of the winning images (each decoded and written once) and, for eager kinds, the
    crops of this rank's share of entries. Files already complete on disk (an interrupted run) are kept.

    Files are written without a flush each (atomic renames, normal permissions) and fsync'd together, with their
    directories, before the store is published; nothing syncs the whole host.
    """
    methods = [k for k in kinds if k != "input"]
    used: list[int] = sorted({int(i) for name, _ in chosen for i in np.unique(merged[name]["ids"])
                              if i != EMPTY_ID})
    (staging / "images").mkdir(parents=True, exist_ok=True)
    mine_images = [i for n, i in enumerate(used) if n % part[1] == part[0]]
    by_image: dict[int, list[tuple[int, str, int, int]]] = defaultdict(list)
    if methods:
        n = 0
        for li, (name, _shape) in enumerate(chosen):
            (staging / "crops" / layer_key(li)).mkdir(parents=True, exist_ok=True)
            ids = merged[name]["ids"]
            for ci, ri in zip(*np.nonzero(ids != EMPTY_ID), strict=True):
                if n % part[1] == part[0]:
                    by_image[int(ids[ci, ri])].append((li, name, int(ci), int(ri)))
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
                    spatial = len(chosen[li][1]) == 3
                    st = merged[name]
                    jobs.append(CropJob(name, ci, int(st["y"][ci, ri]) if spatial else None,
                                        int(st["x"][ci, ri]) if spatial else None,
                                        tuple(int(v) for v in boxes[name][0][ci, ri]),  # type: ignore[arg-type]
                                        img, image_id, float(st["values"][ci, ri])))
                    targets.append((li, ci, ri))
            counted = [0] * len(jobs)
            for j, kind, crop in iter_crops(vm, jobs, methods):
                li, ci, ri = targets[j]
                write(staging / crop_relpath(layer_key(li), ci, ri, kind), crop)
                counted[j] += 1
                if counted[j] == len(methods):
                    bar.update(1)
                if not killed_once:
                    killed_once = True
                    for f in pending:
                        f.result()
                    _kill_point("crops")
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


def _write_store(vm: Any, data: Any, paths: list[str], chosen: list[tuple[str, tuple[int, ...]]],
                 merged: dict[str, dict[str, np.ndarray]], boxes: dict[str, tuple[np.ndarray, np.ndarray]],
                 staging: Path, out: Path, kinds: list[str], bad: dict[int, str], config: dict[str, Any],
                 scan_s: float, crops_s: float, world: int, resumed: bool, plan: dict[str, Any]) -> dict[str, Any]:
    used: set[int] = set()
    layer_index = []
    for li, (name, shape) in enumerate(chosen):
        st = merged[name]
        ids = np.where(st["ids"] == EMPTY_ID, -1, st["ids"])
        used.update(int(i) for i in np.unique(ids) if i >= 0)
        values = np.where(ids >= 0, st["values"], -np.inf).astype(np.float32)
        box, padded = boxes[name]
        write_layer(staging / "layers" / f"{layer_key(li)}.npz", values, ids, st["y"], st["x"], box, padded)
        info = vm.info(name)
        layer_index.append({"name": name, "key": layer_key(li), "kind": info.kind, "shape": list(shape),
                            "channels": shape[0], "spatial": len(shape) == 3})
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
        "crop": vm.preprocess.crop, "top_k": config["top_k"], "kinds": kinds, "lazy_kinds": lazy, "view": "norm",
        "order": "value desc, image id asc", "num_images": len(paths), "layers": layer_index,
        "images": "images" if kinds else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    publish(staging, out)
    return report
