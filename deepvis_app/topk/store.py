"""The top-k STORE: a directory the GUI opens instantly and reads lazily (format: docs/store-format.md).

Writers build the store in a sibling staging directory (`STORE.partial`) with every file written atomically
(`fileio`: same-directory temp file, fsync, normal permissions, rename), write `index.json` last, and then swap
the staging directory into place (one atomic exchange where the kernel offers it), holding `STORE.lock` so two
writers never interleave. A crash at any moment leaves the previous store or the new one; what a crash strands
(`STORE.old-PID`, temp files) is recovered or removed by the next writer.

Readers trust nothing in a store: every path is resolved inside the store root, arrays load without pickle,
and any damage (missing, truncated, wrong types) becomes one `DeepVisError` line.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeepVisError, ParamError, SourceError
from ..fileio import (  # noqa: F401 (re-export)
    atomic_save_npz,
    atomic_write_json,
    atomic_write_png,
    fsync_dir,
    lock_path,  # noqa: F401 - re-exported: the scan's callers name it from here
)
from ..fileio import output_lock as fileio_output_lock
from ..sources import read_image
from ..zoo.preprocess import fit_frame

FORMAT = "deepvis-topk"
VERSION = 2  # 2: fitted images stored once per image under images/; crops of attribution kinds may be lazy
KINDS = ("input", "deconv", "guided")
LAYER_ARRAYS = ("values", "image", "y", "x", "box", "padded")
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# ---------------------------------------------------------------- small helpers

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


def staging_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def is_store_dir(path: str | os.PathLike) -> bool:
    """A directory a scan must not read as data: a store, its staging copy or a stranded old copy."""
    p = Path(path)
    if p.name.endswith(".partial") or re.search(r"\.old-\d+$", p.name):
        return True
    try:
        with open(p / "index.json", "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return FORMAT.encode() in head


def check_target(out: str | os.PathLike) -> None:
    """Refuse to replace anything that is not a store (or an empty directory): never clobber user data."""
    out = Path(out)
    if out.exists() and not ((out / "index.json").is_file() or (out.is_dir() and not any(out.iterdir()))):
        raise ParamError("out", f"{out} exists and is not a top-k store; choose another folder")


def output_lock(out: str | os.PathLike, *, wait: bool = False) -> contextlib.AbstractContextManager[None]:
    """Hold `STORE.lock` while writing STORE (`fileio.output_lock`, in the scan's words)."""
    return fileio_output_lock(out, wait=wait, what="scan")


def recover(out: str | os.PathLike) -> None:
    """Clean up after a writer killed while publishing (call with the output lock held).

    A stranded `STORE.old-PID` becomes STORE again when STORE is missing; otherwise it is removed. A staging
    directory holding a whole store but no checkpoints is an old store swapped out by `publish`: removed.
    Checkpoints and temp files left inside a published store are removed.
    """
    out = Path(out)
    staging = staging_path(out)
    if (staging / "index.json").is_file() and not list(staging.glob("checkpoint-g*-r*.pt")):
        shutil.rmtree(staging, ignore_errors=True)
    if (out / "index.json").is_file():
        _drop_checkpoints(out)
        remove_temp_files(out, older_than_s=600)  # (younger ones may be a viewer's write in progress)
    olds = sorted(out.parent.glob(f"{glob_escape(out.name)}.old-*"))
    for old in olds:
        if not re.fullmatch(re.escape(out.name) + r"\.old-\d+", old.name):
            continue
        if not out.exists() and (old / "index.json").is_file():
            os.replace(old, out)
            fsync_dir(out.parent)
        else:
            shutil.rmtree(old, ignore_errors=True)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def remove_temp_files(root: str | os.PathLike, *, older_than_s: float = 0.0) -> int:
    """Delete `.NAME.*.tmp` files (left by a killed atomic write) under `root`; returns how many."""
    now, n = time.time(), 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if f.startswith(".") and f.endswith(".tmp"):
                p = os.path.join(dirpath, f)
                try:
                    if older_than_s <= 0 or now - os.path.getmtime(p) > older_than_s:
                        os.unlink(p)
                        n += 1
                except OSError:
                    pass
    return n


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a))


def kill_point(name: str) -> None:
    """Test hook: with DEEPVIS_KILL_AT=name, touch $DEEPVIS_KILL_MARKER and wait to be SIGKILLed there."""
    if os.environ.get("DEEPVIS_KILL_AT") == name:
        marker = os.environ.get("DEEPVIS_KILL_MARKER")
        if marker:
            Path(marker).write_text(str(os.getpid()))
        time.sleep(3600)


def publish(staging: Path, out: str | os.PathLike) -> None:
    """Swap a finished staging directory into place (call with the output lock held).

    Temp files of killed writes are dropped first. With an existing store the two directories are exchanged
    atomically (the old one then sits at the staging path, without checkpoints, and is removed); where the kernel
    cannot exchange, the old store moves to `STORE.old-PID` first, which `recover` puts back if we die in between.
    """
    out = Path(out)
    check_target(out)
    remove_temp_files(staging)
    fsync_dir(staging)
    if out.exists() and _exchange(staging, out):
        fsync_dir(out.parent)
        kill_point("publish")
    else:
        old = None
        if out.exists():
            old = out.with_name(f"{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            fsync_dir(out.parent)
            kill_point("publish")
        os.replace(staging, out)
        fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    _drop_checkpoints(out)
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)


