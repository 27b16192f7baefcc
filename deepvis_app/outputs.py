"""A run's output files: all of them appear together or none does, and none replaces an input.

`write_files` writes every file of a run to a temp file beside its target first and renames them into place only
when all were written, so a run that fails late (a full disk, Ctrl-C, a value rejected by the last step) leaves
no half of its results behind. `same_file` is the one test for "these two paths are one file" (through symbolic
and hard links, before either exists), used to keep outputs off the inputs and off each other.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .fileio import FILE_MODE, fsync_dir


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: equal once links are resolved, or (both existing) one inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): different files
        return False


def write_files(files: Mapping[str | os.PathLike, bytes]) -> None:
    """Write each `path: data` atomically, all or nothing: every temp file is written and fsync'd before the first
    rename, and on any failure the temp files are removed and no target is touched. An OSError names the
    target (the user's path), not the temp file."""
    staged: list[tuple[str, Path]] = []
    try:
        for target, data in files.items():
            path = Path(target)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            except OSError as err:
                raise OSError(err.errno, err.strerror, str(path)) from None
            staged.append((tmp, path))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, FILE_MODE)
            except OSError as err:
                raise OSError(err.errno, err.strerror, str(path)) from None
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    for folder in {path.parent for _, path in staged}:
        fsync_dir(folder)
