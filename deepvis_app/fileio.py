"""One way to write files for the whole project: atomic, durable, with normal permissions.

A reader sees the old file or the whole new one, never a part: data goes to a temp file in the same directory,
is flushed and fsync'd, gets the mode a plain `open()` would give (0666 minus the umask; `mkstemp` alone makes
0600, unreadable for a team sharing a store), and is renamed into place; then the directory is fsync'd so the
rename itself survives a power loss. Nothing here syncs the whole host.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask is process-wide and toggling it from worker threads would race.
UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename/creation inside `path` durable (a no-op where directories cannot be opened)."""
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write `data` to `path` atomically. fsync=False skips the per-file and directory flushes for bulk writers
    (thousands of small crops) that call `fsync_files` on what they wrote before publishing."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)


def fsync_files(paths: list[str | os.PathLike]) -> None:
    """fsync each file and then each distinct parent directory once (what bulk writers do before publishing)."""
    parents: set[Path] = set()
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        parents.add(Path(p).parent)
    for d in parents:
        fsync_dir(d)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=indent, ensure_ascii=False).encode("utf-8"))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def encode_png(rgb: np.ndarray, *, compression: int = 1) -> bytes:
    """RGB (or gray) uint8 array -> PNG bytes."""
    import cv2

    arr = np.ascontiguousarray(rgb)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise OSError("cannot encode PNG")
    return data.tobytes()


def atomic_write_png(path: str | os.PathLike, rgb: np.ndarray, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, encode_png(rgb), fsync=fsync)


def lock_path(out: str | os.PathLike) -> Path:
    """`OUT.lock`: the file a writer of the folder OUT holds (beside it, so it survives OUT's replacement)."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, *, wait: bool = False, what: str = "run") -> Iterator[None]:
    """Hold `OUT.lock` (flock) while writing the folder OUT: a second writer gets one clear line naming `what`
    holds it (a scan, an atlas build, an embedding run), or waits with `wait`. The kernel drops a flock when its
    holder dies, so a killed run never blocks the next; the lock file stays (removing it would race a waiter)."""
    import fcntl

    from .errors import DeepVisError, ParamError

    path = lock_path(out)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise DeepVisError(f"cannot create the lock file {path} ({err.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise ParamError("out", f"{out}: another {what} is writing it (it holds {path}); wait for it to finish "
                                    "or choose another folder") from None
        yield
    finally:
        os.close(fd)
