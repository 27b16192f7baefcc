"""Dataset scan: the k images (and receptive-field patches) that excite every unit of chosen layers most.

Pass 1 streams the images through the net (DataLoader workers decode and fit; the device computes per-channel
spatial max/argmax and merges them into a running top-k, with no per-image host sync). Pass 2 revisits only
the winning images for the crops: the receptive field of the input, and deconvnet / guided-backprop images.

Under torchrun every rank scans a strided shard (image i goes to rank i % world); the per-rank top-k merge
exactly (total order: value desc, image index asc), so the store equals a single-process run. Resumable:
each rank checkpoints its running state and the images it finished (atomically) every few batches.
"""

from __future__ import annotations

import glob
import hashlib
import math
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
from ..sources import IMAGE_EXTS, fit_image
from ..sources import list_images as folder_images
from .running import EMPTY_ID, RunningTopK
from .store import (
    FORMAT,
    VERSION,
    atomic_write_json,
    atomic_write_png,
    check_target,
    crop_box,
    crop_relpath,
    layer_key,
    png_complete,
    publish,
    read_rgb,
    staging_path,
    write_layer,
)

ATTRIBUTION_KINDS = ("deconv", "guided")


# ---------------------------------------------------------------- data

def list_images(data: str | os.PathLike) -> list[str]:
    """Image paths of DATA in a deterministic order (the image index used for tie-breaking).

    A folder is searched recursively for jpg/jpeg/png/bmp/webp (any case), sorted by relative path; a text
    file lists one path per line (blank lines and `#` comments skipped; relative to the file's folder).
    """
    root = Path(data).expanduser()
    if root.is_dir():
        paths = sorted(os.path.abspath(p) for p in folder_images(root))
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


# ---------------------------------------------------------------- progress

