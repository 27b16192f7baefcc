"""Several rules' backward passes as one: the views stacked along the batch.

Gradient, deconvnet and guided backprop of one unit differ only at the rectifiers; every conv, BatchNorm, pooling
and residual sum between the unit and the input is the same linear map for all three. One backward per rule runs
each transposed convolution three times on a batch of one, which the CPU's convolution kernels handle poorly
(measured 2.5-3x the time of one call on the three stacked: ResNet-18's 3x3 convs, 2 threads). So this walker
runs the recorded graph itself, once, with the rules' gradients stacked along the batch: the fused nodes of
`fused` and `rules` (conv chains, rectifiers, inference BatchNorm) take the stack at once, each rectifier applying
its own rule to its own slice; residual sums and clones pass it through; any other node is called once per view
(its own backward, exact). The results equal one `torch.autograd.grad` per rule (tests compare them).

Used by `AttributionContext.explain` when it needs two or more rules; returns None (the caller then runs one
backward per rule) for graphs it does not walk: a node with several outputs, an input that is not reached.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import fused, kernels
from .graph import add_alpha, leaf_node, needed_nodes
from .rules import RuleState

# Nodes of ours whose backward reads only their ctx (`rules`, `fused`): run on the stacked views at once.
_RULED = {"_RectifierBackward", "_ChainRectifierBackward", "_ChainBatchNormBackward", "_EvalBatchNormBackward"}
# Builtin nodes that pass the gradient on unchanged (AddBackward0 with alpha 1 to both sides).
_PASS = {"CloneBackward0", "AliasBackward0"}


class _Views:
    """One gradient for V views: stacked [V*N, ...] (what the ruled nodes take) or a list of V tensors (what a
    node called once per view takes); converted lazily, so runs of ruled nodes never split or copy."""

    __slots__ = ("stack", "parts", "count")

    def __init__(self, count: int, stack: Tensor | None = None, parts: list[Tensor] | None = None) -> None:
        self.count, self.stack, self.parts = count, stack, parts

    def stacked(self) -> Tensor:
        if self.stack is None:
            box = _union_box(self.parts)
            self.stack = torch.cat(self.parts, 0)
            if box is not None:
                fused.carry_box_to(self.stack, box)
        return self.stack

    def split(self) -> list[Tensor]:
        if self.parts is None:
            self.parts = list(self.stack.chunk(self.count, 0))
        return self.parts

    def plus(self, other: _Views) -> _Views:
        if self.stack is not None and other.stack is not None:
            return _Views(self.count, stack=self.stack + other.stack)
        return _Views(self.count, parts=[a + b for a, b in zip(self.split(), other.split(), strict=True)])


def _union_box(parts: Sequence[Tensor]) -> tuple[int, int, int, int] | None:
    boxes = [fused.known_box(p) for p in parts]
    if not boxes or any(b is None for b in boxes):
        return None
    return (min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes))


@torch.no_grad()  # as autograd's engine runs backward (no create_graph): no graph of the gradients
def stacked_grads(target: Tensor, x: Tensor, rules: Sequence[str], state: RuleState) -> dict[str, Tensor] | None:
    """d target / d x under each rule in `rules`, from one walk of target's graph; None when the graph holds
    something this walker does not take (the caller runs one backward per rule then)."""
    root = target.grad_fn
    if root is None or len(rules) < 2:
        return None
    end = x.grad_fn if x.grad_fn is not None else leaf_node(root, x)
    if end is None:
        return None
    order = needed_nodes(root, end)
    if order is None:
        return None
    views = len(rules)
    pending: dict[object, _Views] = {root: _Views(views, parts=[torch.ones_like(target)] * views)}
    state.dense = False
    state.chain_steps = []
    for node in order:
        grad = pending.pop(node, None)
        if node is end:
            if grad is None:
                return None
            parts = grad.split()
            return {rule: parts[i] for i, rule in enumerate(rules)}
        if grad is None:
            continue  # every path into it was pruned (no view reaches x through it)
        outs = _backward(node, grad, rules)
        if outs is None:
            return None
        for (nxt, _slot), g in zip(node.next_functions, outs, strict=False):
            if nxt is None or g is None:
                continue
            have = pending.get(nxt)
            pending[nxt] = g if have is None else have.plus(g)
    return None


def _backward(node, grad: _Views, rules: Sequence[str]) -> list[_Views | None] | None:
    """The node's input gradients for every view."""
    kind = type(node).__name__
    views = len(rules)
    if kind in _RULED:
        g = grad.stacked()
        if kind == "_EvalBatchNormBackward":
            res = fused.carry_box(g, g * node.scale)
        elif kind == "_ChainBatchNormBackward":
            res = node.chain.backward(g)
        else:
            (out,) = node.saved_tensors
            res = _rules_stacked(g, out, rules, node.upper)
            if kind == "_ChainRectifierBackward":
                res = node.chain.backward(res)
        return [_Views(views, stack=res)]
    if kind in _PASS:
        return [grad]
    if kind == "AddBackward0" and add_alpha(node) == 1:
        return [grad, grad]
    per_view = [_fitted(node, _as_tuple(node(g))) for g in grad.split()]
    outs: list[_Views | None] = []
    for i in range(len(node.next_functions)):
        parts = [r[i] if i < len(r) else None for r in per_view]
        if all(p is None for p in parts):
            outs.append(None)
        elif any(p is None for p in parts):
            return None
        else:
            outs.append(_Views(views, parts=list(parts)))
    return outs


def _as_tuple(r) -> tuple:
    return tuple(r) if isinstance(r, (tuple, list)) else (r,)


def _fitted(node, grads: tuple) -> tuple:
    """A node's outputs as autograd's engine passes them on (`validate_outputs`): the gradient of an input that was
    broadcast comes out broadcast and is summed back to that input's shape (squeeze-excitation's [N, C, 1, 1]
    gate times a map). Called directly, a node leaves that to the caller."""
    out = list(grads)
    for i, (nxt, slot) in enumerate(node.next_functions[:len(out)]):
        g = out[i]
        if nxt is None or g is None:
            continue
        shape = tuple(nxt._input_metadata[slot].shape)
        if tuple(g.shape) != shape:
            out[i] = g.sum_to_size(shape)
    return tuple(out)


def _rules_stacked(g: Tensor, out: Tensor, rules: Sequence[str], upper: float | None) -> Tensor:
    """Each view's rectifier rule on its slice of the stacked gradient (`kernels.rules_grad`)."""
    codes = [kernels.RULE_CODES[r] for r in rules]
    res = kernels.compiled(kernels.rules_grad)(g, out, codes, -1.0 if upper is None else upper)
    return fused.carry_box(g, res)
