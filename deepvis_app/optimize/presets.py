"""Named settings for activation maximization: the published recipes plus our tuned default.

Every field can also be overridden per call (`optimize(..., lr=0.1, blur_every=2)`), so presets are
starting points, not modes. `settings_dict()` is what goes into the cache key and JSON reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..errors import DeepVisError


@dataclass(frozen=True)
class Preset:
    """How to optimize. Units: image pixels in [0, 1]; percentiles in 0..100.

    param/decorrelate/init_std/fft_decay: parameterization (see `param.py`; the Fourier spectrum is scaled
    by 1/f^fft_decay). optimizer: "adam", or "sgd" = gradient ascent with the gradient normalized by its
    mean absolute value (so `lr` is a step in pixel units for any model). transforms: "none" | "light" |
    "standard" (Lucid) | "strong". l2 / tv: penalty weights (Simonyan's L2 from the mean image; total
    variation). decay, blur_every, blur_width, norm_pct, contrib_pct: Yosinski et al. 2015's regularizers,
    applied to the plain pixel parameterization only.
    """

    param: str = "fourier"
    decorrelate: bool = True
    init_std: float = 0.01
    fft_decay: float = 1.0
    optimizer: str = "adam"
    lr: float = 0.05
    steps: int = 256
    size: int = 128
    transforms: str = "standard"
    l2: float = 0.0
    tv: float = 0.0
    decay: float = 0.0
    blur_every: int = 0
    blur_width: float = 0.0
    norm_pct: float = 0.0
    contrib_pct: float = 0.0
    description: str = ""

    def settings_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("description")
        return d


def _yosinski(decay: float, blur_width: float, blur_every: int, norm_pct: float, contrib_pct: float,
              note: str, lr: float = 0.01) -> Preset:
    # Pixel space, plain (normalized) gradient ascent, no transforms: the 2015 toolbox setting.
    return Preset(param="pixel", decorrelate=False, init_std=0.0, optimizer="sgd", lr=lr, steps=256,
                  size=224, transforms="none", decay=decay, blur_every=blur_every, blur_width=blur_width,
                  norm_pct=norm_pct, contrib_pct=contrib_pct,
                  description=f"Yosinski et al. 2015, Table 1 row: {note}")


PRESETS: dict[str, Preset] = {
    "default": Preset(
        param="fourier", decorrelate=True, optimizer="adam", lr=0.05, steps=256, size=128,
        transforms="strong", tv=10.0,
        description="Fourier (1/f) + decorrelated colour + strong transforms + TV 10, Adam lr 0.05, "
                    "256 steps, 128 px"),
    "lucid": Preset(
        param="fourier", decorrelate=True, optimizer="adam", lr=0.05, steps=512, size=128,
        transforms="standard",
        description="Lucid/Lucent's render_vis defaults: Fourier + decorrelated colour, standard transforms, "
                    "Adam lr 0.05, 512 steps, 128 px"),
    "simonyan2013": Preset(
        param="pixel", decorrelate=False, init_std=0.0, optimizer="sgd", lr=0.01, steps=256, size=224,
        transforms="none", l2=0.1,
        description="Simonyan et al. 2013: gradient ascent from the zero (mean) image with an L2 penalty"),
    "yosinski1": _yosinski(0.0, 0.5, 4, 50, 0, "decay 0, blur 0.5 every 4, norm clip 50%, contrib clip 0%"),
    "yosinski2": _yosinski(0.3, 0.0, 0, 20, 0, "decay 0.3, no blur, norm clip 20%, contrib clip 0%"),
    "yosinski3": _yosinski(0.0001, 1.0, 4, 0, 0, "decay 0.0001, blur 1.0 every 4, no clipping"),
    "yosinski4": _yosinski(0.0, 0.5, 4, 0, 90, "decay 0, blur 0.5 every 4, contrib clip 90%"),
    "pixel": Preset(
        param="pixel", decorrelate=False, init_std=0.0, optimizer="sgd", lr=0.01, steps=256, size=224,
        transforms="none", description="unregularized gradient ascent on pixels (for comparison)"),
}


def get_preset(name: str | Preset, **overrides: Any) -> Preset:
    """A preset by name (or as given), with any fields overridden; None values are ignored."""
    if isinstance(name, Preset):
        preset = name
    else:
        try:
            preset = PRESETS[name]
        except KeyError:
            raise DeepVisError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None
    valid = {f.name for f in fields(Preset)}
    bad = [k for k in overrides if k not in valid]
    if bad:
        raise DeepVisError(f"unknown optimize setting {bad[0]!r}; settings: {', '.join(sorted(valid))}")
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})
