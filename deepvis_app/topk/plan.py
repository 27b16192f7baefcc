"""What pass 2 of a scan will write, estimated before it starts (the CLI prints it and asks for large stores)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .running import EMPTY_ID

PNG_IMAGE_RATIO = 0.6   # PNG (compression 1) of a photo: ~60% of the raw RGB bytes (measured on skimage photos)
PNG_CROP_RATIO = 0.35   # of a norm-view attribution crop (mostly dark, one channel repeated)


def plan_store(size: int, layers: list[str], merged: dict[str, dict[str, np.ndarray]],
               boxes: dict[str, tuple[np.ndarray, np.ndarray]], kinds: list[str], images: bool) -> dict[str, Any]:
    """Entries, images stored, crop files, and an estimate of the store's bytes for the merged top-k of
    `layers` (`kinds`: the crop kinds of pass 2; "input" crops cost nothing, they are cut on view)."""
    entries, crop_px, used = 0, 0, set()
    eager = [k for k in kinds if k != "input"]
    for name in layers:
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
    layer_bytes = sum(merged[n]["ids"].size * 40 for n in layers)
    return {"entries": entries, "images": n_images, "crop_files": entries * len(eager), "eager_kinds": eager,
            "estimated_bytes": int(image_bytes + crop_bytes + layer_bytes + 4096 + 64 * n_images)}


def format_bytes(n: float) -> str:
    """`1234567` -> "1.2 MB" (decimal units, as the plan line prints them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
