"""The top-k STORE: a directory the GUI opens instantly and reads lazily (format: docs/store-format.md).

Writers build the store in a sibling staging directory (`STORE.partial`) with every file written atomically
(temp file + `os.replace`), write `index.json` last, and only then swap the staging directory into place, so a
crash at any moment leaves either the previous store or none, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import DeepVisError, SourceError
from ..sources import fit_image, read_image

FORMAT = "deepvis-topk"
VERSION = 1
KINDS = ("input", "deconv", "guided")


# ---------------------------------------------------------------- atomic writes

def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part.

    fsync=False (crops: thousands of small files) skips the per-file flush; the writer then calls `os.sync()`
    once before publishing, and `png_complete` detects a crop torn by a power loss before that.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8"))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_png(path: str | os.PathLike, rgb: np.ndarray, *, fsync: bool = True) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"cannot encode PNG for {path}")
    atomic_write_bytes(path, data.tobytes(), fsync=fsync)


def png_complete(path: str | os.PathLike) -> bool:
    """Cheap check that a PNG file is whole (ends with the IEND chunk), without decoding it."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 20:
                return False
            f.seek(-12, os.SEEK_END)
            return f.read(12)[4:8] == b"IEND"
    except OSError:
        return False


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def staging_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def check_target(out: str | os.PathLike) -> None:
    """Refuse to replace anything that is not a store (or an empty directory): never clobber user data."""
    out = Path(out)
    if out.exists() and not ((out / "index.json").is_file() or (out.is_dir() and not any(out.iterdir()))):
        raise DeepVisError(f"{out} exists and is not a top-k store; choose another --out")


def publish(staging: Path, out: str | os.PathLike) -> None:
    """Swap a finished staging directory into place (the old store, if any, is removed afterwards)."""
    out = Path(out)
    check_target(out)
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- layout helpers

def layer_key(index: int) -> str:
    """File-system safe name of the index-th layer (layer names hold '.' and '@')."""
    return f"L{index:03d}"


def crop_relpath(key: str, unit: int, rank: int, kind: str) -> str:
    return f"crops/{key}/u{unit:05d}_r{rank:03d}_{kind}.png"


def crop_box(image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, bool]:
    """Cut `box` (top, left, bottom, right; bottom/right exclusive, may lie outside) out of an HxWxC image.

    Parts outside the image are zero; the flag says whether any were.
    """
    top, left, bottom, right = (int(v) for v in box)
    h, w = image.shape[:2]
    out = np.zeros((max(bottom - top, 0), max(right - left, 0)) + image.shape[2:], dtype=image.dtype)
    t, lft, b, r = max(top, 0), max(left, 0), min(bottom, h), min(right, w)
    if b > t and r > lft:
        out[t - top:b - top, lft - left:r - left] = image[t:b, lft:r]
    padded = top < 0 or left < 0 or bottom > h or right > w
    return out, padded


def read_rgb(path: str | os.PathLike) -> np.ndarray | None:
    """Decode an image file to RGB uint8 HxWx3; None when it is missing, unreadable or not an image."""
    try:
        return read_image(path)
    except SourceError:
        return None


def write_layer(path: Path, values: np.ndarray, image: np.ndarray, y: np.ndarray, x: np.ndarray,
                box: np.ndarray, padded: np.ndarray) -> None:
    atomic_save_npz(path, values=values.astype(np.float32), image=image.astype(np.int64),
                    y=y.astype(np.int32), x=x.astype(np.int32), box=box.astype(np.int32),
                    padded=padded.astype(bool))


# ---------------------------------------------------------------- reader

@dataclass(frozen=True)
class Entry:
    """One of a unit's top-k: the image `path` (id `image_id`) excited `unit` of `layer` to `value` at (y, x).

    `box` = (top, left, bottom, right) in the fitted SxS input, bottom/right exclusive, not clipped; `padded`
    says the box reaches past the image border (the stored crop is zero there).
    """

    layer: str
    unit: int
    rank: int
    image_id: int
    path: str
    value: float
    y: int
    x: int
    box: tuple[int, int, int, int]
    padded: bool


