"""A unit's rules backward fed by a traced forward: the frame's forward runs as one TorchScript graph, with no
autograd recording, and the backward program (`program`) reads its tensors from the graph's outputs.

Why: in the live window the worker's forward competes with the GUI thread for the GIL. The rules' eager forward
records autograd op by op from Python (`rules.RectifierMode` on every call, a node per op): beside the painting
GUI it ran ~15% slower than alone, and was what the window waited for with three views (docs/development.md).
The backward itself already runs as one compiled call (`program`); what it reads from the forward are the
frame's input, outputs of the model's own calls (rectifier outputs, conv inputs, max-pooling inputs and
switches) and constants (parameters, BN scales, folded weights, flipped kernels) -- so a forward that returns
those outputs is all it needs.

How: on a learning frame the eager rules forward runs with `Calls` numbering its top-level torch calls (the
model's own code) and holding their outputs. Each tensor of the frame's program is found among them by storage
(the last call that wrote it: in-place calls included), or is the input, or one of the constants; anything else
declines. Then the forward is traced once with `Calls` returning those outputs (max-pooling made to return its
switches too), and later frames run the graph (the GIL released once) and the program with the graph's tensors
(`Replay.run`). Checked where it is learned and again later (`learn(..., graph=)`): the calls must agree in
order, kind and shape, and the graph's tensors must equal the eager forward's (the same kernels run).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..devices import batch_threads
from ..errors import DeepVisError
from ..probe import Probe, resolve_calls
from . import fused
from .context import AttributionContext
from .program import Program, plan, seeded_grads

CONSTANT, INPUT = -1, -2  # a program tensor's source besides the graph's outputs (their indices, >= 0)
# how close the graph's tensors must be to the eager forward's, relative to each tensor's largest magnitude (the
# same kernels run: they are equal in practice; only float rounding of a fused or reordered op could differ);
# switches must be equal
TOLERANCE = 1e-4
# calls that return a tensor but are not the model's computation (a capture hook's detach), and queries that
# return tensors only while tracing (sizes)
_SKIP = frozenset((Tensor.detach, Tensor.detach_, Tensor.requires_grad_))
_QUERIES = frozenset(("__get__", "size", "dim", "numel", "stride", "__len__"))


class Calls(TorchFunctionMode):
    """Numbers a forward's top-level torch calls that return tensors and notes each one's name and output shapes;
    `hold=True` keeps every output (a learning frame), `keep` = [(call, output)] keeps those (the traced graph
    returns them). Max-pooling is run with its switches returned as a second output (the program reads them)."""

    def __init__(self, *, hold: bool = False, keep: Sequence[tuple[int, int]] = ()) -> None:
        super().__init__()
        self.signature: list[tuple[str, tuple]] = []
        self.outputs: list[tuple] = []
        self.hold = hold
        self._keep: dict[int, list[tuple[int, int]]] = {}
        for m, (call, out) in enumerate(keep):
            self._keep.setdefault(call, []).append((m, out))
        self.kept: list[Tensor | None] = [None] * len(keep)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if func in _SKIP or name in _QUERIES:
            return func(*args, **kwargs)
        returns = kwargs.get("return_indices", args[6] if len(args) > 6 else False)
        if func is F.max_pool2d and not returns:
            outs = F.max_pool2d_with_indices(*args[:6], **{k: v for k, v in kwargs.items() if k != "return_indices"})
            result = outs[0]
        else:
            result = func(*args, **kwargs)
            outs = tuple(result) if isinstance(result, tuple | list) else (result,)
        if not any(isinstance(t, Tensor) for t in outs):
            return result
        call = len(self.signature)
        self.signature.append((name, tuple(tuple(t.shape) if isinstance(t, Tensor) else None for t in outs)))
        if self.hold:
            self.outputs.append(outs)
        for m, out in self._keep.get(call, ()):
            self.kept[m] = outs[out]
        return result


class _Traced(nn.Module):
    """`net` returning (logits, *activations of `layers`, *the calls' outputs `keep` names): what the tracer
    records. `calls`: each layer's module call, as the eager frame's `Capture(example=)` resolved it, so both
    forwards capture (and copy) the same calls."""

    def __init__(self, net: nn.Module, calls: dict[str, tuple[str, int]], keep: list[tuple[int, int]]) -> None:
        super().__init__()
        self.net, self.keep = net, keep
        self.names = {layer: f"{name}@{call}" for layer, (name, call) in calls.items()}
        self.signature: list[tuple[str, tuple]] = []

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        with Probe(self.net, list(self.names.values())) as probe:
            with Calls(keep=self.keep) as calls:
                out = self.net(x)
            self.signature = calls.signature
            if not isinstance(out, Tensor) or any(t is None for t in calls.kept):
                raise TypeError("the forward returns no tensor, or a call to keep did not run")
            return (out, *[probe[name] for name in self.names.values()], *calls.kept)


def _key(t: Tensor) -> tuple:
    """What makes two tensors the same memory seen the same way."""
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _close(a: Tensor, b: Tensor) -> bool:
    a, b = a.detach(), b.detach()
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    scale = float(b.abs().amax()) if b.numel() else 0.0
    return not b.numel() or float((a - b).abs().amax()) <= TOLERANCE * scale


class Replay:
    """One unit layer's backward program and the traced forward that feeds it (`learn` makes it)."""

    def __init__(self, graph: torch.jit.ScriptModule, layers: tuple[str, ...], template: Program,
                 sources: list[list[int]], keep: list[tuple[int, int]], deconv_static: bool) -> None:
        self.graph, self.layers, self.template, self.sources = graph, layers, template, sources
        self.keep, self.deconv_static = keep, deconv_static

    def outputs(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], list[Tensor]]:
        """The graph on `x`: (logits, {layer: activation}, the program's tensors in `keep`'s order)."""
        with torch.no_grad():
            outs = self.graph(x.detach())
        n = len(self.layers)
        return outs[0], dict(zip(self.layers, outs[1:1 + n], strict=True)), list(outs[1 + n:])

    def program(self, x: Tensor, kept: list[Tensor]) -> Program:
        """The template program with this frame's tensors."""
        t = self.template
        tensors = [[const if src == CONSTANT else x.detach() if src == INPUT else kept[src]
                    for const, src in zip(step, srcs, strict=True)]
                   for step, srcs in zip(t.tensors, self.sources, strict=True)]
        return Program(t.kinds, t.outs, tensors, t.ints, t.uppers, t.end)

    def run(self, x: Tensor, unit_layer: str) -> tuple[Tensor, dict[str, Tensor], ReplayedRules]:
        """(logits, {layer: activation}, the context explaining units of `unit_layer` on this frame); the unit
        layer's activation is a leaf that requires grad (the objective is differentiated up to it only)."""
        logits, acts, kept = self.outputs(x)
        acts[unit_layer] = acts[unit_layer].detach().requires_grad_(True)
        return logits, acts, ReplayedRules(self.program(x, kept), self.deconv_static)

    def same_plan(self, other: Replay) -> bool:
        t, o = self.template, other.template
        return (self.sources, self.keep, t.kinds, t.outs, t.ints, t.uppers, t.end) == \
               (other.sources, other.keep, o.kinds, o.outs, o.ints, o.uppers, o.end)


