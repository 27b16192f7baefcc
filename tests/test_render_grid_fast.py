"""The CPU grid (`render.grid_parts`, drawn every frame) is byte for byte the device path's grid, for every norm,
sign, tile enlargement and partly filled last row."""

from __future__ import annotations

import pytest
import torch

from deepvis_app import render


@pytest.mark.parametrize("norm", ["layer", "channel"])
@pytest.mark.parametrize(("c", "h", "w", "min_tile"), [(384, 14, 14, 8), (7, 5, 3, 1), (10, 3, 3, 8), (1, 1, 1, 8),
                                                         (40, 28, 28, 1)])
@pytest.mark.parametrize("sign", ["signed", "non-negative", "all-zero"])
def test_cpu_grid_equals_the_device_path(norm, c, h, w, min_tile, sign) -> None:
    g = torch.Generator().manual_seed(c * 100 + h)
    maps = torch.randn(c, h, w, generator=g) * 3
    if sign == "non-negative":
        maps = maps.relu()
    elif sign == "all-zero":
        maps = torch.zeros(c, h, w)
    fast = render.grid_parts(maps, norm=norm, min_tile=min_tile)
    ref = render.grid_parts_device(maps, norm=norm, gamma=1.0, pad=1, aspect=1.0, min_tile=min_tile)
    assert fast.layout == ref.layout
    assert fast.image.dtype == torch.uint8 and torch.equal(fast.image, ref.image)
    assert torch.equal(fast.stats, ref.stats)


def test_borders_stay_zero_and_tiles_sit_in_their_cells() -> None:
    """3 channels of 2x2 on a 2x2 grid: hand-placed tiles, the empty fourth cell and every border at 0."""
    maps = torch.tensor([[[0.0, 1.0], [2.0, 4.0]], [[4.0, 4.0], [4.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]]])
    grid = render.grid_parts(maps, norm="layer").image
    assert grid.shape == (7, 7)
    assert grid[0].tolist() == [0] * 7 and grid[:, 0].tolist() == [0] * 7 and grid[3].tolist() == [0] * 7
    assert grid[1:3, 1:3].tolist() == [[1, 64], [128, 255]]  # 254 * v / 4 + 1, rounded half to even
    assert grid[1:3, 4:6].tolist() == [[255, 255], [255, 255]]
    assert grid[4:6, 1:3].tolist() == [[1, 1], [1, 128]]
    assert grid[4:6, 4:6].tolist() == [[0, 0], [0, 0]]  # no fourth channel
