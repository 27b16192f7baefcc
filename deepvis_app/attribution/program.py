"""A unit's backward under the rules as one compiled call: the recorded graph read into a program of steps, run
by a TorchScript interpreter with the GIL released once.

Why: the live window's worker explains a unit every frame while the GUI thread runs Python. Autograd calls our
rule nodes (`rules`, `fused`) in Python, and each op and each freed temporary in them hands the GIL back: ~250
times per guided backward of EfficientNet-Lite0's `_blocks.3` (gdb), each a chance for the GUI thread to take it
and keep the backward waiting. Here the graph is walked once in Python (a few dozen nodes), and every step --
the rules, the conv chains with their box crops, residual sums, plain convs and max-pooling -- runs in one
compiled call through the same kernels (`kernels`) the Python nodes use. Several rules run stacked along the
batch, as `stacked` does. A neuron's gradient travels as its nonzero part while it covers under a quarter of a
map (the rules on whole maps, a zeroed map per conv and the views' concatenations were most of the time: Lite0
`_blocks.3`, two rules, 7.3 -> 1.9 ms). The tensors it reads may come from a traced forward instead of the
recorded graph (`replay`).

A graph holding a node of any other kind (or a node with several outputs on the way) is declined: `grads` returns
None and the caller runs autograd as before. The results equal autograd's up to float summation order (tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import fused, kernels
from .graph import add_alpha, leaf_node, needed_nodes

# step kinds (their numbers are spelled out in `_run`, which TorchScript compiles)
RECT, CHAIN_RECT, CHAIN_BN, EVAL_BN, PASS, ADD, CONV, MAXPOOL, PAD, CAT = range(10)
_KINDS = {"_RectifierBackward": RECT, "_ChainRectifierBackward": CHAIN_RECT, "_ChainBatchNormBackward": CHAIN_BN,
          "_EvalBatchNormBackward": EVAL_BN, "CloneBackward0": PASS, "AliasBackward0": PASS, "AddBackward0": ADD,
          "ConvolutionBackward0": CONV, "MaxPool2DWithIndicesBackward0": MAXPOOL,
          "ConstantPadNdBackward0": PAD, "CatBackward0": CAT}
_NO_BOX: list[int] = []


def _chain_step(g: Tensor, box: list[int], part: bool, size: list[int], crop: bool, t: list[Tensor], p: list[int],
                cpu: bool) -> tuple[Tensor, list[int], int, bool]:
    """A conv chain's backward from its encoded step: t = [x, weight(, flipped)], p as `_chain_ints`."""
    flipped: Tensor | None = None
    if p[12] == 1:
        flipped = t[2]
    pad = kernels.empty_box()
    if p[7] == 1:
        pad = p[8:12]
    return kernels.chain_parts(g, box, part, size, crop, t[0], t[1], flipped, p[13:15], p[0:2], p[2:4], p[4:6], p[6],
                               pad, cpu)


def _whole(g: Tensor, box: list[int], part: bool, size: list[int], last: bool) -> Tensor:
    """The whole map of a gradient kept as its nonzero part (`part`: g sits at `box` of a `size` map, in
    channels-last layout where `last`); a whole map as it is."""
    if not part:
        return g
    shape = [g.shape[0], g.shape[1], size[0], size[1]]
    if last:
        full = torch.empty(shape, dtype=g.dtype, device=g.device, memory_format=torch.channels_last).zero_()
    else:
        full = torch.zeros(shape, dtype=g.dtype, device=g.device)
    if len(box) == 4:
        full[:, :, box[0]:box[1], box[2]:box[3]] = g
    return full


def _sum_parts(a: Tensor, abox: list[int], b: Tensor, bbox: list[int], last: bool) -> tuple[Tensor, list[int]]:
    """Two nonzero parts of one map added: the part over the union of their boxes."""
    u = kernels.union_box(abox, bbox)
    shape = [a.shape[0], a.shape[1], u[1] - u[0], u[3] - u[2]]
    if last:
        out = torch.empty(shape, dtype=a.dtype, device=a.device, memory_format=torch.channels_last).zero_()
    else:
        out = torch.zeros(shape, dtype=a.dtype, device=a.device)
    out[:, :, abox[0] - u[0]:abox[1] - u[0], abox[2] - u[2]:abox[3] - u[2]] += a
    out[:, :, bbox[0] - u[0]:bbox[1] - u[0], bbox[2] - u[2]:bbox[3] - u[2]] += b
    return out, u


