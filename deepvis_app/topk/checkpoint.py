"""Checkpoints of an interrupted scan: generations of per-rank files in the store's staging folder.

Every rank writes `checkpoint-g{G}-r{R}.pt` (atomically) with its running top-k, the images it finished and the
configuration it scans with. A resumed run reads the newest generation G from all its rank files, rank 0 folds
them into generation G+1, and the older generations are removed once G+1 exists, so a kill at any moment leaves
one whole generation to resume from. Checkpoints load with `weights_only=True`: they never unpickle code.
"""

from __future__ import annotations

import glob
import io
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..errors import ParamError
from ..fileio import atomic_write_bytes

START_OVER = "start over without resuming"


def checkpoint_path(staging: Path, generation: int, rank: int) -> Path:
    return staging / f"checkpoint-g{generation}-r{rank}.pt"


def checkpoints(staging: Path) -> tuple[int, list[Path]]:
    """The newest checkpoint generation in `staging` (-1 when none) and its per-rank files."""
    found: dict[int, list[Path]] = defaultdict(list)
    for p in glob.glob(str(staging / "checkpoint-g*-r*.pt")):
        name = Path(p).name
        try:
            gen = int(name.split("-")[1][1:])
        except (IndexError, ValueError):
            continue
        found[gen].append(Path(p))
    if not found:
        return -1, []
    gen = max(found)
    return gen, sorted(found[gen])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, config: dict[str, Any], staging: Path) -> dict[str, Any]:
    """A checkpoint written with this `config`; any other (unreadable, foreign, another configuration) is one
    `ParamError("resume", ...)` line saying what differs."""
    try:  # weights_only: a checkpoint never unpickles code
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise ParamError("resume", f"cannot continue: checkpoint {path} is unreadable ({type(err).__name__}); "
                                   f"{START_OVER}") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("config"), dict) or "states" not in ck:
        raise ParamError("resume", f"cannot continue: checkpoint {path} lacks its configuration; {START_OVER}")
    if ck["config"] != config:
        diff = [k for k in config if ck["config"].get(k) != config[k]]
        raise ParamError("resume", f"cannot continue: the interrupted scan in {staging} used a different "
                                   f"{', '.join(diff)}; {START_OVER}")
    return ck


def drop_older_generations(staging: Path, generation: int) -> None:
    """Remove every checkpoint file of a generation before `generation` (call once that one is complete)."""
    for old in glob.glob(str(staging / "checkpoint-g*-r*.pt")):
        if not Path(old).name.startswith(f"checkpoint-g{generation}-"):
            os.unlink(old)
