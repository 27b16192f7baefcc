"""`deepvis scan` against the bare batched forward, and the crop engines old vs new, side by side in one run.

    .venv/bin/python benchmarks/scan.py [--images 400] [--eager-images 36] [--eager-image-step 6]

Prints one JSON object:
* "default_scan": the whole default `scan()` call (list, decode, pass 1 up to the deepest layer, boxes, pass 2
  storing each winning image once, publish) vs "bare" = a batched forward of the whole net over the same images,
  pre-decoded and in memory (the ceiling). Interleaved repeats, so both see the same machine load.
* "eager_crops": deconv + guided crops of the same entries (the issue's case: 36 photos, k = 5; the entries of
  every `--eager-image-step`-th image, all their units) by the old pass (per image, 16 copies of the image
  through the whole net, two backwards, one render per entry, input + deconv + guided PNGs; copied here as it
  was, minus its os.sync(), on the attribution module of that revision read from git) and the new one
  (`topk.crops.iter_crops`: forward stops at the layer, windows where exact, shared forwards, channels-last;
  deconv + guided PNGs, fsync'd). Wall and process CPU seconds; the crops are compared (max grey-level
  difference).
* "lazy_render": seconds for the first view of one unit's k = 9 crops of both kinds (`render_unit`, written into
  the store), over a few units of each layer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepvis_app.topk import TopKStore, crop_box  # noqa: E402
from deepvis_app.topk.crops import CropJob, iter_crops, render_unit  # noqa: E402
from deepvis_app.topk.images import list_images  # noqa: E402
from deepvis_app.topk.scan import scan  # noqa: E402
from deepvis_app.zoo import load_model  # noqa: E402

LAYERS = "_blocks.5._bn1,_blocks.11._expand_conv"


def make_images(folder: Path, n: int, seed: int = 0) -> None:
    """n distinct photos: random crops (and flips) of the four scikit-image photos, 320x320 JPEG."""
    rng = np.random.default_rng(seed)
    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        s = int(rng.integers(min(h, w) // 2, min(h, w)))
        top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = img[top:top + s, left:left + s]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = cv2.resize(np.ascontiguousarray(crop), (320, 320), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"img{i:05d}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))


THEN = "d8def8a^"  # the revision the issue measured: the eager crop pass before the lazy crops


def attribution_then():
    """deepvis_app/attribution.py as it was at THEN, read from git and loaded beside today's (same package, so
    its relative imports resolve): the old crop pass runs on the old backward, not on today's faster one."""
    import importlib.util
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        source = subprocess.run(["git", "show", f"{THEN}:deepvis_app/attribution.py"], cwd=root, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"benchmarks/scan.py: the old crop pass needs git history (revision {THEN}): {exc}")
    spec = importlib.util.spec_from_loader("deepvis_app._attribution_then", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "deepvis_app"
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"{THEN}:deepvis_app/attribution.py", "exec"), module.__dict__)
    return module


