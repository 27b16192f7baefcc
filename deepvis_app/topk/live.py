"""Live top-k: the camera frames (and patches) that excited each unit most, "what in my room excites this neuron".

Bounded and cheap per frame: one device reduction and one small host copy per update; a frame's image is
copied only when it enters some unit's top-k, and frames no unit refers to any more are dropped, so at most
units x k images are ever held. `save` writes the same STORE format as `deepvis scan` (docs/store-format.md).
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import DeepVisError, ParamError
from ..fileio import atomic_write_json, atomic_write_png
from .store import (
    FORMAT,
    VERSION,
    Entry,
    check_target,
    crop_box,
    crop_relpath,
    layer_key,
    output_lock,
    publish,
    recover,
    staging_path,
    write_layer,
)

_EMPTY = np.iinfo(np.int64).max
Box = tuple[int, int, int, int]


class LiveTopK:
    """Running top-k of frames for the units of one layer.

    channels: the number of channels C (track all) or the channel indices to track.
    rf_fn: `(y, x) -> (top, left, bottom, right)` in fitted-image pixels (e.g. a partial of
    `receptive_field.rf_box`); None means the whole frame (right for vectors, and for token layers, whose units
    see the whole image).
    spatial: whether the units' (y, x) are positions on the layer's grid (a saved store says so); default: the
    layer has a local receptive field (`rf_fn` given). A token layer on a patch grid is spatial without `rf_fn`.
    Order: value desc, then frame id asc (an equal value later never displaces an earlier frame).
    similar: diversity rule for a camera that looks at the same scene for many frames. A candidate whose unit
    already holds a frame with the neuron at the same position and a receptive-field patch that differs by less
    than `similar` grey levels on average (8x8 thumbnails) is the same "moment": it replaces that frame when its
    value is higher and is dropped otherwise, so nine near-identical consecutive frames never fill the top-k.
    0 = off (exact top-k, as a dataset scan keeps).
    """

    def __init__(self, layer: str, channels: int | Sequence[int], k: int = 9,
                 rf_fn: Callable[[int, int], Box] | None = None, similar: float = 0.0,
                 spatial: bool | None = None) -> None:
        if k < 1:
            raise ParamError("k", f"must be at least 1, got {k}")
        self.layer, self.k, self.rf_fn, self.similar = layer, k, rf_fn, float(similar)
        self.spatial = rf_fn is not None if spatial is None else bool(spatial)
        units = list(range(channels)) if isinstance(channels, int) else [int(c) for c in channels]
        if not units or min(units) < 0:
            raise DeepVisError("LiveTopK needs at least one channel index >= 0")
        self.units = np.asarray(units, dtype=np.int64)
        self._row = {int(u): i for i, u in enumerate(units)}
        self._units_t: torch.Tensor | None = None
        self.clear()

    def clear(self) -> None:
        n = len(self.units)
        self.values = np.full((n, self.k), -np.inf, dtype=np.float32)
        self.ids = np.full((n, self.k), _EMPTY, dtype=np.int64)
        self.y = np.zeros((n, self.k), dtype=np.int64)
        self.x = np.zeros((n, self.k), dtype=np.int64)
        self.box = np.zeros((n, self.k, 4), dtype=np.int64)
        self._images: dict[int, np.ndarray] = {}

    @property
    def image_count(self) -> int:
        """Frames currently held (at most units x k)."""
        return len(self._images)

    @property
    def image_ids(self) -> frozenset[int]:
        """The frames held: exactly those some unit's entries still refer to."""
        return frozenset(self._images)

    def update(self, frame_id: int, fitted: np.ndarray, activation: torch.Tensor) -> int:
        """Offer one frame: `fitted` is the uint8 HxWx3 image the net saw, `activation` the layer's output as
        channels-first maps [C,H,W] (`layouts.as_maps(act, info)[0]`, whatever the layer's layout) or [C].

        Returns how many units took the frame into their top-k (0: nothing was stored).
        """
        act = activation.detach()
        if self._units_t is None or self._units_t.device != act.device:
            self._units_t = torch.as_tensor(self.units, device=act.device)
        act = act.index_select(0, self._units_t).float()
        if act.dim() == 3:
            w = act.shape[2]
            vals, idx = torch.nan_to_num(act.reshape(act.shape[0], -1), nan=float("-inf")).max(dim=1)
            both = torch.stack([vals.double(), idx.double()]).cpu().numpy()  # one host copy
            vals, idx = both[0].astype(np.float32), both[1].astype(np.int64)
            ys, xs = idx // w, idx % w
        elif act.dim() == 1:
            vals = torch.nan_to_num(act, nan=float("-inf")).cpu().numpy().astype(np.float32)
            ys = xs = np.zeros(len(vals), dtype=np.int64)
        else:
            raise DeepVisError(f"LiveTopK expects maps [C,H,W] (layouts.as_maps) or a vector [C], "
                               f"got {tuple(act.shape)}")
        frame_id = int(frame_id)
        last_v, last_id = self.values[:, -1], self.ids[:, -1]
        enter = (vals > last_v) | ((vals == last_v) & (frame_id < last_id))
        rows = np.flatnonzero(enter)
        if rows.size == 0:
            return 0
        if self.rf_fn is None:
            h, w_img = fitted.shape[:2]
            boxes = np.tile(np.array([0, 0, h, w_img], dtype=np.int64), (rows.size, 1))
        else:
            boxes = np.array([self.rf_fn(int(ys[r]), int(xs[r])) for r in rows], dtype=np.int64).reshape(-1, 4)
        if self.similar > 0:
            rows, boxes = self._same_moment(rows, boxes, vals, ys, xs, fitted)
            if rows.size == 0:
                return 0
        cand_v = np.concatenate([self.values[rows], vals[rows, None]], axis=1)
        cand_id = np.concatenate([self.ids[rows], np.full((rows.size, 1), frame_id)], axis=1)
        cand_y = np.concatenate([self.y[rows], ys[rows, None]], axis=1)
        cand_x = np.concatenate([self.x[rows], xs[rows, None]], axis=1)
        cand_b = np.concatenate([self.box[rows], boxes[:, None, :]], axis=1)
        order = np.lexsort((cand_id, -cand_v), axis=-1)[:, :self.k]
        take = np.take_along_axis
        self.values[rows] = take(cand_v, order, 1)
        self.ids[rows] = take(cand_id, order, 1)
        self.y[rows] = take(cand_y, order, 1)
        self.x[rows] = take(cand_x, order, 1)
        self.box[rows] = take(cand_b, order[..., None], 1)
        self._images[frame_id] = np.array(fitted, dtype=np.uint8, copy=True)
        referenced = set(np.unique(self.ids).tolist())
        for fid in [f for f in self._images if f not in referenced]:
            del self._images[fid]
        return int(rows.size)

    def _thumb(self, image: np.ndarray, box) -> np.ndarray:
        import cv2

        patch = crop_box(image, tuple(int(v) for v in box))[0]
        gray = cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_RGB2GRAY)
        return cv2.resize(gray, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32)

    def _same_moment(self, rows: np.ndarray, boxes: np.ndarray, vals: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                     fitted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply the `similar` rule: drop candidates that repeat a held moment without beating it; free the slot
        of a held moment that a candidate beats (it sorts out as empty)."""
        keep = []
        for i, r in enumerate(rows):
            held = np.flatnonzero((self.ids[r] != _EMPTY) & (self.y[r] == ys[r]) & (self.x[r] == xs[r]))
            if held.size:
                thumb = self._thumb(fitted, boxes[i])
                same = [j for j in held if int(self.ids[r, j]) in self._images and np.abs(
                    self._thumb(self._images[int(self.ids[r, j])], self.box[r, j]) - thumb).mean() < self.similar]
                if same:
                    j = same[0]
                    if not vals[r] > self.values[r, j]:
                        continue  # the same view again, not better: not a new moment
                    self.values[r, j], self.ids[r, j] = -np.inf, _EMPTY  # a better shot of the same moment
            keep.append(i)
        return rows[keep], boxes[keep]

    def entries(self, unit: int) -> list[Entry]:
        """The unit's frames, best first; [] for units not tracked or without frames yet."""
        row = self._row.get(int(unit))
        if row is None:
            return []
        out = []
        for rank in range(self.k):
            fid = int(self.ids[row, rank])
            if fid == _EMPTY:
                break
            box = tuple(int(v) for v in self.box[row, rank])
            h, w = self._images[fid].shape[:2]
            out.append(Entry(layer=self.layer, unit=int(unit), rank=rank, image_id=fid, path="",
                             value=float(self.values[row, rank]), y=int(self.y[row, rank]),
                             x=int(self.x[row, rank]), box=box,  # type: ignore[arg-type]
                             padded=box[0] < 0 or box[1] < 0 or box[2] > h or box[3] > w))
        return out

    def image(self, entry: Entry) -> np.ndarray:
        """The whole fitted frame of an entry."""
        return self._images[entry.image_id]

    def crop(self, unit: int, rank: int) -> np.ndarray | None:
        """The receptive-field patch (zero-padded at borders) of the unit's rank-th frame; None if empty."""
        entries = self.entries(unit)
        if rank >= len(entries):
            return None
        return crop_box(self._images[entries[rank].image_id], entries[rank].box)[0]

    def snapshot(self) -> LiveTopK:
        """An independent copy (arrays copied, frames shared: they are never modified), so another thread can
        save or read it while this one keeps updating."""
        twin = copy.copy(self)
        for name in ("values", "ids", "y", "x", "box"):
            setattr(twin, name, getattr(self, name).copy())
        twin._images = dict(self._images)
        return twin

    def save(self, store_path: str | os.PathLike, *, model: dict | None = None) -> Path:
        """Write a STORE (frames as PNGs inside it) readable by `TopKStore` / `deepvis topk`; atomic."""
        out = Path(store_path).expanduser()
        check_target(out)
        with output_lock(out, wait=True):
            recover(out)
            return self._save_locked(out, model)

    def _save_locked(self, out: Path, model: dict | None) -> Path:
        staging = staging_path(out)
        if staging.exists():
            shutil.rmtree(staging)
        key = layer_key(0)
        (staging / "layers").mkdir(parents=True)
        (staging / "images").mkdir()
        (staging / "crops" / key).mkdir(parents=True)
        channels = int(self.units.max()) + 1
        shape = (channels, self.k)
        values = np.full(shape, -np.inf, dtype=np.float32)
        ids = np.full(shape, -1, dtype=np.int64)
        y, x = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        box = np.zeros(shape + (4,), np.int64)
        padded = np.zeros(shape, bool)
        size = 0
        for unit in self.units.tolist():
            for e in self.entries(unit):
                values[unit, e.rank], ids[unit, e.rank] = e.value, e.image_id
                y[unit, e.rank], x[unit, e.rank], box[unit, e.rank] = e.y, e.x, e.box
                padded[unit, e.rank] = e.padded
                img = self._images[e.image_id]
                size = max(size, img.shape[0])
                atomic_write_png(staging / crop_relpath(key, unit, e.rank, "input"), crop_box(img, e.box)[0])
        paths = {}
        for fid, img in sorted(self._images.items()):
            paths[str(fid)] = f"images/f{fid:09d}.png"
            atomic_write_png(staging / paths[str(fid)], img)
        write_layer(staging / "layers" / f"{key}.npz", values, ids, y, x, box, padded)
        atomic_write_json(staging / "images.json", paths)
        atomic_write_json(staging / "report.json", {"source": "live", "frames_held": len(self._images)})
        spatial = self.spatial
        atomic_write_json(staging / "index.json", {
            "format": FORMAT, "version": VERSION, "complete": True, "source": "live", "model": dict(model or {}),
            "input_size": size, "crop": "center", "top_k": self.k, "kinds": ["input"], "view": "norm",
            "order": "value desc, image id asc", "num_images": len(self._images),
            "layers": [{"name": self.layer, "key": key, "kind": "live", "shape": [channels],
                        "channels": channels, "spatial": spatial}],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        publish(staging, out)
        return out
