"""Interventions: switch units off, clamp, scale or mean-replace them in a running network, and rank the units
that drive a class (docs/interventions.md).

- `spec`: the `Intervention` value (torch-free) and its written form `LAYER:CHANNELS[:MODE]`.
- `apply`: `Intervened`, the context manager that applies a list of interventions to forwards (one hook per
  module and call; the live worker enters it per frame), `RecentMeans`, `layer_mean`, `LayerHooks`.
- `rank`: channel rankings by activation x gradient and by the batched ablation drop (`Replay` reruns only the
  layers above the intervened one).
"""

from .apply import Intervened, LayerHooks, RecentMeans, layer_mean
from .rank import (
    RANK_METHODS,
    Ranking,
    Replay,
    class_scores,
    iter_ablation,
    rank_ablation,
    rank_channels,
    rank_gradxact,
)
from .spec import MODES, Intervention, active, parse_channels, parse_mode, title_note

__all__ = [
    "MODES", "RANK_METHODS", "Intervened", "Intervention", "LayerHooks", "Ranking", "RecentMeans", "Replay",
    "active", "class_scores", "iter_ablation", "layer_mean", "parse_channels", "parse_mode", "rank_ablation",
    "rank_channels", "rank_gradxact", "title_note",
]
