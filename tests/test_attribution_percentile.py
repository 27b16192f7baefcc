"""The live views' brightness scale: the 99.5th percentile of the positive magnitudes, as torch.quantile with
linear interpolation, on the CPU's top-k path and the device path alike (sparse maps, ties, all zeros)."""

from __future__ import annotations

import pytest
import torch

from deepvis_app.attribution.views import percentile_sorted, view_tensor


def _maps():
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(1, 3, 64, 64, generator=g)
    sparse = torch.zeros(1, 3, 64, 64)
    sparse[:, :, 20:31, 20:31] = torch.randn(1, 3, 11, 11, generator=g)  # an 11 px receptive field
    ties = torch.zeros(1, 1, 32, 32)
    ties[..., :4, :] = 2.0
    return {"dense": dense, "sparse": sparse, "ties": ties, "zeros": torch.zeros(1, 3, 16, 16)}


@pytest.mark.parametrize("name", ["dense", "sparse", "ties", "zeros"])
@pytest.mark.parametrize("percentile", [99.5, 90.0, 50.0])
def test_the_scale_is_the_quantile_of_the_positive_magnitudes(name, percentile) -> None:
    a = _maps()[name]
    mags = a.abs().flatten()
    pos = mags[mags > 0].double()
    want = float(torch.quantile(pos, percentile / 100)) if len(pos) else 0.0
    assert float(percentile_sorted(mags, percentile)) == pytest.approx(want, rel=1e-6, abs=1e-12)
    # the CPU path of the live view: its 'raw' image is 0.5 + x / (2 scale), clipped
    img = view_tensor(a, "raw", percentile=percentile).float() / 255
    if len(pos):
        ref = (0.5 + a[0] / (2 * want)).clamp(0, 1).permute(1, 2, 0)
        ref = ref.expand(*ref.shape[:2], 3) if ref.shape[-1] == 1 else ref
        assert torch.allclose(img, ref, atol=1 / 255 + 1e-6)
    else:
        assert torch.all((img - 0.5).abs() <= 1 / 255)
