"""Where an atlas is built and how it is published: atomic, resumable, locked.

A build writes into `SITE.partial/` beside `--out` (every file atomically, so any file there is whole) and records
what it builds from in `SITE.partial/.atlas/job.json`. A killed build leaves that folder; the next build with the
same fingerprint (same store, layers and settings) keeps the files already written and does only the rest. When
the site is complete it replaces `SITE`: the old site moves to `SITE.old-PID`, the new one takes its name, the old
one is removed. A kill between those two renames leaves no `SITE` but a whole `SITE.old-PID`, which the next build
(or `recover`) puts back: a reader finds the old site, the new one, or none -- never a half page.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..errors import ParamError
from ..fileio import atomic_write_bytes, atomic_write_json, fsync_dir, fsync_files
from ..fileio import output_lock as fileio_output_lock

MARKER = "atlas.json"  # at the root of every published site: what it was built from (and that it is an atlas)
GENERATOR = "deepvis-atlas"
JOB_DIR = ".atlas"  # inside the staging folder only: the job record and cached statistics


def staging_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def is_site(path: Path) -> bool:
    """A folder this module published (its marker names the generator)."""
    try:
        data = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("generator") == GENERATOR


def check_target(out: Path) -> None:
    """Refuse to replace anything but an atlas or an empty folder: a typo in `out` must never delete user files."""
    if out.exists() and not out.is_dir():
        raise ParamError("out", f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_site(out):
        raise ParamError("out", f"{out} exists and is not an atlas (no {MARKER}); choose another folder")
    if not out.parent.is_dir():
        raise ParamError("out", f"the folder {out.parent} does not exist")


def output_lock(out: Path) -> contextlib.AbstractContextManager[None]:
    """Hold `SITE.lock` for the whole build: a second build into the same folder stops with one line."""
    return fileio_output_lock(out, what="atlas build")


def recover(out: Path) -> None:
    """Put back a site stranded at `SITE.old-PID` by a build killed while publishing; drop other leftovers."""
    pattern = re.compile(re.escape(out.name) + r"\.old-\d+")
    for old in sorted(out.parent.iterdir()):
        if not pattern.fullmatch(old.name) or not old.is_dir():
            continue
        if not out.exists() and is_site(old):
            os.replace(old, out)
            fsync_dir(out.parent)
        else:
            shutil.rmtree(old, ignore_errors=True)


class Job:
    """The staging folder of one build: `keep` says whether a file is already there (from a killed run with the
    same fingerprint), `write` puts bytes in place atomically and remembers the path for the final fsync."""

    def __init__(self, out: Path, fingerprint: dict[str, Any]) -> None:
        self.out = out
        self.root = staging_path(out)
        self.fingerprint = fingerprint
        self.written: list[Path] = []
        self.kept = 0
        self._done: set[str] = set()
        self._folders: set[Path] = set()
        record = self.root / JOB_DIR / "job.json"
        try:
            old = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        self.resumed = self.root.is_dir() and old == fingerprint
        if self.root.exists() and not self.resumed:
            shutil.rmtree(self.root)
        (self.root / JOB_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_json(record, fingerprint)
        for dirpath, _dirs, files in os.walk(self.root):  # temp files of writes a kill cut short
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(dirpath, name))

    def path(self, rel: str) -> Path:
        return self.root / rel

    def has(self, rel: str) -> bool:
        """True when this build or a resumed one (then counted as kept) already wrote `rel`."""
        if rel in self._done:
            return True
        if self.resumed and (self.root / rel).is_file():
            self._done.add(rel)
            self.kept += 1
            return True
        return False

    def write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        atomic_write_bytes(path, data, fsync=False)  # one fsync pass over everything before publishing
        self.written.append(path)
        self._done.add(rel)

    def write_text(self, rel: str, text: str) -> None:
        self.write(rel, text.encode("utf-8"))

    def cache_dir(self) -> Path:
        """A place for what the build computes once and may reuse after a kill (statistics)."""
        return self.root / JOB_DIR

    def publish(self, marker: dict[str, Any]) -> None:
        """Write the marker, make everything durable, and swap the staging folder into `out`."""
        atomic_write_json(self.root / MARKER, marker)
        shutil.rmtree(self.root / JOB_DIR, ignore_errors=True)
        fsync_files(self.written)
        fsync_dir(self.root)
        out = self.out
        check_target(out)
        old = None
        if out.exists():
            old = out.with_name(f"{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            fsync_dir(out.parent)
            kill_point("publish")
        os.replace(self.root, out)
        fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def kill_point(name: str) -> None:
    """Test hook: with DEEPVIS_ATLAS_KILL_AT=name the build stops dead here (os._exit), as a SIGKILL would."""
    if os.environ.get("DEEPVIS_ATLAS_KILL_AT") == name:
        os._exit(137)


def tree_size(root: Path) -> tuple[int, int]:
    """(bytes, files) of everything under `root`."""
    total = count = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(dirpath, name))
                count += 1
    return total, count
