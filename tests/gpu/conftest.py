"""tests/gpu: CUDA against the CPU, on a machine with a GPU (`.venv/bin/python -m pytest -m cuda tests/gpu`).
Every test here carries the `cuda` mark and skips cleanly where `torch.cuda.is_available()` is False."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def frames() -> list[np.ndarray]:
    """64 different RGB uint8 224x224 images (seeded noise with a bright square that moves): the race on the
    pinned buffers would show one image's pixels in another's tensor."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(64):
        img = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        y, x = 3 * i, (7 * i) % 200
        img[y:y + 24, x:x + 24] = 255
        out.append(img)
    return out
