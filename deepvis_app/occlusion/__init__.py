"""Occlusion maps (Zeiler & Fergus 2014): slide a window over the image, record a class or unit score per position.

Exact and fast (see docs/occlusion.md): positions are batched, the forward stops at the target unit's layer, and
incremental inference runs each stage only on crops around the patch. Modules: `windows` (Captum's window
placement, fills), `targets` (ClassTarget / Unit scoring on any layer layout), `plan` (the incremental planner),
`engine` (the batched, incremental, self-checked engine), `api` (the public functions and `OcclusionMap`).
"""

from ..values import CLASS_SCORES as SCORES
from .api import OcclusionMap, iter_occlusion, naive_occlusion, occlusion_map, upsample_nearest
from .targets import Target, TargetLike, as_target, target_label
from .windows import FILLS, fill_image, patch_positions, window_span

__all__ = ["FILLS", "SCORES", "OcclusionMap", "Target", "TargetLike", "as_target", "fill_image", "iter_occlusion",
           "naive_occlusion", "occlusion_map", "patch_positions", "target_label", "upsample_nearest", "window_span"]
