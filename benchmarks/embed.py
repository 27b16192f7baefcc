"""Codes and maps, measured: neighbourhood quality on real photos, extraction vs a bare forward, 10,000-point
t-SNE, live placement of a new code, grid snapping and the pictures at 100,000 points.

    flock /tmp/deepvis-heavy.lock .venv/bin/python benchmarks/embed.py [--per-photo 20] [--repeats 1]

Prints one JSON object:
* "quality": 8 distinct scikit-image photos x `--per-photo` augmented crops (random resized crop, flip,
  brightness / contrast jitter), codes of EfficientNet-Lite0 (trained), openTSNE map (perplexity 30):
  fraction of points whose 10 nearest map neighbours all come from the same photo (target >= 0.9), the mean
  same-photo fraction, sklearn's trustworthiness (k = 10), and the same purity in code space (cosine) for
  reference. `--random-contrast` adds the same for the randomly initialised net.
* "extraction": `extract_codes` on those image files (decode, fit, forward with the code hook, pooling, top-1,
  thumbnails, npz parts and the final file) vs "bare" = the net's batched forward over the same images
  pre-decoded and normalised in memory, in NCHW and in channels-last layout (the loader's NHWC batches make the
  extraction's input channels-last); the ratio is against the faster bare one. Interleaved repeats, min taken.
* "embedding_10k": `EmbeddingMap.fit` of 10,000 synthetic codes of the real dimension (1280; a mixture of 100
  non-negative clusters): extracting 10,000 real images takes ~30 min on this 2-core CPU, so synthetic codes.
* "live": on that map, ms per frame of `locate` (marker position + 9 nearest by cosine, the live path), of
  `nearest` alone, and of openTSNE's optimised `transform` of one code; `locate` also over 100,000 codes.
* "grid" / "pictures_100k": grid snapping (exact at 2,000, approximate at 10,000 / 100,000) and both pictures
  for 100,000 points with 32 px thumbnails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepvis_app.embed import EmbeddingMap, extract_codes, neighbour_purity  # noqa: E402
from deepvis_app.embed.maps import unit_rows  # noqa: E402
from deepvis_app.embed.pictures import grid_picture, scatter_picture, snap_to_grid  # noqa: E402
from deepvis_app.topk.scan import list_images  # noqa: E402
from deepvis_app.zoo import load_model  # noqa: E402

PICTURES: str | None = None  # --pictures DIR: save the trained map's two pictures there
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "camera")


def make_set(folder: Path, per: int, seed: int = 0) -> None:
    """`per` augmented 256x256 JPEG crops of each photo, named PHOTO_k.jpg."""
    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        h, w = img.shape[:2]
        for k in range(per):
            s = int(min(h, w) * rng.uniform(0.4, 1.0))
            top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            crop = img[top:top + s, left:left + s].astype(np.float32)
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crop = (crop - 128) * rng.uniform(0.8, 1.2) + 128 + rng.uniform(-25, 25)  # contrast, brightness
            crop = cv2.resize(np.clip(crop, 0, 255).astype(np.uint8), (256, 256), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder / f"{name}_{k:03d}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))


def cosine_purity(codes: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    u = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    sims = u @ u.T
    np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1)[:, :k]
    return float((labels[idx] == labels[:, None]).all(axis=1).mean())


def quality(vm, folder: Path) -> dict:
    from sklearn.manifold import trustworthiness

    codes = extract_codes(vm, folder, batch_size=32, progress=False)
    labels = np.array([Path(p).name.rsplit("_", 1)[0] for p in codes.paths])
    m = EmbeddingMap.fit(codes.codes, perplexity=30, seed=0)
    strict, mean = neighbour_purity(m.xy, labels, k=10)
    if PICTURES and vm.weights == "default":
        from deepvis_app.fileio import atomic_write_png

        cells, cols, rows, _ = snap_to_grid(m.xy)
        atomic_write_png(Path(PICTURES) / "embedding-map.png", scatter_picture(m.xy, codes.thumbs)[0])
        atomic_write_png(Path(PICTURES) / "embedding-grid.png", grid_picture(cells, codes.thumbs, cols, rows))
    return {"images": len(codes), "photos": len(set(labels)), "all_10_nn_same_photo": round(strict, 4),
            "mean_same_photo_among_10_nn": round(mean, 4),
            "trustworthiness_k10": round(float(trustworthiness(codes.codes, m.xy, n_neighbors=10)), 4),
            "code_space_all_10_nn_same_photo": round(cosine_purity(codes.codes, labels), 4),
            "tsne_seconds": m.settings["seconds"], "perplexity": m.settings["perplexity"],
            "top1_of_first_crop": {lab: codes.label(int(np.flatnonzero(labels == lab)[0])) for lab in PHOTOS}}


@torch.no_grad()
def bare_forward(vm, tensors: list[torch.Tensor]) -> float:
    t0 = time.perf_counter()
    for x in tensors:
        vm.net(x)
    return time.perf_counter() - t0


def extraction(vm, folder: Path, repeats: int, batch: int = 32) -> dict:
    from deepvis_app.sources import read_image

    paths = list_images(folder)
    fitted = np.stack([vm.preprocess.fit(read_image(p)) for p in paths])
    x = torch.from_numpy(fitted).permute(0, 3, 1, 2).float()
    x = (x - vm.preprocess.mean) * vm.preprocess.inv_std
    tensors = [x[i:i + batch].contiguous() for i in range(0, len(x), batch)]
    # The loader's batches arrive NHWC, so the extraction's input is channels-last: time both layouts bare.
    tensors_cl = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    bare, bare_cl, ext = [], [], []
    bare_forward(vm, tensors[:1])  # warm-up
    bare_forward(vm, tensors_cl[:1])
    for _ in range(repeats):
        bare.append(bare_forward(vm, tensors))
        bare_cl.append(bare_forward(vm, tensors_cl))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            extract_codes(vm, folder, Path(tmp) / "out", batch_size=batch, progress=False)
            ext.append(time.perf_counter() - t0)
    n = len(paths)
    b, bc, e = min(bare), min(bare_cl), min(ext)
    return {"images": n, "batch": batch, "bare_forward_nchw_img_per_s": round(n / b, 2),
            "bare_forward_channels_last_img_per_s": round(n / bc, 2), "extract_codes_img_per_s": round(n / e, 2),
            "ratio_extract_over_best_bare": round(min(b, bc) / e, 3),
            "bare_nchw_s": [round(v, 2) for v in bare], "bare_channels_last_s": [round(v, 2) for v in bare_cl],
            "extract_s": [round(v, 2) for v in ext]}


def synthetic_codes(n: int, d: int = 1280, clusters: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(clusters, d))).astype(np.float32) * (rng.random((clusters, d)) < 0.3)
    which = rng.integers(0, clusters, n)
    return np.maximum(0, centres[which] + 0.5 * rng.normal(size=(n, d)).astype(np.float32))


def ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * float(np.median(times)), 3)


def embedding_10k() -> tuple[dict, dict, EmbeddingMap, np.ndarray]:
    codes = synthetic_codes(10_000)
    t0 = time.perf_counter()
    m = EmbeddingMap.fit(codes, perplexity=30, seed=0)
    fit_s = time.perf_counter() - t0
    queries = synthetic_codes(200, seed=1)
    it = iter(range(10**9))
    live = {"locate_ms_per_frame": ms(lambda: m.locate(queries[next(it) % 200], k=9), 200),
            "nearest_k9_ms": ms(lambda: m.nearest(queries[next(it) % 200], k=9), 200),
            "tsne_transform_optimized_ms_per_code": ms(lambda: m.transform(queries[next(it) % 200][None],
                                                                           optimize=True), 10)}
    # 100,000 codes (positions random: only the cosine pass over the codes matters here).
    big = synthetic_codes(100_000, seed=2)
    m_big = EmbeddingMap(xy=np.random.default_rng(0).normal(size=(len(big), 2)).astype(np.float32),
                         units=unit_rows(big), method="none")
    del big
    live["locate_ms_per_frame_100k"] = ms(lambda: m_big.locate(queries[next(it) % 200], k=9), 50)
    return ({"points": len(codes), "dims": codes.shape[1], "seconds": round(fit_s, 2),
             "settings": m.settings}, live, m, codes)


def grid_and_pictures() -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    grid = {}
    for n, limit in ((2000, 2000), (10_000, 0), (100_000, 0)):
        t0 = time.perf_counter()
        snap_to_grid(rng.normal(size=(n, 2)), exact_limit=limit)
        grid[f"{n}_{'exact' if limit else 'approximate'}_s"] = round(time.perf_counter() - t0, 3)
    n = 100_000
    xy = rng.normal(size=(n, 2))
    thumbs = rng.integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    scatter, drawn = scatter_picture(xy, thumbs)
    scatter_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cells, cols, rows, how = snap_to_grid(xy)
    g = grid_picture(cells, thumbs, cols, rows)
    grid_s = time.perf_counter() - t0
    return grid, {"points": n, "map_png_shape": list(scatter.shape), "thumbnails_drawn": drawn,
                  "map_seconds": round(scatter_s, 2), "grid_png_shape": list(g.shape), "grid_snap": how,
                  "grid_seconds": round(grid_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    ap.add_argument("--per-photo", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--random-contrast", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: quality,extraction,10k,pictures")
    ap.add_argument("--pictures", default=None, metavar="DIR", help="save the quality map's pictures into DIR")
    args = ap.parse_args()
    global PICTURES
    PICTURES = args.pictures
    skip = set(args.skip.split(","))
    out: dict = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                 "load_avg_at_start": [round(v, 2) for v in os.getloadavg()]}
    vm = load_model("efficientnet_lite0", device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_set(folder, args.per_photo)
        if "quality" not in skip:
            out["quality"] = quality(vm, folder)
            if args.random_contrast:
                out["quality_random_weights"] = quality(load_model("efficientnet_lite0", weights="random",
                                                                   device=args.device), folder)
            print(json.dumps(out), file=sys.stderr)
        if "extraction" not in skip:
            out["extraction"] = extraction(vm, folder, args.repeats)
            print(json.dumps(out["extraction"]), file=sys.stderr)
    if "10k" not in skip:
        out["embedding_10k"], out["live"], _, _ = embedding_10k()
        print(json.dumps(out["live"]), file=sys.stderr)
    if "pictures" not in skip:
        out["grid"], out["pictures_100k"] = grid_and_pictures()
    out["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
