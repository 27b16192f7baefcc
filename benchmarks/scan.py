"""Scan throughput vs the model's bare batched forward on the same images; prints one JSON object.

    .venv/bin/python benchmarks/scan.py [--model efficientnet_lite0] [--images 96] [--batch-size 32]

"bare" = batched forward only, on images already decoded, fitted and in memory (the ceiling).
"scan" = pass 1 of `deepvis scan` (decode in DataLoader workers + forward + Probe + on-device top-k merge),
as timed inside the scan, interleaved with the bare runs; "crops" = pass 2 of one more scan (receptive-field
crops of every entry, plus deconv/guided with --attribution deconv,guided).
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

from deepvis_app.topk import TopKStore  # noqa: E402
from deepvis_app.topk.scan import list_images, resolve_layers, scan  # noqa: E402
from deepvis_app.zoo import load_model  # noqa: E402


def make_images(folder: Path, n: int, seed: int = 0) -> None:
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default="default")
    p.add_argument("--device", default="auto")
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="default: the scan's automatic choice")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-crops", action="store_true", help="do not time the crop pass")
    p.add_argument("--layers", default=None, help="default: the spec's shown layers")
    p.add_argument("--attribution", default="none", help="crops pass: none (input crops only) or deconv,guided")
    args = p.parse_args()

    vm = load_model(args.model, weights=args.weights, device=args.device)
    layers = [name for name, _ in resolve_layers(vm, args.layers)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        make_images(data, args.images)
        paths = list_images(data)
        # bare batched forward on pre-decoded images (decoding excluded: the ceiling)
        fitted = [vm.preprocess.fit(cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)) for p in paths]
        batch = torch.from_numpy(np.stack(fitted))

        def forward_all() -> None:
            for i in range(0, len(batch), args.batch_size):
                x = batch[i:i + args.batch_size].to(vm.device).permute(0, 3, 1, 2).float()
                vm.net((x - vm.preprocess.mean) * vm.preprocess.inv_std)

        def bare_run() -> float:
            with torch.no_grad():
                if vm.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                forward_all()
                if vm.device.type == "cuda":
                    torch.cuda.synchronize()
            return time.perf_counter() - t0

        def scan_run(i: int) -> float:  # pass 1 only, as timed inside scan (includes worker start-up)
            report = scan(vm, data, Path(tmp) / f"store{i}", layers=layers, batch_size=args.batch_size,
                          workers=args.workers, crops=False, progress=False)
            return report["seconds_scan"]

        with torch.no_grad():
            forward_all()  # warm-up
        # Interleaved repeats: the machine may be shared, so both sides see the same load on average.
        bare_s, scan_s = [], []
        for i in range(args.repeats):
            bare_s.append(bare_run())
            scan_s.append(scan_run(i))
        kinds = [] if args.attribution == "none" else args.attribution.split(",")
        crops_s, n_crops = None, None
        if not args.skip_crops:
            t0 = time.perf_counter()
            report = scan(vm, data, Path(tmp) / "store", layers=layers, batch_size=args.batch_size,
                          workers=args.workers, attribution=kinds, progress=False)
            crops_s = round(time.perf_counter() - t0 - report["seconds_scan"], 2)
            store = TopKStore.open(Path(tmp) / "store")
            n_crops = sum(len(store.entries(layer, u)) for layer in store.layers
                          for u in range(store.channels(layer)))
    bare = len(paths) * len(bare_s) / sum(bare_s)
    scan_rate = len(paths) * len(scan_s) / sum(scan_s)
    print(json.dumps({
        "model": vm.name, "device": str(vm.device), "torch_threads": torch.get_num_threads(),
        "images": len(paths), "batch_size": args.batch_size, "workers": args.workers, "repeats": args.repeats,
        "layers": layers, "bare_forward_images_per_s": round(bare, 2), "scan_images_per_s": round(scan_rate, 2),
        "scan_vs_bare": round(scan_rate / bare, 3), "bare_runs_s": [round(t, 2) for t in bare_s],
        "scan_runs_s": [round(t, 2) for t in scan_s], "crop_entries": n_crops, "attribution": kinds,
        "crops_pass_s": crops_s}))

if __name__ == "__main__":
    main()
