"""A model atlas: a static web site of a top-k store (index, a page per layer, a page per unit at
`LAYER/UNIT.html`) that opens from the file system with no server. See docs/atlas.md."""

from .site import AtlasProgress, AtlasReport, build_atlas

__all__ = ["AtlasProgress", "AtlasReport", "build_atlas"]
