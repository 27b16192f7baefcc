"""Top-activating images per unit: dataset scan, live top-k of frames, and the on-disk STORE they share.

GUI entry points: `TopKStore.open(path)` (reads the index only), `.entries(layer, unit)`, `.crop(...)`,
`.fitted(entry)`; `iter_render_unit(store, vm, layer, unit)` renders a unit's deconv / guided crops of a lazy
store in a background thread (yields `RenderedCrop`s, writes them into the store); `LiveTopK` for frames.
The compute side imports no Qt.
"""

from .crops import RenderedCrop, iter_render_unit, render_unit
from .live import LiveTopK
from .running import RunningTopK, merge_candidates, spatial_max
from .store import Entry, TopKStore, crop_box

__all__ = ["Entry", "LiveTopK", "RenderedCrop", "RunningTopK", "TopKStore", "crop_box", "iter_render_unit",
           "merge_candidates", "render_unit", "spatial_max"]
