"""Karpathy-style pictures of a map: thumbnails at their positions, and the same snapped to a full grid.

The scatter picture sizes its thumbnails to the number of points and skips a thumbnail whose spot is already
taken, so 100,000 points give a readable picture of a few thousand thumbnails instead of an ink blot. The grid
picture puts every point in a cell of a cols x rows grid: an optimal assignment (scipy's linear_sum_assignment
on squared distances) up to `exact_limit` (2,000) points, above that a fast approximate snap (rows by y, then x within
each row), and cells shrink so the picture stays below `max_side` pixels.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DeepVisError


def normalize_xy(xy: np.ndarray) -> np.ndarray:
    """Positions scaled to [0, 1] on each axis (a constant axis maps to 0.5)."""
    xy = np.asarray(xy, dtype=np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    out = (xy - lo) / span
    out[:, hi <= lo] = 0.5
    return out


def grid_shape(n: int, aspect: float = 1.0) -> tuple[int, int]:
    """(cols, rows) of the smallest near-square grid holding n cells."""
    cols = max(1, math.ceil(math.sqrt(n * aspect)))
    return cols, max(1, math.ceil(n / cols))


def snap_to_grid(xy: np.ndarray, cols: int | None = None, rows: int | None = None,
                 exact_limit: int = 2000) -> tuple[np.ndarray, int, int, str]:
    """Cells (row, col) [N, 2] of every point, each cell used at most once, plus (cols, rows, method).
    Row 0 is the top (largest y), matching `scatter_picture`."""
    n = len(xy)
    if n == 0:
        raise DeepVisError("no points to snap")
    if cols is None or rows is None:
        cols, rows = grid_shape(n)
    if cols * rows < n:
        raise DeepVisError(f"a {cols}x{rows} grid cannot hold {n} points")
    p = normalize_xy(xy)
    p[:, 1] = 1.0 - p[:, 1]  # row 0 is the top of the picture: the largest y, as in the scatter picture
    if n <= exact_limit:
        from scipy.optimize import linear_sum_assignment
        from scipy.spatial.distance import cdist

        r, c = np.divmod(np.arange(cols * rows), cols)
        centres = np.stack([(c + 0.5) / cols, (r + 0.5) / rows], axis=1)
        rows_i, cells = linear_sum_assignment(cdist(p, centres, "sqeuclidean"))
        out = np.zeros((n, 2), dtype=np.int64)
        out[rows_i] = np.stack([r[cells], c[cells]], axis=1)
        return out, cols, rows, "linear_sum_assignment"
    out = np.zeros((n, 2), dtype=np.int64)
    by_y = np.lexsort((p[:, 0], p[:, 1]))
    # Spread the points over all rows (the last rows may hold one fewer), then order each row by x.
    per_row = np.full(rows, n // rows)
    per_row[: n % rows] += 1
    start = 0
    for r_i, cnt in enumerate(per_row):
        members = by_y[start:start + cnt]
        start += cnt
        members = members[np.lexsort((members, p[members, 0]))]
        # Columns spread across the full width when a row is not full.
        cols_i = np.floor((np.arange(cnt) + 0.5) * cols / max(cnt, 1)).astype(np.int64)
        out[members] = np.stack([np.full(cnt, r_i), cols_i], axis=1)
    return out, cols, rows, "sorted rows (approximate)"


def _resize_all(thumbs: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if thumbs.shape[1] == size:
        return thumbs
    return np.stack([cv2.resize(t, (size, size), interpolation=cv2.INTER_AREA) for t in thumbs])


def grid_picture(cells: np.ndarray, thumbs: np.ndarray, cols: int, rows: int, *, cell: int | None = None,
                 max_side: int = 4096, background: int = 255) -> np.ndarray:
    """Every thumbnail in its grid cell (cell side: the thumbnail size, smaller when the grid would exceed
    `max_side`)."""
    t = thumbs.shape[1]
    cell = int(cell or max(1, min(t, max_side // max(cols, rows))))
    small = _resize_all(thumbs, cell)
    out = np.full((rows * cell, cols * cell, 3), background, dtype=np.uint8)
    for (r, c), img in zip(cells, small, strict=True):
        out[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = img
    return out


def scatter_picture(xy: np.ndarray, thumbs: np.ndarray, *, size: int | None = None, thumb: int | None = None,
                    background: int = 255, seed: int = 0) -> tuple[np.ndarray, int]:
    """Thumbnails at their map positions; returns (picture, number drawn).

    Thumbnail side: about 1.2 x the mean spacing of the points (at most the stored size, at least 6 px); the
    canvas side grows with sqrt(N) up to 4096. Points are visited in a seeded random order and a thumbnail is
    drawn only where its centre cell (one thumbnail wide) is still free, so dense regions show one image per
    spot instead of thousands stacked up.
    """
    n = len(xy)
    t_full = thumbs.shape[1]
    if size is None:
        size = int(min(4096, max(512, t_full * math.sqrt(n) * 2.2)))
    if thumb is None:
        thumb = int(min(t_full, max(6, 1.2 * size / math.sqrt(max(n, 1)))))
    small = thumbs if thumb == t_full else None
    inner = size - thumb
    pos = np.rint(normalize_xy(xy) * inner).astype(np.int64)
    pos[:, 1] = inner - pos[:, 1]  # y up, as in a plot
    out = np.full((size, size, 3), background, dtype=np.uint8)
    taken = np.zeros((size // thumb + 2, size // thumb + 2), dtype=bool)
    order = np.random.default_rng(seed).permutation(n)
    drawn = 0
    import cv2

    for i in order:
        x, y = pos[i]
        cy, cx = (y + thumb // 2) // thumb, (x + thumb // 2) // thumb
        if taken[cy, cx]:
            continue
        taken[cy, cx] = True
        img = small[i] if small is not None else cv2.resize(thumbs[i], (thumb, thumb), interpolation=cv2.INTER_AREA)
        out[y:y + thumb, x:x + thumb] = img
        drawn += 1
    return out, drawn