def _unpadded_box(box: list[int], pad: list[int], h: int, w: int) -> list[int]:
    """A box moved from a padded map (pad = [left, right(, top, bottom)]) into the map before the pad."""
    if len(box) == 0 or len(pad) > 4:
        return kernels.empty_box()
    top = pad[2] if len(pad) == 4 else 0
    out = [max(box[0] - top, 0), min(box[1] - top, h), max(box[2] - pad[0], 0), min(box[3] - pad[0], w)]
    if out[0] >= out[1] or out[2] >= out[3]:
        return kernels.empty_box()
    return out


def _send(pending: list[Tensor | None], boxes: list[list[int]], parts: list[bool], sizes: list[list[int]],
          lasts: list[bool], s: int, res: Tensor, box: list[int], part: bool, size: list[int], last: bool) -> None:
    """Add a step's result to slot s (a part to a part over their boxes' union; else as whole maps)."""
    have = pending[s]
    if have is None:
        pending[s], boxes[s], parts[s], sizes[s], lasts[s] = res, box, part, size, last
    elif parts[s] and part:
        pending[s], boxes[s] = _sum_parts(have, boxes[s], res, box, last)
    else:
        mine = _whole(res, box, part, size, last)
        theirs = _whole(torch.jit._unwrap_optional(have), boxes[s], parts[s], sizes[s], lasts[s])
        pending[s] = theirs + mine
        boxes[s] = kernels.union_box(boxes[s], box)  # a part's box is known: the sum's is the union
        parts[s] = False


def _run(seed: Tensor, kinds: list[int], outs: list[list[int]], tensors: list[list[Tensor]], ints: list[list[int]],
         uppers: list[float], rules: list[int], end: int, crop: bool, cpu: bool) -> tuple[Tensor | None, list[int]]:
    """Run the steps in order; step i takes the gradient summed in slot i and sends its result to slots outs[i].
    While a neuron's gradient is small it travels as its nonzero part (`parts`: the tensor is the part at the
    slot's box of a map of `sizes`, laid out channels-last where `lasts`): the rules and BN scales then touch
    only that part, and no zeroed map is made per conv. Returns the input's gradient and what each conv chain
    did (`kernels.chain_backward`'s codes)."""
    done: list[int] = []
    views = len(rules)
    slots = len(kinds) + 1
    pending: list[Tensor | None] = [None for _ in range(slots)]
    boxes: list[list[int]] = [kernels.empty_box() for _ in range(slots)]
    parts: list[bool] = [False for _ in range(slots)]
    sizes: list[list[int]] = [kernels.empty_box() for _ in range(slots)]
    lasts: list[bool] = [False for _ in range(slots)]
    pending[0] = seed
    dense = False
    for i in range(len(kinds)):
        if i == end:
            break
        got = pending[i]
        if got is None:
            continue  # no path into it carried a gradient
        g = torch.jit._unwrap_optional(got)
        pending[i] = None
        box, part, size, last = boxes[i], parts[i], sizes[i], lasts[i]
        kind, t, p = kinds[i], tensors[i], ints[i]
        if part and (kind == 6 or kind == 7 or kind == 8):  # these read the whole map
            g, part = _whole(g, box, part, size, last), False
        res = g
        if kind == 0 or kind == 1:  # RECT, CHAIN_RECT
            out = t[-1]
            if part:
                out = out[:, :, box[0]:box[1], box[2]:box[3]]
            res = kernels.rules_grad(g, out, rules, uppers[i])
        elif kind == 3:  # EVAL_BN
            res = g * t[0]
        elif kind == 6:  # CONV: the input's gradient only
            x, w = t[0], t[1]
            like = x if x.shape[0] == g.shape[0] else kernels.empty_like_input(x, g.shape[0], x.shape[2], x.shape[3],
                                                                               x.dtype)
            res = torch.ops.aten.convolution_backward(g, like, w, None, p[0:2], p[2:4], p[4:6], False, p[7:9], p[6],
                                                      [True, False, False])[0]
            box = kernels.empty_box()
        elif kind == 7:  # MAXPOOL, once per view (the switches are the image's)
            chunks = g.chunk(views, 0)
            res = torch.cat([torch.ops.aten.max_pool2d_with_indices_backward(
                chunks[v], t[0], p[0:2], p[2:4], p[4:6], p[6:8], p[8] == 1, t[1]) for v in range(views)], 0)
            box = kernels.empty_box()
        elif kind == 8:  # PAD: the padded border cut off again (a zero pad's backward)
            res = torch.constant_pad_nd(g, [-v for v in p], 0.0)
            box = _unpadded_box(box, p, res.shape[2], res.shape[3])
        if kind == 1 or kind == 2:  # CHAIN_RECT (after its rule), CHAIN_BN: the conv chain's backward
            full = size if part else [res.shape[2], res.shape[3]]
            res, box, how, part = _chain_step(res, box, part, full, crop and not dense, t, p, cpu)
            dense = dense or how == 4
            done.append(how)
            size, last = [t[0].shape[2], t[0].shape[3]], kernels.channels_last(t[0])
        if part and len(box) == 0:
            continue  # the gradient fell outside the map: nothing to send
        if kind == 9:  # CAT along the channels: each input gets its own channels (outs: per input, -1 for none)
            for k in range(len(outs[i])):
                if outs[i][k] >= 0:
                    _send(pending, boxes, parts, sizes, lasts, outs[i][k], res.narrow(1, p[1 + 2 * k], p[2 + 2 * k]),
                          box, part, size, last)
            continue
        for s in outs[i]:
            _send(pending, boxes, parts, sizes, lasts, s, res, box, part, size, last)
    got = pending[end]
    if got is None:
        return None, done
    return _whole(got, boxes[end], parts[end], sizes[end], lasts[end]), done


