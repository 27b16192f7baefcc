"""Interventions: switch units off, clamp, scale or mean-replace them in a running network, and rank the units
that drive a class (docs/interventions.md).

- `spec`: the `Intervention` value (torch-free) and its written form `LAYER:CHANNELS[:MODE]`.
- `apply`: `Intervened`, the context manager that applies a list of interventions to forwards (one hook per
  module and call, `probe.Capture(modify=...)`; the live worker enters it per frame), `RecentMeans`, `layer_mean`.
- `rank`: channel rankings by activation x gradient and by the batched ablation drop (`Replay` reruns only the
  layers above the intervened one).

Importing this package (or `.spec`) does not load torch, so the app state and snapshots can hold interventions;
the torch parts load on first use of their names.
"""

from importlib import import_module

from .spec import MODES, Intervention, active, parse_all, parse_channels, parse_mode, title_note

_LAZY = {
    "Intervened": "apply", "RecentMeans": "apply", "layer_mean": "apply",
    "RANK_METHODS": "rank", "Ranking": "rank", "Replay": "rank", "class_scores": "rank", "iter_ablation": "rank",
    "rank_ablation": "rank", "rank_channels": "rank", "rank_gradxact": "rank",
}

__all__ = ["MODES", "Intervention", "active", "parse_all", "parse_channels", "parse_mode", "title_note", *_LAZY]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
