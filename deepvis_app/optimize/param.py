"""Image parameterizations: how the optimizer's variables become an RGB image in [0, 1].

- `PixelImage`: one variable per pixel, the image itself (Simonyan 2013, Yosinski 2015). Yosinski's
  regularizers (decay, blur, clipping) edit these pixels in place between steps, so they live here as
  `pixels` in *centred* units (image minus the dataset mean, 0 = the mean image).
- `FourierImage`: Lucid's spectrum parameterization with 1/f scaling: gradient steps are whitened so low
  frequencies move as easily as high ones, which removes most of the high-frequency noise that plain pixel
  ascent produces.
- `decorrelate=True` (either kind, Lucid-style): variables live in a decorrelated colour space (the square
  root of ImageNet's colour covariance) and a sigmoid maps them into [0, 1].
"""

from __future__ import annotations

import torch

# sqrt of ImageNet's RGB covariance (from Lucid); columns are the decorrelated colour axes.
COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                           [0.27, 0.00, -0.05],
                                           [0.27, -0.09, 0.03]])
_MAX_NORM = COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
COLOR_CORRELATION_NORMALIZED = COLOR_CORRELATION_SVD_SQRT / _MAX_NORM


def _decorrelated_to_rgb(t: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] decorrelated colour -> [N,3,H,W] correlated RGB (still unbounded)."""
    m = COLOR_CORRELATION_NORMALIZED.to(t.device, t.dtype)
    return torch.einsum("ij,njhw->nihw", m, t)


class ImageParam:
    """Base: `parameters()` for the optimizer, `image()` -> Tensor[N,3,H,W] in [0, 1]."""

    def parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def image(self) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self) -> None:
        """Keep variables valid after an optimizer step (default: nothing)."""


class PixelImage(ImageParam):
    """Raw pixels around `center` (the dataset mean in [0,1] units, shape [1,3,1,1]).

    Without decorrelation the image is `center + pixels`, clipped to [0, 1] after every step (what a PNG can
    hold). With decorrelation, `sigmoid(decorrelate(pixels))`, Lucid's pixel parameterization.
    """

    def __init__(self, batch: int, size: int, *, center: torch.Tensor, std: float, decorrelate: bool,
                 generator: torch.Generator, device: torch.device) -> None:
        self.decorrelate = decorrelate
        self.center = center.to(device)
        noise = torch.randn(batch, 3, size, size, generator=generator) * std
        self.pixels = noise.to(device).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.pixels]

    def image(self) -> torch.Tensor:
        if self.decorrelate:
            return torch.sigmoid(_decorrelated_to_rgb(self.pixels))
        return self.center + self.pixels

    @torch.no_grad()
    def after_step(self) -> None:
        if not self.decorrelate:
            self.pixels.copy_((self.center + self.pixels).clamp(0, 1) - self.center)


def fft_freqs(h: int, w: int) -> torch.Tensor:
    """Spatial frequency magnitude of each rfft2 coefficient, shape [h, w//2+1]."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(ImageParam):
    """Lucid's `fft_image`: a complex spectrum scaled by 1/f^decay_power, inverse-FFT'd to pixels."""

    def __init__(self, batch: int, size: int, *, std: float, decorrelate: bool, generator: torch.Generator,
                 device: torch.device, decay_power: float = 1.0) -> None:
        self.size = size
        self.decorrelate = decorrelate
        freqs = fft_freqs(size, size)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / size) ** decay_power
        self.scale = scale.to(device)  # with norm='ortho' this matches Lucid's sqrt(wh)-scaled irfft2d
        spectrum = torch.randn(batch, 3, *freqs.shape, 2, generator=generator) * std
        self.spectrum = spectrum.to(device).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def image(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        t = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho") / 4.0
        if self.decorrelate:
            t = _decorrelated_to_rgb(t)
        return torch.sigmoid(t)


def make_param(kind: str, batch: int, size: int, *, center: torch.Tensor, std: float, decorrelate: bool,
               generator: torch.Generator, device: torch.device, fft_decay: float = 1.0) -> ImageParam:
    if kind == "pixel":
        return PixelImage(batch, size, center=center, std=std, decorrelate=decorrelate, generator=generator,
                          device=device)
    if kind == "fourier":
        return FourierImage(batch, size, std=std, decorrelate=decorrelate, generator=generator, device=device,
                            decay_power=fft_decay)
    raise ValueError(f"unknown parameterization {kind!r} (pixel | fourier)")