def _chain_ints(chain: fused.Chain) -> tuple[list[int], list[Tensor]]:
    """A chain's constants as `_chain_step` reads them, and its tensors."""
    flip = chain.flipped
    pad = list(chain.pad) if chain.pad is not None else [0, 0, 0, 0]
    ints = [*chain.stride, *chain.padding, *chain.dilation, chain.groups, int(chain.pad is not None), *pad,
            int(flip is not None), *(flip[1] if flip is not None else [0, 0])]
    return ints, [chain.x, chain.weight, *([flip[0]] if flip is not None else [])]


def _two(value, default: tuple[int, int] | None = None) -> list[int]:
    """An int or a 1- or 2-long size as two ints (an empty size: `default`, as max-pooling's stride)."""
    v = [int(value)] if isinstance(value, int) else [int(e) for e in value]
    if not v and default is not None:
        v = list(default)
    if len(v) == 1:
        v = v * 2
    if len(v) != 2:
        raise ValueError(f"not a 2-d size: {value!r}")
    return v


def _step(node, kind: int) -> tuple[list[Tensor], list[int], float, int] | None:
    """(tensors, ints, upper, edges with a gradient) of one node; None where this program cannot run it."""
    upper = -1.0
    if kind in (RECT, CHAIN_RECT):
        (out,) = node.saved_tensors
        upper = -1.0 if node.upper is None else float(node.upper)
        if kind == RECT:
            return [out], [], upper, 1
        ints, tensors = _chain_ints(node.chain)
        return [*tensors, out], ints, upper, 1
    if kind == CHAIN_BN:
        ints, tensors = _chain_ints(node.chain)
        return tensors, ints, upper, 1
    if kind == EVAL_BN:
        return [node.scale], [], upper, 1
    if kind == PASS:
        return [], [], upper, 1
    if kind == PAD:
        return [], [int(v) for v in node._saved_pad], upper, 1
    if kind == ADD:
        return ([], [], upper, 2) if add_alpha(node) == 1 else None
    if kind == CONV:  # a plain 2-d convolution (one with a trainable weight or bias is no different here)
        x, w = node._saved_input, node._saved_weight
        if node._saved_transposed or x.dim() != 4 or w.dim() != 4:
            return None
        ints = [*_two(node._saved_stride), *_two(node._saved_padding), *_two(node._saved_dilation),
                int(node._saved_groups), *_two(node._saved_output_padding)]
        return [x, w], ints, upper, 1
    if kind == CAT:  # along the channels of 4-d maps, every input with a gradient (their sizes known)
        dim, ints = int(node._saved_dim), []
        for n, k in node.next_functions:
            shape = None if n is None else list(n._input_metadata[k].shape)
            if shape is None or len(shape) != 4 or dim not in (1, -3):
                return None
            ints += [sum(ints[1::2]), shape[1]]
        return [], [1, *ints], upper, len(node.next_functions)
    if kind == MAXPOOL:
        x = node._saved_self
        if x.dim() != 4:
            return None
        kernel = _two(node._saved_kernel_size)
        ints = [*kernel, *_two(node._saved_stride, tuple(kernel)), *_two(node._saved_padding),
                *_two(node._saved_dilation), int(node._saved_ceil_mode)]
        return [x, node._saved_result1], ints, upper, 1
    return None


