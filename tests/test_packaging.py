"""What a wheel needs to carry, checked without building one (scripts/check_wheel.sh builds and runs one).

The curated specs and the assets are package data read through importlib.resources; the top-level `models/`
and `assets/` of the source tree must show the very same files (they are symlinks into the package).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

from deepvis_app import resources, zoo
from deepvis_app.sources import DemoSource

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "deepvis_app"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_top_level_models_and_assets_are_the_package_files():
    for name in ("models", "assets"):
        top, inside = ROOT / name, PKG / name
        assert top.is_dir() and inside.is_dir()
        assert _files(top) == _files(inside), f"{name}/ differs from deepvis_app/{name}/"


def test_curated_specs_come_from_the_package(monkeypatch):
    monkeypatch.delenv("DEEPVIS_MODELS", raising=False)
    assert resources.models_dir().resolve() == (PKG / "models").resolve()
    names = zoo.available_models()
    assert "efficientnet_lite0" in names and len(names) == len(list((PKG / "models").glob("*.toml")))
    assert zoo.find_spec("efficientnet_lite0").parent.resolve() == (PKG / "models").resolve()


def test_package_data_globs_cover_every_shipped_file():
    """Every file in models/ and assets/ matches a package-data pattern, else a wheel silently lacks it."""
    import fnmatch

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["deepvis_app"]
    for folder in ("models", "assets"):
        for p in (PKG / folder).iterdir():
            rel = f"{folder}/{p.name}"
            assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), f"{rel} is not package data"


def test_runtime_dependencies_exclude_scikit_image():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any("scikit-image" in d for d in project["dependencies"])
    assert any("scikit-image" in d for d in project["optional-dependencies"]["dev"])
    assert "MIT" in (ROOT / "LICENSE").read_text() and project["license"] == "MIT"


def test_assets_are_real_images_and_text(photos):
    icon = resources.icon_path()
    import cv2

    rgba = cv2.imread(str(icon), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (256, 256, 4) and rgba[0, 0, 3] == 0 and rgba[128, 128, 3] == 255
    assert "u / o" in resources.help_text() and "quit" in resources.help_text()
    for name in resources.DEMO_PHOTOS:
        img = resources.demo_photo(name)
        ref = photos[name][..., :3]
        h, w = img.shape[:2]
        assert img.dtype == np.uint8 and max(h, w) <= 480
        # the JPEG is the scikit-image photo, shrunk: compare at the asset's size
        small = cv2.resize(ref, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        assert np.abs(small - img).mean() < 4.0, name


def test_demo_source_needs_no_scikit_image(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)  # `import skimage` now raises ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    src = DemoSource(size=(64, 48), fps=5)
    src.open()
    assert src.read().shape == (48, 64, 3) and src.loaded == 4
