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

from . import fused
from .rules import RuleState, rule_backward

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
    end = x.grad_fn if x.grad_fn is not None else _leaf_node(root, x)
    if end is None:
        return None
    order = _needed_nodes(root, end)
    if order is None:
        return None
    views = len(rules)
    pending: dict[object, _Views] = {root: _Views(views, parts=[torch.ones_like(target)] * views)}
    state.dense = False
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


def _leaf_node(root, x: Tensor):
    """The AccumulateGrad node of the leaf `x` in root's graph, or None."""
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if type(node).__name__ == "AccumulateGrad" and getattr(node, "variable", None) is x:
            return node
        stack.extend(n for n, _ in node.next_functions)
    return None


def _needed_nodes(root, end) -> list | None:
    """The nodes on some path from `root` to `end`, in an order where each comes after every node that feeds it
    a gradient (as autograd's engine runs them); None when a node there has several outputs."""
    reaches: dict[int, bool] = {}
    nodes: dict[int, object] = {}
    post: list = []
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:  # iterative post-order: a node's `reaches` after all its inputs'
        node, done = stack.pop()
        key = id(node)
        if done:
            reaches[key] = node is end or any(n is not None and reaches.get(id(n), False)
                                              for n, _ in node.next_functions)
            post.append(node)
            continue
        if key in nodes:
            continue
        nodes[key] = node
        stack.append((node, True))
        if node is not end:
            stack.extend((n, False) for n, _ in node.next_functions if n is not None and id(n) not in nodes)
    order = [n for n in reversed(post) if reaches[id(n)]]
    indeg: dict[int, int] = {id(n): 0 for n in order}
    for n in order:
        if n is end:
            continue
        for nxt, slot in n.next_functions:
            if nxt is not None and id(nxt) in indeg:
                if slot != 0:
                    return None  # a node with several outputs: its gradients would need their own slots
                indeg[id(nxt)] += 1
    ready = [root]
    out = []
    while ready:  # Kahn: a node runs once every gradient into it is summed
        node = ready.pop()
        out.append(node)
        if node is end:
            continue
        for nxt, _slot in node.next_functions:
            if nxt is not None and id(nxt) in indeg:
                indeg[id(nxt)] -= 1
                if indeg[id(nxt)] == 0:
                    ready.append(nxt)
    return out if len(out) == len(order) else None


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
    if kind == "AddBackward0" and _alpha(node) == 1:
        return [grad, grad]
    per_view = [_as_tuple(node(g)) for g in grad.split()]
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


def _alpha(node) -> float:
    try:
        return float(node._saved_alpha)
    except (AttributeError, RuntimeError, TypeError):
        return 1.0


def _rules_stacked(g: Tensor, out: Tensor, rules: Sequence[str], upper: float | None) -> Tensor:
    """Each view's rectifier rule on its slice of the stacked gradient (`rules.rule_backward` per slice, written
    into one result tensor)."""
    views = len(rules)
    res = torch.empty_like(g)
    for gv, rv, rule in zip(g.chunk(views, 0), res.chunk(views, 0), rules, strict=True):
        rule_backward(gv, out, rule, upper, into=rv)
    return fused.carry_box(g, res)