def learn(net: nn.Module, x: Tensor, layers: Sequence[str], calls: Calls, activation: Tensor,
          acts: dict[str, Tensor], *, deconv_static: bool,
          graph: torch.jit.ScriptModule | None = None) -> tuple[Replay | None, str]:
    """The replay of the frame just run eagerly (inside `AttributionContext` with `calls` entered last, holding):
    x its input, `activation` the unit layer's output with its graph, `acts` the layers it captured (bare names of
    a reused module meaning its last call, as `Capture(example=)` takes them). graph: one learned before (a check:
    its tensors must equal this frame's); None traces one. Returns (replay, "") or (None, why not)."""
    try:
        return _learn(net, x, tuple(layers), calls, activation, acts, deconv_static, graph)
    except Exception as exc:  # noqa: BLE001 - whatever fails here, the eager forward serves, as before
        return None, f"learning failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})"


def _learn(net: nn.Module, x: Tensor, layers: tuple[str, ...], calls: Calls, activation: Tensor,
           acts: dict[str, Tensor], deconv_static: bool,
           graph: torch.jit.ScriptModule | None) -> tuple[Replay | None, str]:
    program = plan(activation.grad_fn, x) if activation.grad_fn is not None else None
    if program is None:
        return None, "a node between the unit's layer and the input is not one the program runs"
    writers: dict[tuple, tuple[int, int]] = {}
    for call, outs in enumerate(calls.outputs):
        for out, t in enumerate(outs):
            if isinstance(t, Tensor):
                writers[_key(t)] = (call, out)  # the last writer wins: in-place calls rewrite a tensor's memory
    # constants by storage: a view of one (a BN scale shaped to broadcast) is one too
    constants = {t.untyped_storage().data_ptr()
                 for t in (*net.parameters(), *net.buffers(), *fused.cached_tensors())}
    keep: list[tuple[int, int]] = []
    sources: list[list[int]] = []
    template: list[list[Tensor | None]] = []
    x_key = _key(x)
    for step in program.tensors:
        srcs, kept = [], []
        for t in step:
            k = _key(t)
            if k == x_key:
                srcs.append(INPUT)
                kept.append(None)
            elif k in writers:
                if writers[k] not in keep:
                    keep.append(writers[k])
                srcs.append(keep.index(writers[k]))
                kept.append(None)
            elif t.untyped_storage().data_ptr() in constants:
                srcs.append(CONSTANT)
                kept.append(t)
            else:
                return None, f"the program reads a tensor of shape {tuple(t.shape)} made by no call of the forward"
        sources.append(srcs)
        template.append(kept)
    if graph is None:
        traced = _Traced(net, resolve_calls(net, layers, x), keep)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # TracerWarnings and the API's deprecation notice
                graph = torch.jit.trace(traced, x.detach(), check_trace=False)
        except Exception as exc:  # noqa: BLE001 - a model the tracer cannot record runs eagerly, as before
            return None, f"the forward cannot be traced ({type(exc).__name__})"
        n = min(len(traced.signature), len(calls.signature))
        if traced.signature[:n] != calls.signature[:n]:
            return None, "the traced forward's calls differ from the eager forward's"
    replay = Replay(graph, layers, Program(program.kinds, program.outs, template, program.ints, program.uppers,
                                           program.end), sources, keep, deconv_static)
    _logits, got, kept = replay.outputs(x)
    want = [calls.outputs[c][o] for c, o in keep]
    if len(kept) != len(want) or not all(_close(a, b) for a, b in zip(kept, want, strict=True)):
        return None, "the traced forward's tensors differ from the eager forward's"
    if not all(_close(got[name], acts[name].detach()) for name in layers if name in acts):
        return None, "the traced forward's activations differ from the eager forward's"
    return replay, ""


