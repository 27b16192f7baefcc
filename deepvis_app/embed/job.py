"""The files of `deepvis embed`: map, coordinates CSV, the two pictures and the settings, all written atomically.

OUT/codes.npz        paths, codes, top-1 class and probability, thumbnails (from `codes`)
OUT/embedding.npz    xy [N, 2], grid cells [N, 2] and the settings JSON (`EmbeddingMap.load(OUT)` reads it back)
OUT/embedding.csv    path, x, y, grid_row, grid_col, class index, class name, probability
OUT/map.png          thumbnails at their positions
OUT/grid.png         the same snapped to a full grid
OUT/embedding.json   exact settings (model, layer, method and its parameters), counts, timings, file names

The map and everything drawn from it are made in memory first and then written together (`outputs.write_files`),
so a run that fails leaves the folder as it was. `output_locked` keeps two runs out of one folder.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParamError
from ..fileio import encode_png
from ..outputs import write_files
from .codes import CODES_FILE, REPORT_FILE, Codes
from .maps import MAP_FILE, EmbeddingMap
from .pictures import grid_picture, scatter_picture, snap_to_grid

CSV_FILE = "embedding.csv"
PICTURES = ("map.png", "grid.png")
OUTPUT_FILES = (CODES_FILE, MAP_FILE, CSV_FILE, *PICTURES, REPORT_FILE)


@contextlib.contextmanager
def output_locked(out: str | os.PathLike) -> Iterator[None]:
    """Hold `OUT.lock` (the scan's flock) while writing OUT: a second run into the same folder is one line, not two
    runs mixing their files. The kernel drops a flock when its holder dies, so a killed run never blocks the next.
    """
    from ..fileio import output_lock

    if not Path(out).expanduser().parent.is_dir():
        raise ParamError("out", f"{out}: the folder {Path(out).expanduser().parent} does not exist")
    with output_lock(out):
        yield


def embed_outputs(codes: Codes, out: str | os.PathLike, *, method: str = "tsne", perplexity: float = 30.0,
                  seed: int = 0, pictures: bool = True, exact_limit: int = 2000, n_jobs: int | None = None,
                  with_codes: bool = False) -> tuple[dict[str, Any], EmbeddingMap]:
    """Fit the map of `codes` and write every output file into `out` (with_codes: `codes.npz` too), all made
    before the first is written; returns (report, map)."""
    out = Path(out)
    emap = EmbeddingMap.fit(codes.codes, method=method, perplexity=perplexity, seed=seed, n_jobs=n_jobs)
    t0 = time.perf_counter()
    cells, cols, rows, snap = snap_to_grid(emap.xy, exact_limit=exact_limit)
    snap_s = time.perf_counter() - t0
    files: dict[Path, bytes] = {out / MAP_FILE: emap.to_bytes(cells=cells.astype(np.int32))}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "x", "y", "grid_row", "grid_col", "class_index", "class", "probability"])
    for i, path in enumerate(codes.paths):
        w.writerow([path, f"{emap.xy[i, 0]:.5f}", f"{emap.xy[i, 1]:.5f}", int(cells[i, 0]), int(cells[i, 1]),
                    int(codes.pred[i]), codes.label(i), f"{float(codes.prob[i]):.4f}"])
    files[out / CSV_FILE] = buf.getvalue().encode("utf-8")
    names = {"codes": CODES_FILE, "map": MAP_FILE, "csv": CSV_FILE}
    drawn = None
    if pictures and codes.thumbs is not None:
        scatter, drawn = scatter_picture(emap.xy, codes.thumbs, seed=seed)
        files[out / PICTURES[0]] = encode_png(scatter)
        files[out / PICTURES[1]] = encode_png(grid_picture(cells, codes.thumbs, cols, rows))
        names.update(map_picture=PICTURES[0], grid_picture=PICTURES[1])
    report = {"images": len(codes), "unreadable": len(codes.bad), "code_layer": codes.layer,
              "code_dims": int(codes.codes.shape[1]), "extraction": codes.settings, "embedding": emap.settings,
              "grid": {"cols": cols, "rows": rows, "snap": snap, "seconds": round(snap_s, 3)},
              "thumbnails_drawn_in_map": drawn, "files": names,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    files[out / REPORT_FILE] = json.dumps(report, indent=1, ensure_ascii=False).encode("utf-8")
    if with_codes:
        files[out / CODES_FILE] = codes.to_bytes()
    out.mkdir(parents=True, exist_ok=True)
    write_files(files)
    return report, emap


@dataclass
class EmbedProgress:
    """One step of `iter_embed`: stage "codes" (done/total images), "map" (fitting started; no progress inside
    the fit) or "done" (report, codes and map set)."""

    stage: str
    done: int = 0
    total: int = 0
    report: dict[str, Any] | None = None
    codes: Codes | None = None
    map: EmbeddingMap | None = None


def iter_embed(vm: Any, data: Any, out: str | os.PathLike, *, method: str = "tsne", perplexity: float = 30.0,
               seed: int = 0, pictures: bool = True, abort: Any = None, **extract: Any) -> Iterator[EmbedProgress]:
    """The whole `deepvis embed` as a job for the app's thread: codes (progress per batch, `abort` between
    batches; resumable with resume=True), then the map and its files, holding `output_locked(out)` throughout.
    Ends without "done" when aborted."""
    from .codes import iter_codes

    with output_locked(out):
        codes = None
        for p in iter_codes(vm, data, out, abort=abort, **extract):
            yield EmbedProgress("codes", p.done, p.total)
            if p.finished:
                codes = p.result
        if codes is None:
            return
        yield EmbedProgress("map", len(codes), len(codes))
        report, emap = embed_outputs(codes, out, method=method, perplexity=perplexity, seed=seed,
                                     pictures=pictures)
    yield EmbedProgress("done", len(codes), len(codes), report=report, codes=codes, map=emap)


def load_result(out: str | os.PathLike) -> tuple[Codes, EmbeddingMap]:
    """(codes, map) of a finished `deepvis embed` output folder, for the app's Embedding panel."""
    codes = Codes.load(Path(out) / CODES_FILE)
    return codes, EmbeddingMap.load(out, codes=codes.codes)
