"""Top-activating images per unit: dataset scan, live top-k of frames, and the on-disk STORE they share.

GUI entry points: `TopKStore.open(path)` (reads the index only), `.entries(layer, unit)`, `.crop(...)`,
`.image(entry)`; `LiveTopK` for frames. The compute side imports no Qt.
"""

from .live import LiveTopK
from .running import RunningTopK, merge_candidates, spatial_max
from .store import Entry, TopKStore, crop_box

__all__ = ["Entry", "LiveTopK", "RunningTopK", "TopKStore", "crop_box", "merge_candidates", "spatial_max"]