def _drop_checkpoints(root: Path) -> None:
    for ck in root.glob("checkpoint-g*-r*.pt"):
        with contextlib.suppress(OSError):
            ck.unlink()


# ---------------------------------------------------------------- layout helpers

def layer_key(index: int) -> str:
    """File-system safe name of the index-th layer (layer names hold '.' and '@')."""
    return f"L{index:03d}"


def crop_relpath(key: str, unit: int, rank: int, kind: str) -> str:
    return f"crops/{key}/u{unit:05d}_r{rank:03d}_{kind}.png"


def image_relpath(image_id: int) -> str:
    """Where a scan store keeps the fitted SxS image the network saw (once per image, whatever its entries)."""
    return f"images/i{image_id:08d}.png"


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
    except (SourceError, OSError, ValueError):
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
    says the box reaches past the image border (the stored crop is zero there). `path` is where the image came
    from (for display; readers take pixels only from inside the store).
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


def _damaged(root: Path, what: str, err: object = None) -> DeepVisError:
    detail = f" ({type(err).__name__}: {err})" if isinstance(err, BaseException) else (f" ({err})" if err else "")
    return DeepVisError(f"damaged top-k store {root}: {what}{detail}")


class TopKStore:
    """Lazy reader of a top-k store. `open` reads and checks only index.json; arrays and PNGs load on first use.

    >>> store = TopKStore.open("runs/imagenet-val")
    >>> store.layers                         # layer names in forward order
    >>> store.entries("_blocks.3", 12)       # list[Entry], best first; [] when the unit has no data
    >>> store.crop("_blocks.3", 12, 0, kind="guided")   # uint8 HxWx3, or None when not stored (yet)

    Safe to share between threads (caches fill idempotently). Damage raises DeepVisError, never another type.
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
            if index_path.exists():
                raise _damaged(root, "index.json is not a file")
            hint = " (an unfinished scan; resume that scan to finish it)" if staging_path(root).is_dir() else ""
            raise DeepVisError(f"{root} is not a top-k store: no index.json{hint}")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DeepVisError(f"{index_path}: cannot read ({type(err).__name__}: {err})") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            got = index.get("format") if isinstance(index, dict) else type(index).__name__
            raise DeepVisError(f"{root} is not a top-k store (format {got!r})")
        _check_index(root, index)
        if index["version"] > VERSION:
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
        """Crop kinds the store shows: "input", plus "deconv" / "guided" when they are stored or renderable on
        demand (`lazy_kinds`); [] for a `--no-crops` scan."""
        return list(dict.fromkeys(list(self.index.get("kinds", [])) + self.lazy_kinds))

    @property
    def lazy_kinds(self) -> list[str]:
        """Kinds not computed by the scan but rendered on first view (`topk.crops.render_unit`)."""
        return list(self.index.get("lazy_kinds", []))

    @property
    def input_size(self) -> int:
        return int(self.index["input_size"])

    @property
    def model(self) -> dict[str, Any]:
        m = self.index.get("model", {})
        return dict(m) if isinstance(m, dict) else {}

    def layer_info(self, layer: str) -> dict[str, Any]:
        """{"name", "key", "kind", "shape", "channels", "spatial"} of a stored layer, and "layout" (stores written
        since layouts: channels-first / channels-last / tokens / vector). `channels` are the layer's units whatever
        its layout; `spatial` says entries have positions (y, x) on the layer's maps (False only for vectors)."""
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
            path = self.inside("report.json")
            try:
                data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            except (OSError, ValueError) as err:
                raise _damaged(self.root, "report.json unreadable", err) from None
            self._report = data if isinstance(data, dict) else {}
        return self._report

    def inside(self, rel: str) -> Path:
        """`root / rel`, refused unless it resolves inside the store (no `..`, absolute paths or symlinks out)."""
        if not isinstance(rel, str) or not rel or os.path.isabs(rel) or "\x00" in rel:
            raise _damaged(self.root, f"path {rel!r} is not a relative path inside the store")
        root = self.root.resolve()
        path = (root / rel).resolve()
        if path != root and root not in path.parents:
            raise _damaged(self.root, f"path {rel!r} points outside the store")
        return path

    # -- data
    def _layer_arrays(self, layer: str) -> dict[str, np.ndarray]:
        info = self.layer_info(layer)
        arrays = self._arrays.get(layer)
        if arrays is not None:
            return arrays
        path = self.inside(f"layers/{info['key']}.npz")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except Exception as err:  # noqa: BLE001 - numpy/zipfile raise many types for a damaged file
            raise _damaged(self.root, f"layer file {path.name} unreadable", err) from None
        missing = [n for n in LAYER_ARRAYS if n not in arrays]
        if missing:
            raise _damaged(self.root, f"layer file {path.name} lacks {', '.join(missing)}")
        c, k = int(info["channels"]), self.top_k
        want = {"values": (c, k), "image": (c, k), "y": (c, k), "x": (c, k), "box": (c, k, 4), "padded": (c, k)}
        for name, shape in want.items():
            a = arrays[name]
            if a.shape != shape or a.dtype.kind not in "fiub":
                raise _damaged(self.root, f"layer file {path.name}: {name} has shape {a.shape} dtype {a.dtype}, "
                                          f"expected {shape}")
        self._arrays[layer] = arrays
        return arrays

    def _image_paths(self) -> dict[int, str]:
        if self._paths is None:
            path = self.inside("images.json")
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise _damaged(self.root, "images.json unreadable", err) from None
            if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
                raise _damaged(self.root, "images.json is not an object of id -> path strings")
            try:
                self._paths = {int(k): v for k, v in raw.items()}
            except ValueError as err:
                raise _damaged(self.root, "images.json has a non-integer id", err) from None
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
                path = str(self.inside(path))
            out.append(Entry(layer=layer, unit=unit, rank=rank, image_id=image_id, path=path,
                             value=float(arrays["values"][unit, rank]), y=int(arrays["y"][unit, rank]),
                             x=int(arrays["x"][unit, rank]),
                             box=tuple(int(v) for v in arrays["box"][unit, rank]),  # type: ignore[arg-type]
                             padded=bool(arrays["padded"][unit, rank])))
        return out

    def crop_path(self, layer: str, unit: int, rank: int, kind: str) -> Path:
        if kind not in KINDS:
            raise DeepVisError(f"unknown crop kind {kind!r}; use one of {', '.join(KINDS)}")
        return self.inside(crop_relpath(self.layer_info(layer)["key"], int(unit), int(rank), kind))

    def crop(self, layer: str, unit: int, rank: int, kind: str = "input") -> np.ndarray | None:
        """The crop (uint8 HxWx3 RGB) of the unit's rank-th entry; None when not available (yet).

        "input" crops are cut from the stored fitted image when no crop file exists; deconv/guided crops of a
        store with `lazy_kinds` appear once `topk.crops.render_unit` has rendered the unit.
        """
        path = self.crop_path(layer, unit, rank, kind)
        if path.is_file():
            return read_rgb(path)
        if kind == "input":
            entries = self.entries(layer, unit)
            if 0 <= rank < len(entries):
                fitted = self.fitted(entries[rank])
                return None if fitted is None else crop_box(fitted, entries[rank].box)[0]
        return None

    def image(self, entry: Entry) -> np.ndarray | None:
        """The image of an entry as stored (scan stores: the fitted SxS image); None when not in the store.

        Only files inside the store are opened: a store cannot make the viewer read arbitrary paths.
        """
        stored = self.inside(image_relpath(entry.image_id))
        if stored.is_file():
            return read_rgb(stored)
        rel = self._image_paths().get(entry.image_id, "")
        if rel and not os.path.isabs(rel):
            return read_rgb(self.inside(rel))
        return None

    def fitted(self, entry: Entry) -> np.ndarray | None:
        """The SxS image the network saw for this entry (the box coordinates refer to it)."""
        rgb = self.image(entry)
        if rgb is None:
            return None
        size = self.input_size
        if rgb.shape[0] == size and rgb.shape[1] == size:
            return rgb
        index = self.index
        return fit_frame(rgb, size, index.get("crop", "center"), float(index.get("crop_pct", 1.0)),
                         str(index.get("interpolation", "area")))


