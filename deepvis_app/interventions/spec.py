"""What an intervention is, as a value: which layer, which channels, what is done to them, and whether it is on.

Torch-free and immutable, so the app state, snapshots, view titles and the command line can hold and print
interventions without the compute core. The written form is `LAYER:CHANNELS[:MODE][:off]`:

    _blocks.10:3,17            zero channels 3 and 17 of `_blocks.10`
    _blocks.10:0-7,40:scale:2  multiply channels 0..7 and 40 by 2
    layer1.0.relu@0:5:clamp:3  set channel 5 of the shared ReLU's first call to 3 at every position
    _blocks.10:3:mean          replace channel 3 by its mean (over recent frames, images or positions)
    _blocks.10:3:zero:off      the same intervention, switched off (kept in the list)

Modes: `zero`; `clamp:V` sets the unit to the value V at every position (as in "clamp a feature to V"; it is not
an upper bound); `scale:F` multiplies it by F; `mean` replaces it by a mean the caller provides
(`apply.Intervened(means=...)`). A channel is one unit of the layer as `layouts.as_maps` indexes it: maps of any
layout, the token grid of a token layer (extra tokens such as a ViT's class token are left alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from numbers import Integral

from ..errors import ParamError

MODES = ("zero", "clamp", "scale", "mean")
VALUED_MODES = ("clamp", "scale")  # the modes written with a number: clamp:V, scale:F
MAX_CHANNEL = 10**9


def parse_mode(text: str) -> tuple[str, float | None]:
    """`"zero"` -> ("zero", None); `"scale:2"` -> ("scale", 2.0); `"clamp:-1.5"` -> ("clamp", -1.5)."""
    kind, sep, number = text.strip().partition(":")
    if kind not in MODES:
        raise ParamError("mode", f"must be zero, mean, clamp:V or scale:F, got {text!r}")
    if kind not in VALUED_MODES:
        if sep:
            raise ParamError("mode", f"{kind} takes no value, got {text!r}")
        return kind, None
    if not sep or not number:
        raise ParamError("mode", f"{kind} needs a value, e.g. {kind}:2, got {text!r}")
    try:
        value = float(number)
    except ValueError:
        raise ParamError("mode", f"{kind}: expected a number after ':', got {number!r}") from None
    if not math.isfinite(value):
        raise ParamError("mode", f"{kind}: the value must be a finite number, got {number!r}")
    return kind, value


def number_text(value: float) -> str:
    """2.0 -> "2", 0.1 -> "0.1": the shortest text that reads back as the same float."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def mode_text(kind: str, value: float | None) -> str:
    """The written form of a mode: ("scale", 2.0) -> "scale:2", ("zero", None) -> "zero"."""
    return kind if value is None else f"{kind}:{number_text(value)}"


def parse_channels(text: str) -> tuple[int, ...]:
    """`"3,17"` -> (3, 17); ranges `"0-3,9"` -> (0, 1, 2, 3, 9); sorted, without repeats."""
    found: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ParamError("channels", f"must be channel numbers like 3,17 or ranges like 0-7, got {text!r}")
        a, b = int(lo), int(hi) if dash else int(lo)
        if b < a:
            raise ParamError("channels", f"range {part} goes backwards")
        if b > MAX_CHANNEL or b - a > 1_000_000:
            raise ParamError("channels", f"range {part} is too large")
        found.update(range(a, b + 1))
    return tuple(sorted(found))


def channels_text(channels: Iterable[int]) -> str:
    """(0, 1, 2, 3, 9) -> "0-3,9": runs of three or more as ranges."""
    out: list[str] = []
    run: list[int] = []
    for c in [*sorted(channels), None]:
        if run and (c is None or c != run[-1] + 1):
            out.append(f"{run[0]}-{run[-1]}" if len(run) >= 3 else ",".join(map(str, run)))
            run = []
        if c is not None:
            run.append(c)
    return ",".join(out)


@dataclass(frozen=True)
class Intervention:
    """Do `mode` to `channels` of `layer` (a probe name: `name` or `name@k` for one call of a reused module).

    `mode` is kept in its written form ("zero", "clamp:3", "scale:0.5", "mean"); `kind` and `value` read it.
    `enabled=False` keeps an intervention in a list without applying it (the live panel's toggle)."""

    layer: str
    channels: tuple[int, ...]
    mode: str = "zero"
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.layer or ":" in self.layer or self.layer != self.layer.strip():
            raise ParamError("layer", f"must be a layer name such as _blocks.10 or layer1.0.relu@0, got "
                                      f"{self.layer!r}")
        chans = tuple(self.channels)
        if not chans:
            raise ParamError("channels", "must name at least one channel")
        if any(isinstance(c, bool) or not isinstance(c, Integral) or not 0 <= c <= MAX_CHANNEL for c in chans):
            raise ParamError("channels", f"must be channel numbers 0 or more, got {list(chans)}")
        object.__setattr__(self, "channels", tuple(sorted({int(c) for c in chans})))
        object.__setattr__(self, "mode", mode_text(*parse_mode(self.mode)))

    @property
    def kind(self) -> str:
        """"zero", "clamp", "scale" or "mean"."""
        return self.mode.partition(":")[0]

    @property
    def value(self) -> float | None:
        """V of clamp:V, F of scale:F; None for zero and mean."""
        return parse_mode(self.mode)[1]

    @staticmethod
    def parse(text: str) -> Intervention:
        """`LAYER:CHANNELS[:MODE][:off]` (see the module docstring)."""
        parts = text.strip().split(":")
        enabled = True
        if len(parts) > 2 and parts[-1] == "off":
            enabled, parts = False, parts[:-1]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ParamError("intervention", f"must be LAYER:CHANNELS[:MODE] such as _blocks.10:3,17:zero, "
                                             f"got {text!r}")
        mode = ":".join(parts[2:]) or "zero"
        return Intervention(parts[0], parse_channels(parts[1]), mode, enabled)

    def __str__(self) -> str:
        text = f"{self.layer}:{channels_text(self.channels)}:{self.mode}"
        return text if self.enabled else text + ":off"

    def toggled(self, enabled: bool | None = None) -> Intervention:
        """This intervention switched on/off (flipped when `enabled` is None)."""
        return replace(self, enabled=not self.enabled if enabled is None else enabled)

    def with_mode(self, mode: str) -> Intervention:
        return replace(self, mode=mode)

    def with_channels(self, channels: Iterable[int]) -> Intervention:
        return replace(self, channels=tuple(channels))

    def label(self) -> str:
        """How a view title names it: "_blocks.10 3,17 zeroed", "_blocks.10 3 x2", "_blocks.10 3 =3", "... mean"."""
        kind, value = parse_mode(self.mode)
        if value is None:
            what = "zeroed" if kind == "zero" else "at mean"
        else:
            what = ("x" if kind == "scale" else "=") + number_text(value)
        return f"{self.layer} {channels_text(self.channels)} {what}"


def active(interventions: Iterable[Intervention]) -> list[Intervention]:
    """The enabled ones, in order (the order they are applied in when several touch the same layer call)."""
    return [iv for iv in interventions if iv.enabled]


def title_note(interventions: Iterable[Intervention]) -> str:
    """"" when none is on, else "[intervened: _blocks.10 3,17 zeroed; ...]" for every view title, so an
    intervened network is never mistaken for the real one."""
    on = active(interventions)
    return f"[intervened: {'; '.join(iv.label() for iv in on)}]" if on else ""


def parse_all(texts: Iterable[str]) -> list[Intervention]:
    """Several written interventions (e.g. from a snapshot or repeated command-line options)."""
    return [Intervention.parse(t) for t in texts]
