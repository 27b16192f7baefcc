"""Shared fixtures: the default model (loaded once), real photos, small video/image files on disk."""

from __future__ import annotations

import os

os.environ.setdefault("DEEPVIS_OFFLINE", "1")  # tests never download weights
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

from helpers import tiny_conv_net, write_rgb  # noqa: E402,F401 - shared plumbing (tests/helpers.py)


@pytest.fixture(scope="session")
def lite0():
    from deepvis_app import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return {name: getattr(skimage.data, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")}


@pytest.fixture
def chelsea_png(tmp_path, photos) -> str:
    return write_rgb(tmp_path / "chelsea.png", photos["chelsea"])


@pytest.fixture
def video_file(tmp_path, photos) -> str:
    """A 2-second 10 fps MJPG video alternating two photos."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for i in range(20):
        img = photos["chelsea"] if (i // 5) % 2 == 0 else photos["coffee"]
        writer.write(cv2.cvtColor(cv2.resize(img, (160, 120)), cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


@pytest.fixture
def one_thread():
    """torch on one thread for this test (the image-optimization tests' tiny nets: as the per-image commands run,
    and identical run to run); the session's setting comes back afterwards, so no other module is affected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def net() -> torch.nn.Module:
    """The tiny conv net of the image-optimization tests (a module may override `net` with its own)."""
    return tiny_conv_net()


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """DEEPVIS_CACHE in the test's own folder: nothing read from or left in the user's cache."""
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def cat_on_rocket(photos) -> np.ndarray:
    """Chelsea's face (112 px) in the middle of a 224 px rocket photo: a cat with known whereabouts."""
    from deepvis_app.sources import fit_image

    img = fit_image(photos["rocket"], 224, "center").copy()
    img[56:168, 56:168] = cv2.resize(fit_image(photos["chelsea"], 224, "center"), (112, 112),
                                     interpolation=cv2.INTER_AREA)
    return img


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The top-k tests' tiny conv net as a spec-loaded VisModel (tests/test_topk.py writes its module)."""
    import sys

    from test_topk import ensure_rf_module, write_tinynet

    from deepvis_app.zoo import load_model

    ensure_rf_module()
    spec = write_tinynet(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tinynet_topk", None)
    return load_model(spec, weights="default", device="cpu")
