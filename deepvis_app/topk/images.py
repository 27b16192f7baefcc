"""The images of a pass over a dataset (scan, embed): which files, in which order, decoded how, in batches, and
the pass's progress bar.

The order of `list_images` is the image index every pass uses for tie-breaking and sharding, so it must be the
same on every rank and every run. Decoding never raises for a bad file: a batch carries the unreadable ids with
the reason, and the pass records them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DeepVisError
from ..sources import IMAGE_EXTS
from ..sources import list_images as folder_images
from ..zoo.preprocess import fit_frame
from .distributed import Dist
from .store import is_store_dir, read_rgb


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


class ImageDataset(Dataset):
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


def collate(batch: list[tuple[int, np.ndarray | None, str]]) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(ids int64 [n], fitted images uint8 [n, S, S, 3], [(id, why)] of the unreadable ones)."""
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
    pre = vm.preprocess
    fit = partial(fit_frame, size=pre.size, crop=pre.crop, crop_pct=pre.crop_pct, interpolation=pre.interpolation)
    return DataLoader(ImageDataset(paths, ids, fit), batch_size=batch_size, shuffle=False,
                      num_workers=max(0, workers), collate_fn=collate, pin_memory=vm.device.type == "cuda",
                      worker_init_fn=_worker_init, prefetch_factor=4 if workers > 0 else None)


class Progress:
    """Progress on stderr (tqdm: count, rate, ETA), silent when disabled (`--quiet`, ranks other than 0)."""

    def __init__(self, total: int, label: str = "scan", enabled: bool = True, stream: Any = None,
                 unit: str = "img") -> None:
        import sys

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
