"""The live view's plain forward as one TorchScript graph on the CPU, once the shown layers hold still.

Why: in the window the GUI thread runs Python (painting) while the worker runs the network. An eager forward
hands the GIL back and takes it again around each of its ~150 ops, and whenever the GUI thread holds it, the
worker waits (up to the interpreter's switch interval) after every op. A traced graph runs every op in C++ with
the GIL released once per frame, so the worker no longer queues behind the GUI thread. Measured on 2 CPU cores
(one torch thread, EfficientNet-Lite0's channels-last copy capturing `_blocks.3`, medians of 60): eager 18.5 ms
alone and 26 ms beside a thread running Python 5-7 ms of every 35; the graph 14.7 ms and 16 ms. The window then
paints as fast as the headless pipeline runs (53 vs 49-55 fps, unpaced demo; 0.64x before: docs/development.md).

Rules:
- Only the plain forward (no unit explained by backprop, no interventions, no attention recorder: those need
  Python hooks on every frame) and only on the CPU.
- A layer set is traced after it has been shown for `STABLE_FRAMES` frames, so clicking through layers never
  waits for a trace -- the eager forward serves until then. The trace frame takes longer once (with the check:
  EfficientNet-Lite0 0.50 s, ResNet-18 0.26 s, DeiT-tiny 0.40 s on 2 cores); a set traced before is used at once.
- The traced graph is checked against the eager forward on the frame it was traced on (same outputs up to
  float rounding); a model that cannot be traced, or whose graph disagrees (data-dependent control flow), stays
  eager for that layer set. Every `RECHECK_EVERY` frames the eager forward runs again and is compared, so a
  branch taken differently later is caught too.
- At most `KEEP` graphs are kept (least recently used dropped); they share the model's parameters.

A frame that explains a unit needs the backprop rules' eager forward (a TorchFunctionMode: Python on every op)
up to the unit's layer only. So it can run split: the whole net as the graph (logits, grid) plus the eager forward
stopped at the unit's layer -- cheaper when that layer comes early (the eager part is short, and the rest of the
net no longer runs op by op through Python), dearer when it comes late (the early layers run twice).
`SplitChoice` times `TRIAL` frames of each way per unit and layers and keeps the faster, measured where it runs
(headless, or beside the painting window, where the eager ops also wait for the GIL), and times both again every
`RETRY_EVERY` frames. In the worker's two stages (`stages`) a split frame runs its graph in the second stage,
and the longer stage is what is timed.
"""

from __future__ import annotations

import statistics
import threading
import warnings
from collections import OrderedDict

import torch
from torch import nn

from ..probe import Probe

STABLE_FRAMES = 12
TRIAL = 8
# a choice is timed again after this many frames: it was made in the first seconds (warm-up, a window still laying
# itself out), and the load beside the worker changes (panels opened, other programs)
RETRY_EVERY = 500
RECHECK_EVERY = 300
KEEP = 4
# how close the graph's outputs must be to the eager forward's (relative to each output's largest magnitude):
# the same kernels run, so only a fused or reordered op could differ, by float rounding
TOLERANCE = 1e-4


class _Outputs(nn.Module):
    """`net` returning (logits, *activations of `layers`): the module the tracer records."""

    def __init__(self, net: nn.Module, layers: tuple[str, ...]) -> None:
        super().__init__()
        self.net = net
        self.layers = layers

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with Probe(self.net, self.layers) as probe:
            out = self.net(x)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"the model returns {type(out).__name__}, not a tensor")
            return (out, *[probe[layer] for layer in self.layers])


def _agree(ours: tuple[torch.Tensor, ...], theirs: tuple[torch.Tensor, ...]) -> bool:
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs, strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        scale = float(b.abs().amax()) if b.numel() else 0.0
        if b.numel() and float((a - b).abs().amax()) > TOLERANCE * max(scale, 1.0):
            return False
    return True