def old_engine(vm, jobs: list[CropJob], kinds: tuple[str, ...], write=None) -> dict[tuple[int, str], np.ndarray]:
    """The crop pass as it was (deepvis_app/topk/scan.py before the lazy crops): per image, the image repeated
    up to 16 times through the whole net, one backward per rule, one render per entry; `write(i, kind, crop)`
    receives the input crop and both attribution crops of every entry, as the old pass wrote them. It runs on
    the attribution code of that revision (`attribution_then`)."""
    from deepvis_app.probe import Probe

    then = attribution_then()
    AttributionContext, render_view = then.AttributionContext, then.render_view

    out = {}
    by_image: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        by_image.setdefault(job.image_key, []).append(i)
    for _key, idx in sorted(by_image.items()):
        x1 = vm.preprocess.to_tensor(jobs[idx[0]].image).detach()
        if write is not None:
            for i in idx:
                write(i, "input", crop_box(jobs[i].image, jobs[i].box)[0])
        for start in range(0, len(idx), 16):
            part = idx[start:start + 16]
            xb = x1.expand(len(part), -1, -1, -1).clone().requires_grad_(True)
            needed = list(dict.fromkeys(jobs[i].layer for i in part))
            with torch.enable_grad(), AttributionContext(vm.net) as ac, Probe(vm.net, needed) as probe:
                vm.net(xb)
                terms = []
                for j, i in enumerate(part):
                    job, act = jobs[i], probe[jobs[i].layer]
                    terms.append(act[j, job.channel, job.y, job.x] if job.y is not None else act[j, job.channel])
                objective = torch.stack(terms).sum()
                for m, kind in enumerate(kinds):
                    (grad,) = ac.grad(objective, xb, kind, retain_graph=m < len(kinds) - 1)
                    grad = torch.zeros_like(xb) if grad is None else grad
                    for j, i in enumerate(part):
                        view = np.ascontiguousarray(render_view(grad[j:j + 1], "norm"))
                        out[(i, kind)] = crop_box(view, jobs[i].box)[0]
                        if write is not None:
                            write(i, kind, out[(i, kind)])
    return out


class Writer:
    """PNG files through a thread pool without per-file fsync, as both crop passes write them."""

    def __init__(self, folder: Path, threads: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.folder, self.pool, self.pending, self.paths = folder, ThreadPoolExecutor(threads), [], []
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, i: int, kind: str, rgb: np.ndarray) -> None:
        from deepvis_app.fileio import atomic_write_png

        path = self.folder / f"e{i:06d}_{kind}.png"
        self.paths.append(path)
        self.pending.append(self.pool.submit(atomic_write_png, path, rgb, fsync=False))

    def close(self) -> None:
        for f in self.pending:
            f.result()
        self.pool.shutdown()


