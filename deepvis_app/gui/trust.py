"""The live trust meter's arithmetic, Qt-free: is the heat map on screen about what the network uses, and does it
hold still while the camera does?

- Faithfulness (`measure`): deletion and insertion AUC (`evaluate.faithfulness.deletion_insertion`) of the map on
  its own frame, beside the same figures of a random map *of the same coarseness* (`random_heat` at the map's own
  cells, upsampled the same way). A pixel-level random map is no fair rival for a 7 x 7 CAM: deleting scattered
  pixels makes a noise pattern that fails the network by itself, so a random map would "win" deletion on every
  frame. `verdict` turns the four numbers into one sentence a student can read at a glance.
- Stability (`Stability`): Spearman's rank correlation between the maps of consecutive painted frames, counted
  only while consecutive input frames barely differ (a still camera): a map that jumps while nothing moves is
  noise, whatever it highlights.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..abort import Abort, aborted
from ..errors import DeepVisError

TRUST_STEPS = 10  # deletion / insertion intervals: 2 x 10 perturbed images per map (cheap enough for ~1 Hz)
TRUST_FILL = "blur"  # removed pixels become the blurred frame (RISE's insertion start)
TRUST_SEED = 0
STILL_GREY = 4.0  # mean |grey difference| between consecutive frames below which the camera counts as still
STABILITY_FRAMES = 10  # still frame pairs averaged
LOW_SCORE = 0.05  # below this class probability the curves are too flat to say anything


@dataclass(frozen=True)
class TrustFigures:
    """Deletion / insertion AUC of one map on one frame, and a random map's of the same resolution."""

    frame_id: int
    method: str
    layer: str
    cls: int
    score: float  # the class's probability on the intact frame (where deletion starts, insertion ends)
    deletion: float
    insertion: float
    deletion_random: float
    insertion_random: float
    cells: tuple[int, int]  # the map's (and the random map's) resolution


def measure(net, x, heat, cls: int, *, steps: int = TRUST_STEPS, fill: str = TRUST_FILL, seed: int = TRUST_SEED,
            abort: Abort = None) -> tuple[float, float, float, float, float]:
    """(score, deletion, insertion, random deletion, random insertion) of `heat` [1, h, w] for class `cls` on the
    model input `x` [1, 3, H, W]; the random map is `random_heat(heat, seed)`. `abort` is checked before each map."""
    import torch

    from ..evaluate.faithfulness import deletion_insertion, fill_for, random_heat

    heat = heat.to(x.device).float()
    classes = torch.tensor([cls], device=x.device)
    base = fill_for(x, fill)  # once for both maps
    if aborted(abort):
        raise DeepVisError("cancelled")
    curves = deletion_insertion(net, x, heat, classes, steps=steps, fill=base)
    if aborted(abort):
        raise DeepVisError("cancelled")
    chance = deletion_insertion(net, x, random_heat(heat, seed), classes, steps=steps, fill=base)
    return (float(curves.deletion[0, 0]), float(curves.deletion_auc[0]), float(curves.insertion_auc[0]),
            float(chance.deletion_auc[0]), float(chance.insertion_auc[0]))


def verdict(f: TrustFigures) -> tuple[str, str]:
    """(level, sentence): level is "good", "mixed", "bad" or "unsure". A figure counts as better than chance when it
    beats the random map's by a tenth of the class's probability (the curves' whole range)."""
    if f.score < LOW_SCORE:
        return "unsure", (f"the class's probability is only {f.score:.1%} on this frame: the curves are flat and "
                          "say little either way")
    margin = 0.1 * f.score
    ins = f.insertion - f.insertion_random > margin
    dele = f.deletion_random - f.deletion > margin
    if ins and dele:
        return "good", "the map finds what the network uses"
    if ins:
        return "mixed", ("partly: its pixels alone bring the class back, but blurring them hurts no more than "
                         "chance (the network also uses the rest)")
    if dele:
        return "mixed", ("partly: blurring its pixels hurts the class, but they alone do not bring it back (part "
                         "of the evidence lies elsewhere)")
    return "bad", "no better than a random map: do not read it as the network's reason on this frame"


def headline(f: TrustFigures) -> str:
    """One line of the four numbers, e.g. "insertion 0.71 vs random 0.18 · deletion 0.12 vs random 0.40"."""
    return (f"insertion {f.insertion:.2f} vs random {f.insertion_random:.2f} \u00b7 deletion {f.deletion:.2f} "
            f"vs random {f.deletion_random:.2f}")


def frame_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |grey difference| (0..255) of two RGB uint8 frames on every 4th pixel: cheap enough per frame."""
    if a.shape != b.shape:
        return 255.0
    ga = a[::4, ::4].astype(np.int16).sum(axis=2)
    gb = b[::4, ::4].astype(np.int16).sum(axis=2)
    return float(np.abs(ga - gb).mean() / 3.0)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps: `evaluate.sanity.spearman` (the figure `deepvis evaluate` reports)
    in numpy, so the GUI thread runs no torch op (ranks by position among ties, as that one)."""
    ra = np.argsort(np.argsort(a.ravel(), kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b.ravel(), kind="stable"), kind="stable").astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = float(np.linalg.norm(ra) * np.linalg.norm(rb))
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


class Stability:
    """Consecutive maps compared while the camera is still. `update` per painted frame (GUI thread: one frame
    difference on a 56 x 56 subsample and one rank correlation of two small maps)."""

    def __init__(self, frames: int = STABILITY_FRAMES, still: float = STILL_GREY) -> None:
        self.still = still
        self.values: deque[float] = deque(maxlen=frames)
        self.change = 0.0  # the last frame difference
        self.moving = False
        self._image: np.ndarray | None = None
        self._raw: np.ndarray | None = None
        self._key: tuple | None = None

    def reset(self) -> None:
        self.values.clear()
        self._image = self._raw = self._key = None
        self.moving = False

    def update(self, image: np.ndarray, raw: np.ndarray | None, key: tuple | None) -> None:
        """The newest frame and its map (None: no map); `key` names the map (method, layer, class): another map
        starts the count again."""
        if raw is None or key != self._key:
            self.values.clear()
        elif self._image is not None and self._raw is not None:
            self.change = frame_change(image, self._image)
            self.moving = self.change > self.still
            if self.moving:
                self.values.clear()
            elif raw.shape == self._raw.shape and image is not self._image:
                self.values.append(rank_correlation(raw, self._raw))
        self._image, self._raw, self._key = image, raw, key

    @property
    def value(self) -> float | None:
        """The mean rank correlation over the still frame pairs seen (None before the first)."""
        return float(np.mean(self.values)) if self.values else None

    def text(self) -> str:
        if self._key is None:
            return "stability: no map"
        if self.moving:
            return (f"stability: camera moving (frames differ by {self.change:.0f} grey levels): measured while "
                    f"it is still")
        v = self.value
        if v is None:
            return "stability: waiting for two still frames"
        n = len(self.values)
        word = "steady" if v >= 0.9 else "wobbly" if v >= 0.6 else "unstable: the map changes while the camera " \
                                                                    "does not"
        return f"stability {v:.2f} over {n} still frame{'s' if n != 1 else ''} (rank correlation): {word}"