class TracedForward:
    """Traced graphs of one network, one per layer set; `run` returns None where the eager forward must run."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.graphs: OrderedDict[tuple[str, ...], torch.jit.ScriptModule] = OrderedDict()
        self.refused: set[tuple[str, ...]] = set()  # layer sets that cannot be traced or disagreed
        self._streak: tuple[tuple[str, ...], int] = ((), 0)  # (layer set, frames in a row)
        self._runs = 0
        self._lock = threading.Lock()  # the worker's two stages may both run graphs (`pipeline.stages`)

    def ready(self, layers: list[str]) -> bool:
        """Whether a graph of this layer set is made (a `run` now would not wait for a trace)."""
        key = tuple(layers)
        return key in self.graphs and key not in self.refused

    def run(self, x: torch.Tensor, layers: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """(logits, {layer: activation}) from the graph, or None (eager forward this frame)."""
        with self._lock:
            return self._run(x, layers)

    def _run(self, x: torch.Tensor, layers: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        key = tuple(layers)
        last, count = self._streak
        count = count + 1 if key == last else 1
        self._streak = (key, count)
        if key in self.refused or x.device.type != "cpu":
            return None
        graph = self.graphs.get(key)
        if graph is None:
            if count < STABLE_FRAMES:
                return None
            graph = self._trace(x, key)
            if graph is None:
                return None
        self.graphs.move_to_end(key)
        self._runs += 1
        with torch.inference_mode():
            outs = graph(x)
        if self._runs % RECHECK_EVERY == 0 and not _agree(outs, self._eager(x, key)):
            self._refuse(key)
            return None
        return outs[0], dict(zip(key, outs[1:], strict=True))

    def _eager(self, x: torch.Tensor, key: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            return _Outputs(self.net, key)(x)

    def _trace(self, x: torch.Tensor, key: tuple[str, ...]) -> torch.jit.ScriptModule | None:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # TracerWarnings and the API's deprecation notice
                graph = torch.jit.trace(_Outputs(self.net, key), x, check_trace=False)
            with torch.inference_mode():
                ok = _agree(graph(x), self._eager(x, key))
        except Exception:  # noqa: BLE001 - any model the tracer cannot record runs eagerly, as before
            ok, graph = False, None
        if not ok:
            self._refuse(key)
            return None
        self.graphs[key] = graph
        while len(self.graphs) > KEEP:
            self.graphs.popitem(last=False)
        return graph

    def _refuse(self, key: tuple[str, ...]) -> None:
        self.refused.add(key)
        self.graphs.pop(key, None)


class SplitChoice:
    """Per key (layers, unit layer, methods): run split or whole? Alternates until `TRIAL` frames of each are
    timed, then keeps the one with the lower median time: the forward's, or in the worker's two stages the longer
    stage's (what bounds the frame rate there; "split" then runs the graph in the second stage)."""

    def __init__(self) -> None:
        self.chosen: dict[tuple, bool] = {}  # key -> split?
        self._times: dict[tuple, tuple[list[float], list[float]]] = {}  # key -> (split times, whole times)
        self._used: dict[tuple, int] = {}  # key -> frames run the chosen way

    def wants(self, key: tuple) -> bool:
        """True: try the split forward this frame (it runs whole anyway while the graph is not ready)."""
        if key in self.chosen:
            used = self._used[key] = self._used.get(key, 0) + 1
            if used < RETRY_EVERY:
                return self.chosen[key]
            del self.chosen[key]  # time both ways again
            self._used[key] = 0
        split, whole = self._times.setdefault(key, ([], []))
        return len(split) <= len(whole)

    def record(self, key: tuple, split: bool, seconds: float) -> None:
        if key in self.chosen:
            return
        times = self._times.setdefault(key, ([], []))
        times[0 if split else 1].append(seconds)
        if min(len(t) for t in times) >= TRIAL:
            self.chosen[key] = statistics.median(times[0]) < statistics.median(times[1])
            del self._times[key]
