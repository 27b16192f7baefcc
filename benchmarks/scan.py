"""`deepvis scan` against the bare batched forward, and the crop engines old vs new, side by side in one run.

    .venv/bin/python benchmarks/scan.py [--images 400] [--eager-images 36] [--eager-unit-step 8]

Prints one JSON object:
* "default_scan": the whole default `scan()` call (list, decode, pass 1 up to the deepest layer, boxes, pass 2
  storing each winning image once, publish) vs "bare" = a batched forward of the whole net over the same images,
  pre-decoded and in memory (the ceiling). Interleaved repeats, so both see the same machine load.
* "eager_crops": deconv + guided crops of the same entries (the issue's case: 36 photos, k = 5; every
  `--eager-unit-step`-th unit of each layer to keep the old engine's run short) by the old engine (per image,
  16 copies of the image through the whole net, two backwards, one render per entry; copied here as it was) and
  by `topk.crops.iter_crops` (forward stops at the layer, windows where exact, shared forwards, channels-last).
  PNG writing is excluded from both; the crops are compared (max grey-level difference).
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
from deepvis_app.topk.scan import list_images, scan  # noqa: E402
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


def old_engine(vm, jobs: list[CropJob], kinds: tuple[str, ...]) -> dict[tuple[int, str], np.ndarray]:
    """The crop pass as it was (deepvis_app/topk/scan.py before the lazy crops), minus the PNG writes."""
    from deepvis_app.attribution import AttributionContext, render_view
    from deepvis_app.probe import Probe

    out = {}
    by_image: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        by_image.setdefault(job.image_key, []).append(i)
    for _key, idx in sorted(by_image.items()):
        x1 = vm.preprocess.to_tensor(jobs[idx[0]].image).detach()
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
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--top-k", type=int, default=9)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--eager-images", type=int, default=36)
    p.add_argument("--eager-top-k", type=int, default=5)
    p.add_argument("--eager-unit-step", type=int, default=8)
    p.add_argument("--skip-eager", action="store_true")
    args = p.parse_args()

    vm = load_model(args.model, weights="default", device="cpu")
    result: dict[str, object] = {"model": vm.name, "device": str(vm.device), "torch_threads": torch.get_num_threads(),
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
            jobs = []
            for layer in es.layers:
                spatial = es.layer_info(layer)["spatial"]
                for unit in range(0, es.channels(layer), args.eager_unit_step):
                    for e in es.entries(layer, unit):
                        if e.image_id not in fitted:
                            fitted[e.image_id] = es.fitted(e)
                        jobs.append(CropJob(layer, unit, e.y if spatial else None, e.x if spatial else None, e.box,
                                            fitted[e.image_id], e.image_id, e.value))
            kinds = ("deconv", "guided")
            t0 = time.perf_counter()
            old = old_engine(vm, jobs, kinds)
            old_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            new = {(i, k): c for i, k, c in iter_crops(vm, jobs, kinds)}
            new_s = time.perf_counter() - t0
            diff = max(int(np.abs(old[key].astype(int) - new[key][:, :, 0].astype(int)[..., None]).max())
                       if old[key].size else 0 for key in old)
            all_entries = sum(len(es.entries(layer, u)) for layer in es.layers for u in range(es.channels(layer)))
            result["eager_crops"] = {
                "images": args.eager_images, "top_k": args.eager_top_k, "entries_timed": len(jobs),
                "entries_total": all_entries, "old_s": round(old_s, 2), "new_s": round(new_s, 2),
                "old_entries_per_s": round(len(jobs) / old_s, 2), "new_entries_per_s": round(len(jobs) / new_s, 2),
                "speedup": round(old_s / new_s, 2), "max_grey_level_difference": diff,
                "default_scan_s_now": round(pass1_total, 2),
                "old_default_scan_s_estimated": round(pass1_total + all_entries * old_s / len(jobs), 1)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
