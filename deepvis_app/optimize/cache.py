"""On-disk cache of optimized images, so revisiting a unit in the GUI is instant.

Location: `$DEEPVIS_CACHE/optimize` (default `~/.cache/deepvis/optimize`). An entry is `<key>.png` (all
images of the batch side by side) plus `<key>.json` (values, history, settings), keyed by a SHA-256 of
model id, weights, objective and every setting. Both files are written with the project's one atomic-write
helper (`deepvis_app.fileio`), JSON last: a run cancelled or killed part-way leaves no entry, and a reader
never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..fileio import atomic_write_bytes, atomic_write_png


def cache_dir() -> Path:
    root = os.environ.get("DEEPVIS_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "deepvis"
    return base / "optimize"


def make_key(model_id: str, objective_key: str, settings: dict[str, Any]) -> str:
    blob = json.dumps({"model": model_id, "objective": objective_key, "settings": settings},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def weights_id(weights: str) -> str:
    """Weights as part of a cache key: a file path also contributes its size and mtime (retrained file ->
    new key)."""
    path = Path(weights).expanduser()
    if weights not in ("default", "random") and path.is_file():
        st = path.stat()
        return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return weights


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG atomically (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_png(path, rgb)


def read_png(path: str | os.PathLike) -> np.ndarray | None:
    """RGB uint8 image, or None if missing/unreadable."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None or data.size == 0:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if bgr is None else np.ascontiguousarray(bgr[:, :, ::-1])


def save(key: str, images: np.ndarray, meta: dict[str, Any], directory: Path | None = None) -> Path:
    """Store a batch [N,H,W,3] uint8 and its metadata; returns the JSON path."""
    d = directory or cache_dir()
    strip = np.concatenate(list(images), axis=1)
    write_png(d / f"{key}.png", strip)
    meta = dict(meta, batch=int(images.shape[0]))
    path = d / f"{key}.json"
    atomic_write_bytes(path, json.dumps(meta, sort_keys=True).encode())
    return path


def load(key: str, directory: Path | None = None) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(images [N,H,W,3], meta) for a complete entry, else None."""
    d = directory or cache_dir()
    try:
        meta = json.loads((d / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    strip = read_png(d / f"{key}.png")
    n = int(meta.get("batch", 1))
    if strip is None or strip.shape[1] % n:
        return None
    return np.stack(np.split(strip, n, axis=1)), meta
