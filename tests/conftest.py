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


@pytest.fixture(scope="session")
def lite0():
    from deepvis_app import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return {name: getattr(skimage.data, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")}


def write_rgb(path, rgb: np.ndarray) -> str:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return str(path)


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