class Progress:
    """A one-line progress bar on stderr with images/s and ETA, redrawn at most twice a second."""

    def __init__(self, total: int, label: str = "scan", enabled: bool = True, stream: Any = None,
                 unit: str = "img") -> None:
        self.total, self.label, self.enabled, self.unit = total, label, enabled, unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, n: int, force: bool = False) -> None:
        self.done += n
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < 0.5):
            return
        self._last = now
        rate = self.done / max(now - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        eta = "--:--" if math.isinf(left) else time.strftime("%H:%M:%S", time.gmtime(left))
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * 24)
        self.stream.write(f"\r{self.label} [{bar:<24}] {self.done}/{self.total} {frac:4.0%} "
                          f"{rate:7.1f} {self.unit}/s ETA {eta} ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(0, force=True)
            self.stream.write("\n")
            self.stream.flush()


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
    import io

    from .store import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- the scan

def scan(vm: Any, data: str | os.PathLike, out: str | os.PathLike, *, layers: str | Sequence[str] | None = None,
         top_k: int = 9, batch_size: int = 32, workers: int | None = None, resume: bool = False,
         attribution: Sequence[str] = ATTRIBUTION_KINDS, checkpoint_every: int = 20, progress: bool = True,
         crops: bool = True, dist: Dist | None = None,
         stop_after_batches: int | None = None) -> dict[str, Any]:
    """Scan DATA with `vm` and write the top-k store at `out`; returns the report (also in report.json).

    workers=None: decode inline on a CPU device (worker processes would steal the cores the forward uses:
    measured 0.90x vs 0.63x of bare forward speed on 2 cores), else min(8, CPUs per local process).
    crops=False skips pass 2 (entries and boxes only; a viewer can cut input crops from `TopKStore.fitted`).
    `stop_after_batches` raises KeyboardInterrupt after that many batches (for testing `resume`).
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
    check_target(out)
    chosen = resolve_layers(vm, layers)
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
        try:  # weights_only: a checkpoint never unpickles code
            ck = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
            raise DeepVisError(f"--resume: cannot read checkpoint {f} ({type(err).__name__}); "
                               "run without --resume to start over") from None
        if ck["config"] != config:
            diff = [k for k in config if ck["config"].get(k) != config[k]]
            raise DeepVisError(f"--resume: the interrupted scan in {staging} used a different {', '.join(diff)}; "
                               "run without --resume to start over")
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

    if workers is None:
        workers = 0 if vm.device.type == "cpu" else min(8, max(1, (os.cpu_count() or 1) // dist.local_world))
    todo = [i for i in np.flatnonzero(~done).tolist() if i % dist.world == dist.rank]
    loader = DataLoader(_Images(paths, todo, partial(fit_image, size=vm.preprocess.size, crop=vm.preprocess.crop)),
                        batch_size=batch_size, shuffle=False, num_workers=max(0, workers), collate_fn=_collate,
                        pin_memory=vm.device.type == "cuda", worker_init_fn=_worker_init,
                        prefetch_factor=4 if workers > 0 else None)
    bar = Progress(len(todo), "scan" if not dist.on else f"scan (rank 0 of {dist.world})",
                   enabled=progress and dist.rank == 0)
    from ..probe import Probe

    names = [name for name, _ in chosen]
    mean, inv_std = vm.preprocess.mean, vm.preprocess.inv_std
    batches = 0
    with torch.no_grad(), Probe(vm.net, names, detach=True) as probe:
        for ids, images, bad_items in loader:
            for i, err in bad_items:
                my_bad[i] = err
                my_done[i] = True
            if len(ids):
                x = images.to(vm.device, non_blocking=True).permute(0, 3, 1, 2).float()
                vm.net((x - mean) * inv_std)
                ids_dev = ids.to(vm.device, non_blocking=True)
                for name in names:
                    tops[name].update(probe[name], ids_dev)
                my_done[ids.numpy()] = True
            bar.update(len(ids) + len(bad_items))
            batches += 1
            if batches % checkpoint_every == 0:
                checkpoint()
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

    kinds = ["input"] + [k for k in ATTRIBUTION_KINDS if k in attribution] if crops else []
    boxes = {name: _boxes(vm, name, shape, merged[name]) for name, shape in chosen}
    # Pass 2 (crops) is split across ranks when they share a file system (one node); otherwise rank 0 does it.
    share = dist.local_world == dist.world
    if kinds and (share or dist.rank == 0):
        _second_pass(vm, paths, chosen, merged, boxes, staging, kinds,
                     part=(dist.rank, dist.world) if share else (0, 1), progress=progress and dist.rank == 0)
    if share:
        dist.barrier()  # every rank's crops are on disk

    report: dict[str, Any] = {}
    if dist.rank == 0:
        report = _write_store(vm, data, paths, chosen, merged, boxes, staging, out, kinds, bad, config,
                              scan_s + prior_scan_s, dist.world, resumed=bool(files))
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
    from ..receptive_field import rf_box

    cache: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for ci, ri in zip(*np.nonzero(state["ids"] != EMPTY_ID), strict=True):
        yx = (int(state["y"][ci, ri]), int(state["x"][ci, ri]))
        if yx not in cache:
            cache[yx] = tuple(int(v) for v in rf_box(vm.net, layer, yx[0], yx[1], size))  # type: ignore[assignment]
        t, lft, b, r = cache[yx]
        box[ci, ri] = (t, lft, b, r)
        padded[ci, ri] = t < 0 or lft < 0 or b > size or r > size
    return box, padded


def _second_pass(vm: Any, paths: list[str], chosen: list[tuple[str, tuple[int, ...]]],
                 merged: dict[str, dict[str, np.ndarray]], boxes: dict[str, tuple[np.ndarray, np.ndarray]],
                 staging: Path, kinds: list[str], part: tuple[int, int], progress: bool) -> None:
    """Write the crops of this rank's share of entries; each winning image is decoded once.

    Crops already on disk (from an interrupted run: files are written atomically) are kept.
    """
    by_image: dict[int, list[tuple[int, str, int, int]]] = defaultdict(list)
    n = 0
    for li, (name, _shape) in enumerate(chosen):
        ids = merged[name]["ids"]
        for ci, ri in zip(*np.nonzero(ids != EMPTY_ID), strict=True):
            if n % part[1] == part[0]:
                by_image[int(ids[ci, ri])].append((li, name, int(ci), int(ri)))
            n += 1
    for li in range(len(chosen)):
        (staging / "crops" / layer_key(li)).mkdir(parents=True, exist_ok=True)
    methods = [k for k in kinds if k != "input"]
    from concurrent.futures import Future, ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=4)  # PNG encoding releases the GIL: overlap it with the backwards
    pending: list[Future] = []

    def write(path: Path, rgb: np.ndarray) -> None:
        pending.append(pool.submit(atomic_write_png, path, rgb, fsync=False))
        if len(pending) > 512:
            for f in pending[:256]:
                f.result()
            del pending[:256]

    bar = Progress(sum(len(v) for v in by_image.values()), "crops", enabled=progress, unit="entries")
    try:
        _crops(vm, paths, chosen, merged, boxes, staging, kinds, methods, by_image, write, bar)
        for f in pending:
            f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    os.sync()  # one flush for all crops (written without per-file fsync) before the store is published


def _crops(vm: Any, paths: list[str], chosen: list[tuple[str, tuple[int, ...]]],
           merged: dict[str, dict[str, np.ndarray]], boxes: dict[str, tuple[np.ndarray, np.ndarray]],
           staging: Path, kinds: list[str], methods: list[str], by_image: dict[int, list],
           write: Callable[[Path, np.ndarray], None], bar: Progress) -> None:
    if methods:
        from ..attribution import AttributionContext, render_view
    from ..probe import Probe

    for image_id in sorted(by_image):
        todo = [(li, name, ci, ri) for li, name, ci, ri in by_image[image_id]
                if not all(png_complete(staging / crop_relpath(layer_key(li), ci, ri, k)) for k in kinds)]
        if not todo:
            bar.update(len(by_image[image_id]))
            continue
        rgb = read_rgb(paths[image_id])
        if rgb is None:  # vanished since pass 1: keep the entry, without crops
            bar.update(len(by_image[image_id]))
            continue
        fitted = vm.preprocess.fit(rgb)
        for li, name, ci, ri in todo:
            write(staging / crop_relpath(layer_key(li), ci, ri, "input"), crop_box(fitted, boxes[name][0][ci, ri])[0])
        if methods:
            _attribution_crops(vm, fitted, todo, chosen, merged, boxes, staging, methods, write,
                               AttributionContext, render_view, Probe)
        bar.update(len(by_image[image_id]))


def _attribution_crops(vm: Any, fitted: np.ndarray, todo: list[tuple[int, str, int, int]],
                       chosen: list[tuple[str, tuple[int, ...]]], merged: dict[str, dict[str, np.ndarray]],
                       boxes: dict[str, tuple[np.ndarray, np.ndarray]], staging: Path, methods: list[str],
                       write: Callable[[Path, np.ndarray], None], context: Any, render_view: Any, probe_cls: Any,
                       chunk: int = 16) -> None:
    """Deconv / guided images of many neurons of one image with one batched forward and one backward per rule.

    The image is repeated once per neuron; sample j's objective is its own neuron, and as samples are independent
    (eval mode) the gradient of the sum w.r.t. sample j is exactly neuron j's attribution.
    """
    x1 = vm.preprocess.to_tensor(fitted).detach()
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        xb = x1.expand(len(part), -1, -1, -1).clone().requires_grad_(True)
        needed = list(dict.fromkeys(name for _, name, _, _ in part))
        with torch.enable_grad(), context(vm.net) as ac, probe_cls(vm.net, needed) as probe:
            vm.net(xb)
            terms = []
            for j, (li, name, ci, ri) in enumerate(part):
                act = probe[name]
                if len(chosen[li][1]) == 3:
                    terms.append(act[j, ci, int(merged[name]["y"][ci, ri]), int(merged[name]["x"][ci, ri])])
                else:
                    terms.append(act[j, ci])
            objective = torch.stack(terms).sum()
            for m, kind in enumerate(methods):
                (grad,) = ac.grad(objective, xb, kind, retain_graph=m < len(methods) - 1)
                grad = torch.zeros_like(xb) if grad is None else grad
                for j, (li, name, ci, ri) in enumerate(part):
                    view = np.ascontiguousarray(render_view(grad[j:j + 1], "norm"))
                    write(staging / crop_relpath(layer_key(li), ci, ri, kind),
                          crop_box(view, boxes[name][0][ci, ri])[0])


def _write_store(vm: Any, data: Any, paths: list[str], chosen: list[tuple[str, tuple[int, ...]]],
                 merged: dict[str, dict[str, np.ndarray]], boxes: dict[str, tuple[np.ndarray, np.ndarray]],
                 staging: Path, out: Path, kinds: list[str], bad: dict[int, str], config: dict[str, Any],
                 scan_s: float, world: int, resumed: bool) -> dict[str, Any]:
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
              "seconds_scan": round(scan_s, 3),
              "images_per_s": round((len(paths) - n_bad) / scan_s, 2) if scan_s > 0 else None,
              "world_size": world, "resumed": resumed}
    atomic_write_json(staging / "report.json", report)
    atomic_write_json(staging / "index.json", {
        "format": FORMAT, "version": VERSION, "complete": True, "source": "scan",
        "model": {"name": vm.name, "weights": str(vm.weights)}, "input_size": vm.input_size,
        "crop": vm.preprocess.crop, "top_k": config["top_k"], "kinds": kinds, "view": "norm",
        "order": "value desc, image id asc", "num_images": len(paths), "layers": layer_index,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    publish(staging, out)
    for ck in glob.glob(str(out / "checkpoint-g*-r*.pt")):
        os.unlink(ck)
    return report
