"""What the network finds similar: codes of images, a 2-D map of them (t-SNE / UMAP), nearest neighbours.

`codes`: extraction (batched, resumable, torchrun-sharded); `maps`: `EmbeddingMap` (fit, locate / transform a
new code, nearest by cosine); `pictures`: thumbnails at their positions and snapped to a grid; `job`: the whole
`deepvis embed` run writing its files. No Qt anywhere: the app's Embedding panel calls these from a thread.
"""

from .codes import Codes, CodesProgress, CodeTap, code_of_image, extract_codes, iter_codes, resolve_code_layer
from .job import EmbedProgress, embed_outputs, iter_embed, load_result
from .maps import EmbeddingMap, neighbour_purity
from .pictures import grid_picture, scatter_picture, snap_to_grid

__all__ = ["CodeTap", "Codes", "CodesProgress", "EmbedProgress", "EmbeddingMap", "code_of_image", "embed_outputs",
           "extract_codes", "grid_picture", "iter_codes", "iter_embed", "load_result", "neighbour_purity",
           "resolve_code_layer", "scatter_picture", "snap_to_grid"]
