"""Ranking a layer's channels for a class in the background, for the interventions panel: the job (on the slot's
private copy of the *real* network, one frame), what the ranking is called on screen, and the strip's tiles.

The ablation ranking reuses its `Replay` (the layers below the layer, run once) when the same frame and layer are
ranked again for another class; the job thread of the slot is the only one that reads or writes it (jobs of one
slot never overlap)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..pipeline import FrameResult
from ..values import ClassTarget
from .jobs import Jobs
from .labels import layer_label, layer_title
from .widgets.intervene_views import RankedTile

RANK_BY = {"act \u00d7 grad": "gradxact", "ablation": "ablation"}  # the box's words -> the core's method
ABLATION_BATCH = 32


class RankRunner:
    """Starts and cancels the ranking job of one slot (a new ranking replaces a running one)."""

    def __init__(self, jobs: Jobs, slot: str) -> None:
        self.jobs, self.slot = jobs, slot
        self._replay: tuple | None = None  # ((model, frame, layer, net id), x, Replay)

    def start(self, load: Callable, res: FrameResult, model: str, layer: str, cls: int, by: str, *,
              on_partial: Callable, on_done: Callable, on_error: Callable[[str], None]) -> None:
        """Rank `layer`'s channels for class `cls` on the frame of `res` by `by` ("gradxact": the logit's
        activation x gradient; "ablation": the probability lost per zeroed channel, yielded batch by batch as
        (done, total, partial ranking)). `load` returns the slot's model copy."""
        key = (model, res.frame_id, layer)
        cached = self._replay
        image = res.image

        def work(abort):
            from ..interventions import Replay, iter_ablation, rank_gradxact

            vm = load()
            hit = cached is not None and cached[0] == (*key, id(vm.net))
            x = cached[1] if hit else vm.preprocess.to_tensor(image)
            info = vm.info(layer)
            if by == "gradxact":
                return rank_gradxact(vm.net, x, layer, ClassTarget(cls, "logit"), info)
            replay = cached[2] if hit else Replay(vm.net, x, layer, info)
            self._replay = ((*key, id(vm.net)), x, replay)
            ranking = None
            for done, total, ranking in iter_ablation(vm.net, x, layer, ClassTarget(cls), info,
                                                      batch=ABLATION_BATCH, replay=replay):
                if abort.is_set():
                    return ranking
                yield done, total, ranking
            return ranking

        self.jobs.start(self.slot, work, on_yield=on_partial, on_done=on_done, on_error=on_error)

    def cancel(self) -> None:
        self.jobs.cancel(self.slot)

    def forget(self) -> None:
        """The model changed: nothing of the old one is kept."""
        self.cancel()
        self._replay = None


def describe(ranking, vm, progress: tuple[int, int] | None) -> tuple[str, str]:
    """(one line for the panel, the tooltip that says how it was computed) of a ranking."""
    cats = vm.categories
    cls = ranking.target.index
    name = cats[cls] if 0 <= cls < len(cats) else str(cls)
    what = ("activation \u00d7 gradient (logit)" if ranking.by == "gradxact" else
            f"probability lost when zeroed alone (p = {ranking.base:.3g} without)")
    done = f", {progress[0]}/{progress[1]} so far" if progress is not None else ""
    title = layer_title(vm, ranking.layer) or ranking.layer
    how = ("activation x gradient of the class logit, summed over the layer's positions" if ranking.by == "gradxact"
           else f"the class probability of the real network minus that with the channel alone zeroed; {ranking.note}")
    tip = (f"channels of {layer_label(vm, ranking.layer)}, best first, computed on the real network (no "
           f"intervention) for the frame shown beside: {how}. Click a tile: select its unit (its top-k and "
           f"optimized image appear).")
    return f"{title} for <b>{name}</b> by {what}{done}", tip


def ranked_tiles(ranking, res: FrameResult | None, changed: set[tuple[str, int]], lut_for: Callable[[bool], np.ndarray],
                 limit: int) -> list[RankedTile]:
    """The best `limit` channels as tiles, each with its current activation tile when `res` shows the ranked
    layer (cropped from the live grid, coloured as the grid: cheap), marked when an active intervention
    (`changed`: (layer, channel) pairs) changes it."""
    grid = res.grid if res is not None and res.layer == ranking.layer else None
    lut = lut_for(grid.signed) if grid is not None else None
    items = []
    for c in ranking.order()[:limit]:
        img = None
        if grid is not None and c < grid.layout.channels:
            y, x = grid.layout.tile_origin(c)
            img = lut[grid.image[y:y + grid.layout.tile_h, x:x + grid.layout.tile_w]]
        items.append(RankedTile(c, ranking.score_of(c), img, (ranking.layer, c) in changed))
    return items
