"""Which frames of an explained unit run replayed (`attribution.replay`): the traced forward feeding the compiled
backward program, no eager rules forward.

Rules (as `traced` for the plain forward):
- CPU only, the processor's private copy of the model, no per-frame hooks (attention recorder, interventions),
  and only the rules' views and the ERF (Grad-CAM and class targets need autograd's graph of the head).
- A (layers, unit layer) set is learned after it has been shown for `traced.STABLE_FRAMES` frames: that frame's
  eager forward runs with `replay.Calls` holding its calls, and the replay is learned and checked from it
  (EfficientNet-Lite0 0.36 s once, ResNet-18 0.21 s, VGG-16 0.55 s on 2 cores). A set that cannot be replayed
  is remembered with the reason (`refused`) and keeps the eager forward (split or whole).
- Every `traced.RECHECK_EVERY` replayed frames one frame runs eagerly again and the replay is checked against it
  (same program, same tensors); a disagreement refuses the set from then on.
- At most `traced.KEEP` replays are kept (least recently used dropped).
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn

from ..attribution.replay import Calls, Replay, ReplayedRules, learn
from .traced import KEEP, RECHECK_EVERY, STABLE_FRAMES

# the views a replayed frame can explain (they need only the rules' backward from the unit's layer)
REPLAYABLE = frozenset(("gradient", "deconv", "guided", "saliency", "input_x_gradient"))


class ReplayedForward:
    """Learned replays of one network, one per (layers, unit layer)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        # DEEPVIS_REPLAY=0: every explained frame runs the eager rules forward (to compare the two in the window)
        self.enabled = os.environ.get("DEEPVIS_REPLAY", "1") != "0"
        self.replays: OrderedDict[tuple, Replay] = OrderedDict()
        self.refused: dict[tuple, str] = {}  # key -> why it runs eagerly
        self.learned = 0  # replays learned (a re-check that passes does not count)
        self._streak: tuple[tuple, int] = ((), 0)
        self._runs = 0

    def run(self, x: torch.Tensor, layers: list[str], unit_layer: str) -> tuple[
            tuple[torch.Tensor, dict[str, torch.Tensor], ReplayedRules] | None, Calls | None]:
        """(logits, {layer: activation}, context) of the replayed frame, or None with a `Calls` to enter inside
        the eager rules forward when this frame learns or checks the replay (then call `learn`), else None."""
        key = (tuple(layers), unit_layer)
        last, count = self._streak
        count = count + 1 if key == last else 1
        self._streak = (key, count)
        if not self.enabled or key in self.refused or x.device.type != "cpu":
            return None, None
        replay = self.replays.get(key)
        if replay is None:
            return None, Calls(hold=True) if count >= STABLE_FRAMES else None
        self.replays.move_to_end(key)
        self._runs += 1
        if self._runs % RECHECK_EVERY == 0:
            return None, Calls(hold=True)
        try:
            return replay.run(x, unit_layer), None
        except Exception as exc:  # noqa: BLE001 - a graph that fails on a frame: the eager forward from now on
            self.refused[key] = f"the replay failed ({type(exc).__name__})"
            self.replays.pop(key, None)
            return None, None

    def learn(self, x: torch.Tensor, layers: list[str], unit_layer: str, calls: Calls,
              acts: dict[str, torch.Tensor], deconv_static: bool) -> None:
        """Learn the replay of the eager frame just run with `calls` (x its input, requiring grad; `acts` its
        layers' activations, the unit layer's with its graph), or check the one learned against it."""
        key = (tuple(layers), unit_layer)
        old = self.replays.get(key)
        replay, why = learn(self.net, x, layers, calls, acts[unit_layer], acts, deconv_static=deconv_static,
                            graph=old.graph if old is not None else None)
        if replay is not None and old is not None and not replay.same_plan(old):
            replay, why = None, "the program changed since it was learned"
        if replay is None:
            self.refused[key] = why
            self.replays.pop(key, None)
            return
        if old is None:
            self.learned += 1
        self.replays[key] = replay
        while len(self.replays) > KEEP:
            self.replays.popitem(last=False)
