"""A 2-D map of codes (openTSNE by default, UMAP optional), new points placed into it, nearest neighbours.

Codes are compared by cosine (their direction, not their norm: a brighter photo of the same thing has a larger
code of about the same direction), so they are L2-normalised first, then reduced to 50 dimensions by PCA (which
keeps nearly all of the neighbourhood structure and makes the neighbour search fast), and t-SNE lays them
out (openTSNE: Barnes-Hut below 10,000 points, FFT-accelerated above; PCA initialisation, so a run is
deterministic for a seed).

Placing a new code: `locate` finds its k nearest codes (cosine, over the full codes) and puts it at the
coordinate-wise median of their map positions, which is openTSNE's own "median" initialisation for new points;
it needs nothing but the codes and coordinates, so it also works for a map loaded from disk, in well under a
millisecond per frame. `transform(..., optimize=True)` additionally runs openTSNE's transform optimisation
(only for a map fitted in this session).
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeepVisError, ParamError
from ..fileio import atomic_write_bytes

METHODS = ("tsne", "umap")
UMAP_HINT = "UMAP is optional: install it with pip install 'deepvis[umap]' (or pip install umap-learn)"
MAP_FILE = "embedding.npz"


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def _pca(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components [d, D]) of an exact PCA (deterministic; no fitted sklearn object to keep)."""
    mean = x.mean(axis=0)
    d = min(dims, x.shape[0] - 1, x.shape[1])
    xc = x - mean
    if len(x) > 2 * x.shape[1]:
        # Many rows: the D x D covariance's eigenvectors (one gemm + a small eigh; a full SVD of 10,000 x 1280
        # took ~20 s on this CPU, this ~1 s).
        _, v = np.linalg.eigh((xc.T @ xc).astype(np.float64))
        vt = v[:, ::-1].T
    else:
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:d]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])  # a fixed sign per component
    return mean.astype(np.float32), (comps * signs[:, None]).astype(np.float32)