class ReplayedRules(AttributionContext):
    """An `AttributionContext` of a replayed frame: no graph was recorded (the unit layer's activation is a leaf),
    and `explain` runs the program with the frame's tensors. Methods that need autograd's graph (Grad-CAM, a
    class target) are not asked of it (the live pipeline replays only the rules' views)."""

    def __init__(self, program: Program, deconv_static: bool) -> None:
        super().__init__(None, compile_backward=True)
        self.program = program
        self._state.deconv_static = deconv_static

    def __enter__(self) -> AttributionContext:
        raise DeepVisError("a replayed frame records no forward")

    def compiled_grads(self, objective: Tensor, start: Tensor, x: Tensor,
                       rules: Sequence[str]) -> dict[str, Tensor] | None:
        rules = list(dict.fromkeys(rules))
        with self._state.lock, batch_threads(x.device) if len(rules) >= 2 else nullcontext():
            self._state.chain_steps = []
            got = seeded_grads(self.program, objective, start, x, rules, self._state.chain_steps)
        self.compiled_walks += 1
        return got

    def grad(self, objective: Tensor, inputs: Tensor | Sequence[Tensor], rule: str = "gradient", *,
             retain_graph: bool = True) -> tuple[Tensor, ...]:
        raise DeepVisError("a replayed frame has no recorded graph: only the rules' views are replayed")
