"""On-disk cache of optimized images, so revisiting a unit in the GUI is instant.

Location: `$DEEPVIS_CACHE/optimize` (default `~/.cache/deepvis/optimize`). An entry is `<key>.png` (all
images of the batch side by side) plus `<key>.json` (values, history, settings), keyed by a SHA-256 of
model id, weights, objective and every setting. Both files are written to a temporary name and moved into
place with `os.replace`, JSON last: a run cancelled or killed part-way leaves no entry, and a reader never
sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np


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


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, not safe to toggle from worker threads


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a saved PNG should get normal permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG atomically."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    _atomic_write(Path(path), buf.tobytes())


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
    _atomic_write(path, json.dumps(meta, sort_keys=True).encode())
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