def timed(fn) -> tuple[float, float]:
    """(wall s, process CPU s): on a shared machine the CPU time is the steadier figure."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--top-k", type=int, default=9)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--eager-images", type=int, default=36)
    p.add_argument("--eager-top-k", type=int, default=5)
    p.add_argument("--eager-image-step", type=int, default=6, help="time the entries of every N-th image")
    p.add_argument("--skip-eager", action="store_true")
    args = p.parse_args()
    from deepvis_app.devices import keep_freed_memory

    malloc = keep_freed_memory()  # what `deepvis` runs with (DEEPVIS_MALLOC=system: glibc's defaults)

    vm = load_model(args.model, weights="default", device=args.device)
    result: dict[str, object] = {"malloc": malloc, "model": vm.name, "device": str(vm.device),
                                 "torch_threads": torch.get_num_threads(),
                                 "layers": LAYERS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        data.mkdir()
        make_images(data, args.images)
        paths = list_images(data)
        batch = torch.from_numpy(np.stack([vm.preprocess.fit(cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB))
                                           for p in paths]))

        def bare_run() -> float:
            t0 = time.perf_counter()
            with torch.no_grad():
                for i in range(0, len(batch), args.batch_size):
                    x = batch[i:i + args.batch_size].permute(0, 3, 1, 2).float()
                    vm.net((x - vm.preprocess.mean) * vm.preprocess.inv_std)
            return time.perf_counter() - t0

        def scan_run(i: int) -> tuple[float, dict]:
            t0 = time.perf_counter()
            report = scan(vm, data, tmp / f"store{i}", layers=LAYERS, top_k=args.top_k, batch_size=args.batch_size,
                          progress=False)
            return time.perf_counter() - t0, report

        bare_run()  # warm-up (and the RF geometry / call counts caches for the scan)
        scan_run(-1)
        bare_s, scan_s, reports = [], [], []
        for i in range(args.repeats):
            bare_s.append(bare_run())
            t, rep = scan_run(i)
            scan_s.append(t)
            reports.append(rep)
        store_bytes = sum(f.stat().st_size for f in (tmp / "store0").rglob("*") if f.is_file())
        result["default_scan"] = {
            "images": len(paths), "top_k": args.top_k, "batch_size": args.batch_size,
            "bare_forward_s": [round(t, 2) for t in bare_s], "scan_command_s": [round(t, 2) for t in scan_s],
            "scan_vs_bare": round(sum(scan_s) / sum(bare_s), 3),
            "pass1_s": [r["seconds_scan"] for r in reports], "store_pass_s": [r["seconds_store"] for r in reports],
            "entries": reports[0]["plan"]["entries"], "images_stored": reports[0]["plan"]["images"],
            "store_bytes": store_bytes, "estimated_bytes": reports[0]["plan"]["estimated_bytes"]}

        # lazy: first view of one unit (9 entries x deconv + guided), written into the store
        store = TopKStore.open(tmp / "store0")
        times = {}
        for layer in store.layers:
            ts = []
            for unit in (0, 17, 33):
                t0 = time.perf_counter()
                got = render_unit(store, vm, layer, unit)
                ts.append(time.perf_counter() - t0)
                assert len(got) == 2 * len(store.entries(layer, unit))
            times[layer] = [round(t, 3) for t in ts]
        result["lazy_render"] = {"crops_per_unit": 2 * args.top_k, "seconds": times}

        if not args.skip_eager:
            edata = tmp / "edata"
            edata.mkdir()
            make_images(edata, args.eager_images, seed=1)
            t0 = time.perf_counter()
            scan(vm, edata, tmp / "estore", layers=LAYERS, top_k=args.eager_top_k, progress=False)
            pass1_total = time.perf_counter() - t0
            es = TopKStore.open(tmp / "estore")
            fitted: dict[int, np.ndarray] = {}
            jobs, all_entries = [], 0
            for layer in es.layers:
                spatial = es.layer_info(layer)["spatial"]
                for unit in range(es.channels(layer)):
                    for e in es.entries(layer, unit):
                        all_entries += 1
                        if e.image_id % args.eager_image_step:  # a sample of images, with all their entries
                            continue
                        if e.image_id not in fitted:
                            fitted[e.image_id] = es.fitted(e)
                        jobs.append(CropJob(layer, unit, e.y if spatial else None, e.x if spatial else None, e.box,
                                            fitted[e.image_id], e.image_id, e.value))
            kinds = ("deconv", "guided")
            old: dict = {}
            new: dict = {}

            def run_old() -> None:
                w = Writer(tmp / "old_crops", 4)
                old.update(old_engine(vm, jobs, kinds, w))
                w.close()

            def run_new() -> None:
                from deepvis_app.fileio import fsync_files

                w = Writer(tmp / "new_crops", 2)
                for i, k, c in iter_crops(vm, jobs, kinds):
                    new[(i, k)] = c
                    w(i, k, c)
                w.close()
                fsync_files(w.paths)

            new_wall, new_cpu = timed(run_new)
            old_wall, old_cpu = timed(run_old)
            diff = max(int(np.abs(old[key].astype(int) - new[key].astype(int)).max()) if old[key].size else 0
                       for key in old)
            by_layer = {layer: sum(j.layer == layer for j in jobs) for layer in es.layers}
            result["eager_crops"] = {
                "images": args.eager_images, "top_k": args.eager_top_k,
                "images_timed": len(fitted), "entries_timed": len(jobs), "entries_timed_per_layer": by_layer,
                "entries_total": all_entries,
                "old_wall_s": round(old_wall, 2), "new_wall_s": round(new_wall, 2),
                "old_cpu_s": round(old_cpu, 2), "new_cpu_s": round(new_cpu, 2),
                "speedup_wall": round(old_wall / new_wall, 2), "speedup_cpu": round(old_cpu / new_cpu, 2),
                "max_grey_level_difference": diff,
                "default_scan_s_now": round(pass1_total, 2),
                "old_default_scan_s_estimated": round(pass1_total + all_entries * old_wall / len(jobs), 1)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