def _check_index(root: Path, index: dict[str, Any]) -> None:
    """Types of every index field the reader relies on (a crafted or damaged index is one clear line)."""
    def bad(what: str) -> DeepVisError:
        return _damaged(root, f"index.json: {what}")

    version = index.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad("version is not an integer")
    for name in ("top_k", "input_size"):
        v = index.get(name)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= 100_000:
            raise bad(f"{name} is not a positive integer")
    for name in ("kinds", "lazy_kinds"):
        v = index.get(name, [])
        if not isinstance(v, list) or any(k not in KINDS for k in v):
            raise bad(f"{name} must be a list of {', '.join(KINDS)}")
    layers = index.get("layers")
    if not isinstance(layers, list):
        raise bad("layers is not a list")
    seen = set()
    for info in layers:
        if not isinstance(info, dict) or not isinstance(info.get("name"), str):
            raise bad("a layer entry has no name")
        key = info.get("key")
        if not isinstance(key, str) or not _KEY_RE.match(key) or key in seen:
            raise bad(f"layer {info['name']!r} has a bad key {key!r}")
        seen.add(key)
        ch = info.get("channels")
        if not isinstance(ch, int) or isinstance(ch, bool) or not 0 < ch <= 10_000_000:
            raise bad(f"layer {info['name']!r} has a bad channel count {ch!r}")