@dataclass
class EmbeddingMap:
    """Codes and their 2-D positions. xy float32 [N, 2]; units: the L2-normalised codes [N, D];
    settings: every parameter of the method (saved with the map)."""

    xy: np.ndarray
    units: np.ndarray
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    _model: Any = field(default=None, repr=False)
    _pca_mean: np.ndarray | None = field(default=None, repr=False)
    _pca_comps: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.xy)

    # ------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, codes: np.ndarray, *, method: str = "tsne", perplexity: float = 30.0, seed: int = 0,
            pca_dims: int = 50, n_iter: int = 500, n_jobs: int | None = None, n_neighbors: int = 15,
            min_dist: float = 0.1) -> EmbeddingMap:
        """Lay out `codes` [N, D] in 2-D. t-SNE's perplexity is capped at (N - 1) / 3 (its neighbour count must
        fit in the set); the value used is in `settings`. UMAP uses n_neighbors / min_dist."""
        if method not in METHODS:
            raise ParamError("method", f"{method!r} is unknown; use tsne or umap")
        codes = np.asarray(codes, dtype=np.float32)
        if codes.ndim != 2:
            raise DeepVisError(f"codes must be a 2-D array [N, D], got shape {codes.shape}")
        n = len(codes)
        if n < 5:
            raise DeepVisError(f"a map needs at least 5 images, got {n}")
        if not np.isfinite(codes).all():
            raise DeepVisError("the codes contain NaN or infinity")
        if not (perplexity > 0 and np.isfinite(perplexity)):
            raise ParamError("perplexity", f"must be a finite number above 0, got {perplexity}")
        if not 0 <= seed < 2**32:
            raise ParamError("seed", f"must be between 0 and 2^32 - 1, got {seed}")
        t0 = time.perf_counter()
        units = unit_rows(codes)
        if float(np.ptp(units, axis=0).max()) == 0.0:
            raise DeepVisError(f"the codes of all {n} images point the same way (all zero: a dead layer?), so "
                               "there is nothing to lay out; choose another layer")
        mean, comps = _pca(units, pca_dims)
        x = (units - mean) @ comps.T
        # Threads pay off only for large maps (for a few hundred points their start-up cost dominates).
        jobs = n_jobs or (1 if n < 2000 else max(1, min(8, os.cpu_count() or 1)))
        settings: dict[str, Any] = {"method": method, "seed": seed, "n": n, "code_dims": codes.shape[1],
                                    "preprocess": "L2-normalise, PCA", "pca_dims": int(comps.shape[0])}
        if method == "tsne":
            import openTSNE

            p = float(min(perplexity, (n - 1) / 3))
            # FFT interpolation has a fixed grid cost per step: Barnes-Hut is faster below 10,000 points
            # (openTSNE's own "auto" rule, made explicit so the settings say which one ran).
            gradient = "bh" if n < 10_000 else "fft"
            tsne = openTSNE.TSNE(n_components=2, perplexity=p, initialization="pca", metric="euclidean",
                                 n_iter=n_iter, negative_gradient_method=gradient, n_jobs=jobs, random_state=seed,
                                 verbose=False)
            model = tsne.fit(x)
            xy = np.asarray(model, dtype=np.float32)
            settings.update(library=f"openTSNE {openTSNE.__version__}", perplexity=p, perplexity_asked=perplexity,
                            initialization="pca", metric="euclidean on L2-normalised PCA codes (~cosine)",
                            n_iter=n_iter, early_exaggeration_iter=250, negative_gradient_method=gradient,
                            learning_rate="auto", n_jobs=jobs)
        else:
            try:
                import umap
            except ImportError:
                raise DeepVisError(UMAP_HINT) from None
            k = int(min(n_neighbors, n - 1))
            model = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, metric="euclidean",
                              random_state=seed)
            xy = np.asarray(model.fit_transform(x), dtype=np.float32)
            settings.update(library=f"umap-learn {getattr(umap, '__version__', '?')}", n_neighbors=k,
                            min_dist=min_dist, metric="euclidean on L2-normalised PCA codes (~cosine)")
        settings["seconds"] = round(time.perf_counter() - t0, 3)
        return cls(xy=xy, units=units, method=method, settings=settings, _model=model, _pca_mean=mean,
                   _pca_comps=comps)

    # ------------------------------------------------------------ queries

    def nearest(self, code: np.ndarray, k: int = 9, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices and cosine similarities of the k codes nearest to `code` [D] (most similar first); `exclude`
        leaves one index out (the query itself when it is in the map)."""
        q = unit_rows(np.asarray(code, dtype=np.float32).reshape(1, -1))[0]
        if q.shape[0] != self.units.shape[1]:
            raise DeepVisError(f"code has {q.shape[0]} numbers but the map's codes have {self.units.shape[1]} "
                               "(another layer or model?)")
        sims = self.units @ q
        if exclude is not None:
            sims[exclude] = -np.inf
        k = max(0, min(k, len(sims) - (exclude is not None)))
        idx = np.argpartition(-sims, k - 1)[:k] if 0 < k < len(sims) else np.arange(len(sims))[:k]
        idx = idx[np.lexsort((idx, -sims[idx]))]  # similarity desc, index asc on ties
        return idx, sims[idx]

    def locate(self, code: np.ndarray, k: int = 9, place_k: int = 10,
               exclude: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xy [2], neighbour indices [k], similarities [k]) of one new code: the live marker and its nearest
        images from one similarity pass."""
        idx, sims = self.nearest(code, max(k, place_k), exclude=exclude)
        return np.median(self.xy[idx[:place_k]], axis=0), idx[:k], sims[:k]

    def transform(self, codes: np.ndarray, *, optimize: bool = False, place_k: int = 10) -> np.ndarray:
        """Map positions [M, 2] of new codes [M, D]. optimize=False: median of the place_k nearest codes' positions
        (fast, works for loaded maps); True: openTSNE's / UMAP's own transform (a map fitted in this session)."""
        codes = np.asarray(codes, dtype=np.float32).reshape(-1, self.units.shape[1])
        if not optimize:
            return np.stack([self.locate(c, k=0, place_k=place_k)[0] for c in codes]).astype(np.float32)
        if self._model is None or self._pca_comps is None:
            raise DeepVisError("this map was loaded from disk: only the fast placement (optimize=False) is "
                               "available; fit the map again for the optimised transform")
        x = (unit_rows(codes) - self._pca_mean) @ self._pca_comps.T
        return np.asarray(self._model.transform(x), dtype=np.float32)

    # ------------------------------------------------------------ files

    def to_bytes(self, **extra: np.ndarray) -> bytes:
        """The map file's bytes (`save`); `extra` arrays are stored beside xy and settings."""
        import io

        buf = io.BytesIO()
        np.savez(buf, xy=self.xy, settings=np.array(json.dumps(self.settings)), **extra)
        return buf.getvalue()

    def save(self, path: str | os.PathLike, **extra: np.ndarray) -> None:
        atomic_write_bytes(path, self.to_bytes(**extra))

    @classmethod
    def load(cls, path: str | os.PathLike, codes: np.ndarray | None = None) -> EmbeddingMap:
        """A saved map: `path` is the map file or the `deepvis embed` output folder (codes from its codes.npz
        unless given)."""
        from .codes import CODES_FILE, Codes

        p = Path(path)
        folder = p if p.is_dir() else p.parent
        map_file = p / MAP_FILE if p.is_dir() else p
        try:
            with np.load(map_file, allow_pickle=False) as z:
                xy, settings = z["xy"], json.loads(str(z["settings"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise DeepVisError(f"{map_file}: not a map written by `deepvis embed` ({type(err).__name__})") from None
        if xy.dtype.kind != "f" or xy.ndim != 2 or xy.shape[1] != 2 or not np.isfinite(xy).all():
            raise DeepVisError(f"{map_file}: not a usable map: positions must be finite [N, 2], got {xy.dtype} "
                               f"{xy.shape}")
        if not isinstance(settings, dict):
            raise DeepVisError(f"{map_file}: not a usable map: its settings are damaged")
        if codes is None:
            codes = Codes.load(folder / CODES_FILE).codes
        if len(codes) != len(xy):
            raise DeepVisError(f"{map_file}: {len(xy)} positions but {len(codes)} codes")
        return cls(xy=xy.astype(np.float32), units=unit_rows(codes), method=settings.get("method", "?"),
                   settings=settings)


# ---------------------------------------------------------------- quality

def neighbour_purity(xy: np.ndarray, labels: np.ndarray, k: int = 10) -> tuple[float, float]:
    """(fraction of points whose k nearest map neighbours all share its label, mean fraction of same-label
    neighbours): how well the map keeps a known grouping together."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(xy)
    idx = nn.kneighbors(xy, return_distance=False)
    same = np.empty((len(xy), k), dtype=bool)
    for i, row in enumerate(idx):
        row = [j for j in row if j != i][:k]
        same[i] = labels[row] == labels[i]
    return float(same.all(axis=1).mean()), float(same.mean())
