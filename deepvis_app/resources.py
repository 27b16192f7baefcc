"""Files that ship inside the package (curated model specs, demo photos, app icon, help text).

They live in `deepvis_app/models/` and `deepvis_app/assets/` so that a wheel carries them (the top-level
`models/` and `assets/` of the source tree are symlinks to these folders, for people browsing the repo).
Read through `importlib.resources`, never relative to the source tree.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

DEMO_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def _package_dir(name: str) -> Path:
    # Installed packages are plain folders (torch needs real files anyway), so a Traversable is a path.
    return Path(str(resources.files("deepvis_app").joinpath(name)))


def models_dir() -> Path:
    """Folder of the curated `*.toml` specs (`$DEEPVIS_MODELS` overrides it, e.g. for tests)."""
    override = os.environ.get("DEEPVIS_MODELS")
    return Path(override).expanduser() if override else _package_dir("models")


def asset_path(name: str) -> Path:
    """Path of a file in the package's assets folder (icon.png, help.txt, demo_<photo>.jpg)."""
    return _package_dir("assets") / name


def icon_path() -> Path:
    """The app icon (256x256 RGBA PNG), for `QApplication.setWindowIcon`."""
    return asset_path("icon.png")


def help_text() -> str:
    """The app's help text (keys and where to start), for the window's help overlay."""
    return asset_path("help.txt").read_text(encoding="utf-8")


def demo_photo(name: str) -> np.ndarray:
    """One of the demo photos (from scikit-image's sample data, saved as JPEG) as RGB uint8.

    Decoded here with OpenCV, not through `sources.read_image` (which imports this module for DEMO_PHOTOS): the
    shipped JPEGs are known-good, and resources stays a leaf of the import graph."""
    import cv2

    path = asset_path(f"demo_{name}.jpg")
    bgr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"demo photo missing or damaged in the package: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