class Program:
    """The steps of one recorded graph from a unit's layer down to the input (`plan` makes it)."""

    def __init__(self, kinds, outs, tensors, ints, uppers, end: int) -> None:
        self.kinds, self.outs, self.tensors, self.ints, self.uppers, self.end = kinds, outs, tensors, ints, uppers, end
        self.chain_steps: list[int] = []  # what each conv chain did in the last run (`kernels.chain_backward`)

    def run(self, seed: Tensor, rules: Sequence[str], *, crop: bool) -> Tensor | None:
        """d objective / d input for each rule, stacked along the batch in `rules`' order (None: nothing reached
        the input). seed: d objective / d (the start node's output), one view."""
        codes = [kernels.RULE_CODES[r] for r in rules]
        stack = seed if len(codes) == 1 else torch.cat([seed] * len(codes), 0)
        run = kernels.compiled(_run)
        with torch.no_grad():  # as autograd's engine runs a backward (no create_graph): no graph of the gradients
            got, self.chain_steps = run(stack, self.kinds, self.outs, self.tensors, self.ints, self.uppers, codes,
                                        self.end, crop, seed.device.type == "cpu")
        return got


def plan(start, x: Tensor) -> Program | None:
    """The program from the node `start` (a unit's layer's grad_fn) to the input `x`, or None where a node on the
    way is of a kind it cannot run."""
    end = x.grad_fn if x.grad_fn is not None else leaf_node(start, x)
    if end is None:
        return None
    order = needed_nodes(start, end)
    if order is None or order[-1] is not end:
        return None
    slot = {id(n): i for i, n in enumerate(order)}
    kinds: list[int] = []
    outs: list[list[int]] = []
    tensors: list[list[Tensor]] = []
    ints: list[list[int]] = []
    uppers: list[float] = []
    for node in order[:-1]:
        kind = _KINDS.get(type(node).__name__)
        step = None if kind is None else _step(node, kind)
        if step is None:
            return None
        t, p, upper, edges = step
        nexts = node.next_functions
        if any(n is not None and id(n) in slot for n, _ in nexts[edges:]):
            return None  # a gradient this program does not compute would reach the input
        kinds.append(kind)
        tensors.append(t)
        ints.append(p)
        uppers.append(upper)
        if kind == CAT:  # one slot per input, in order (-1: no gradient needed there)
            outs.append([slot[id(n)] if n is not None and id(n) in slot else -1 for n, _ in nexts])
        else:
            outs.append([slot[id(n)] for n, _ in nexts[:edges] if n is not None and id(n) in slot])
    return Program(kinds, outs, tensors, ints, uppers, len(order) - 1)


def grads(objective: Tensor, start: Tensor, x: Tensor, rules: Sequence[str],
          steps: list[int] | None = None) -> dict[str, Tensor] | None:
    """d objective / d x under each rule from one compiled run, or None where the graph between `start` (the
    tensor the objective reads: a unit's activation) and `x` holds a node the program cannot run. The graph is
    kept (no node is freed while the GIL is released). steps: gets what each conv chain did."""
    if start.grad_fn is None or objective.grad_fn is None:
        return None
    program = plan(start.grad_fn, x)
    if program is None:
        return None
    return seeded_grads(program, objective, start, x, rules, steps)


def seeded_grads(program: Program, objective: Tensor, start: Tensor, x: Tensor, rules: Sequence[str],
                 steps: list[int] | None = None) -> dict[str, Tensor]:
    """d objective / d x under each rule by `program` (from `start` down to an input shaped like x); the seed,
    d objective / d start, by autograd (the objective reads only `start`)."""
    (seed,) = torch.autograd.grad(objective, start, retain_graph=True)
    got = program.run(seed, rules, crop=fused.box_crops(seed))
    if steps is not None:
        steps[:] = program.chain_steps
    if got is None:
        return {rule: torch.zeros_like(x) for rule in rules}
    return dict(zip(rules, got.chunk(len(rules), 0), strict=True))