class TopKStore:
    """Lazy reader of a top-k store. `open` reads only index.json; arrays and PNGs load on first use.

    >>> store = TopKStore.open("runs/imagenet-val")
    >>> store.layers                         # layer names in forward order
    >>> store.entries("_blocks.3", 12)       # list[Entry], best first; [] when the unit has no data
    >>> store.crop("_blocks.3", 12, 0, kind="guided")   # uint8 HxWx3, or None when not stored
    """

    def __init__(self, root: Path, index: dict[str, Any]) -> None:
        self.root = root
        self.index = index
        self._layers = {info["name"]: info for info in index["layers"]}
        self._arrays: dict[str, dict[str, np.ndarray]] = {}
        self._paths: dict[int, str] | None = None
        self._report: dict[str, Any] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> TopKStore:
        root = Path(path).expanduser()
        index_path = root / "index.json"
        if not index_path.is_file():
            hint = " (an unfinished scan; run it again with --resume)" if staging_path(root).is_dir() else ""
            raise DeepVisError(f"{root} is not a top-k store: no index.json{hint}")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DeepVisError(f"{index_path}: cannot read ({err})") from None
        if index.get("format") != FORMAT:
            raise DeepVisError(f"{root} is not a top-k store (format {index.get('format')!r})")
        if int(index.get("version", 0)) > VERSION:
            raise DeepVisError(f"{root}: store format version {index['version']} is newer than this DeepVis "
                               f"reads ({VERSION}); update DeepVis")
        return cls(root, index)

    # -- metadata
    @property
    def layers(self) -> list[str]:
        return [info["name"] for info in self.index["layers"]]

    @property
    def top_k(self) -> int:
        return int(self.index["top_k"])

    @property
    def kinds(self) -> list[str]:
        """Crop kinds stored: "input", plus "deconv" / "guided" when attribution ran; [] for `--no-crops`."""
        return list(self.index.get("kinds", []))

    @property
    def input_size(self) -> int:
        return int(self.index["input_size"])

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.index.get("model", {}))

    def layer_info(self, layer: str) -> dict[str, Any]:
        """{"name", "key", "kind", "shape", "channels", "spatial"} of a stored layer."""
        try:
            return self._layers[layer]
        except KeyError:
            raise DeepVisError(f"layer {layer!r} is not in store {self.root}; stored: "
                               f"{', '.join(self.layers) or 'none'}") from None

    def channels(self, layer: str) -> int:
        return int(self.layer_info(layer)["channels"])

    @property
    def report(self) -> dict[str, Any]:
        if self._report is None:
            path = self.root / "report.json"
            self._report = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return self._report

    # -- data
    def _layer_arrays(self, layer: str) -> dict[str, np.ndarray]:
        info = self.layer_info(layer)
        if layer not in self._arrays:
            with np.load(self.root / "layers" / f"{info['key']}.npz") as data:
                self._arrays[layer] = {name: data[name] for name in data.files}
        return self._arrays[layer]

    def _image_paths(self) -> dict[int, str]:
        if self._paths is None:
            raw = json.loads((self.root / "images.json").read_text(encoding="utf-8"))
            self._paths = {int(k): v for k, v in raw.items()}
        return self._paths

    def entries(self, layer: str, unit: int) -> list[Entry]:
        """The unit's entries, best first (value desc, then image id asc). [] for units without data."""
        arrays = self._layer_arrays(layer)
        if not 0 <= unit < arrays["values"].shape[0]:
            return []
        paths = self._image_paths()
        out = []
        for rank in range(arrays["values"].shape[1]):
            image_id = int(arrays["image"][unit, rank])
            if image_id < 0:
                break
            path = paths.get(image_id, "")
            if path and not os.path.isabs(path):
                path = str(self.root / path)
            out.append(Entry(layer=layer, unit=unit, rank=rank, image_id=image_id, path=path,
                             value=float(arrays["values"][unit, rank]), y=int(arrays["y"][unit, rank]),
                             x=int(arrays["x"][unit, rank]),
                             box=tuple(int(v) for v in arrays["box"][unit, rank]),  # type: ignore[arg-type]
                             padded=bool(arrays["padded"][unit, rank])))
        return out

    def crop(self, layer: str, unit: int, rank: int, kind: str = "input") -> np.ndarray | None:
        """The crop (uint8 HxWx3 RGB) of the unit's rank-th entry; None when not available.

        "input" crops missing from the store (a `--no-crops` scan) are cut from the source image on the fly.
        """
        if kind not in KINDS:
            raise DeepVisError(f"unknown crop kind {kind!r}; use one of {', '.join(KINDS)}")
        info = self.layer_info(layer)
        path = self.root / crop_relpath(info["key"], unit, rank, kind)
        if path.is_file():
            return read_rgb(path)
        if kind == "input":
            entries = self.entries(layer, unit)
            if 0 <= rank < len(entries):
                fitted = self.fitted(entries[rank])
                return None if fitted is None else crop_box(fitted, entries[rank].box)[0]
        return None

    def image(self, entry: Entry) -> np.ndarray | None:
        """The whole source image (RGB uint8, original size) of an entry; None when the file is gone."""
        return read_rgb(entry.path) if entry.path else None

    def fitted(self, entry: Entry) -> np.ndarray | None:
        """The SxS image the network saw for this entry (the box coordinates refer to it)."""
        rgb = self.image(entry)
        return None if rgb is None else fit_image(rgb, self.input_size, self.index.get("crop", "center"))
