"""The backward rules of ReLU-family calls, and the TorchFunctionMode that routes a forward's calls to them.

While a forward runs inside `RectifierMode`, every ReLU-family call -- `nn.ReLU`/`nn.ReLU6` modules (reused or
inplace), `F.relu`, `torch.relu`, `relu_`, `Tensor.relu`, `F.relu6`, `F.hardtanh(x, 0, m)` -- goes through one
custom autograd Function whose backward reads the rule chosen *at backward time* (`RuleState.rule`):

* ``gradient``: the true derivative (pass where 0 < x (< upper));
* ``deconv``:  relu(upstream), the forward mask ignored (Zeiler & Fergus);
* ``guided``:  relu(upstream) where 0 < x (< upper) (Springenberg et al.).

Conv -> BN -> rectifier chains and inference BatchNorm are routed to the fused nodes of `fused`. The mode also
tells whether the recorded graph makes deconvnet maps depend on the image (`RuleState.deconv_static`).
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from . import (
    fused,  # called through the module: `fused.conv_chain` can be switched off to measure the unfused path
    kernels,
)

RULES = ("gradient", "deconv", "guided")


class RuleState:
    """Which backward rule rectifiers apply right now; shared by every node one context created."""

    def __init__(self) -> None:
        self.rule = "gradient"
        self.calls = 0  # rectifier calls routed to _Rectifier (a check that the rules are in the graph)
        self.deconv_static = True  # no recorded op makes the deconvnet backward depend on the input
        self.dense = False  # this backward's gradients have spread over most of a map: stop looking for a box
        self.chain_steps: list[int] = []  # what each conv chain did in this backward (`kernels.chain_backward`)
        self.lock = threading.Lock()  # one rule-switching backward at a time per context


class _Rectifier(torch.autograd.Function):
    """clamp(x, 0, upper) (upper=None: relu) whose backward follows `state.rule`."""

    @staticmethod
    def forward(ctx, x: Tensor, upper: float | None, inplace: bool, state: RuleState) -> Tensor:  # noqa: D401
        if inplace:
            out = torch.relu_(x) if upper is None else x.clamp_(0.0, upper)
            ctx.mark_dirty(x)
        else:
            out = torch.relu(x) if upper is None else x.clamp(0.0, upper)
        ctx.save_for_backward(out)  # 0 < out (< upper) exactly where 0 < x (< upper)
        ctx.upper = upper
        ctx.state = state
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (out,) = ctx.saved_tensors
        return rule_backward(grad, out, ctx.state.rule, ctx.upper), None, None, None


def rule_backward(grad: Tensor, out: Tensor, rule: str, upper: float | None) -> Tensor:
    """A rectifier's input gradient under `rule` (`kernels.rule_grad`). Every rule keeps zeros zero, so a known
    nonzero box of `grad` carries over."""
    res = kernels.compiled(kernels.rule_grad)(grad, out, kernels.RULE_CODES[rule], -1.0 if upper is None else upper)
    return fused.carry_box(grad, res)


class _ChainRectifier(torch.autograd.Function):
    """rect(BN(conv(x))) with BN's output already computed: backward = the rule, then one transposed conv."""

    @staticmethod
    def forward(ctx, x: Tensor, pre: Tensor, upper: float | None, state: RuleState, chain: fused.Chain) -> Tensor:
        out = torch.relu(pre) if upper is None else pre.clamp(0.0, upper)
        ctx.save_for_backward(out)
        ctx.upper, ctx.state, ctx.chain = upper, state, chain
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (out,) = ctx.saved_tensors
        return ctx.chain.backward(rule_backward(grad, out, ctx.state.rule, ctx.upper)), None, None, None, None


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: object) -> object:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _relu_spec(args, kwargs, inplace_default):
    return None, bool(_arg(args, kwargs, 1, "inplace", inplace_default))


def _hardtanh_spec(args, kwargs, inplace_default):
    lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
    hi = float(_arg(args, kwargs, 2, "max_val", 1.0))
    if lo != 0.0 or hi <= 0.0:
        return False, False  # not a rectifier: plain gradient
    return hi, bool(_arg(args, kwargs, 3, "inplace", inplace_default))


def _relu6_spec(args, kwargs, inplace_default):
    return 6.0, bool(_arg(args, kwargs, 1, "inplace", inplace_default))


def _fixed(upper, inplace):
    return lambda args, kwargs, _d: (upper, inplace)


# func -> parser returning (upper or None for relu, or False for "not ours", inplace)
_INTERCEPT = {
    F.relu: lambda a, k, d: _relu_spec(a, k, False),
    torch.relu: _fixed(None, False),
    torch.relu_: _fixed(None, True),
    torch.Tensor.relu: _fixed(None, False),
    torch.Tensor.relu_: _fixed(None, True),
    F.relu6: lambda a, k, d: _relu6_spec(a, k, False),
    F.hardtanh: lambda a, k, d: _hardtanh_spec(a, k, False),
    F.hardtanh_: lambda a, k, d: _hardtanh_spec(a[:3], k, True),
}


class RectifierMode(TorchFunctionMode):
    """Routes rectifiers, inference BatchNorm and conv -> BN chains of forwards run with grad on to the nodes
    above (thread-local while entered); everything else runs as called."""

    def __init__(self, state: RuleState) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)
        out = self._route(func, args, kwargs)
        if self.state.deconv_static and not _keeps_deconv_static(func, args, out):
            self.state.deconv_static = False
        return out

    def _route(self, func, args, kwargs):
        if func is F.pad:
            out = func(*args, **kwargs)
            fused.tag_padding(args, kwargs, out)
            return out
        if func is F.conv2d:
            chain = fused.conv_chain(args, kwargs, self.state)
            out = func(*args, **kwargs)
            if chain is not None and isinstance(out, Tensor):
                fused.tag_chain(out, chain)
            return out
        if func is F.batch_norm:
            out = fused.eval_batch_norm(args, kwargs)
            if out is not None:
                return out
        parse = _INTERCEPT.get(func)
        if parse is not None:
            x = args[0] if args else kwargs.get("input")
            if isinstance(x, Tensor) and x.requires_grad:
                upper, inplace = parse(args, kwargs, None)
                if upper is not False:
                    self.state.calls += 1
                    chain = fused.chain_of(x)
                    if chain is not None and not inplace:
                        return _ChainRectifier.apply(chain.x, x.detach(), upper, self.state, chain)
                    return _Rectifier.apply(x, upper, inplace, self.state)
        return func(*args, **kwargs)


# Ops whose backward is a fixed linear map of the upstream gradient (it reads no forward value): with only these,
# rectifiers and inference BatchNorm between the input and a unit, the deconvnet rule (which ignores the forward
# masks) gives the same map for every input -- Zeiler & Fergus's deconvnet needs max-pooling switches to see the
# image at all. Anything else recorded (max-pooling, squeeze-excitation's products, sigmoid, SiLU, softmax,
# training-mode BatchNorm, an op not listed) marks the forward as image-dependent.
_LINEAR_OPS = frozenset((
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear",
    "add", "__add__", "__radd__", "__iadd__", "add_", "sub", "__sub__", "__rsub__", "__isub__", "sub_", "neg",
    "__neg__", "cat", "concat", "concatenate", "stack", "pad", "reshape", "view", "view_as", "flatten",
    "permute", "transpose", "t", "contiguous", "__getitem__", "select", "narrow", "squeeze", "unsqueeze",
    "expand", "expand_as", "split", "chunk", "unbind", "clone", "to", "float", "sum", "mean", "avg_pool1d",
    "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "interpolate", "upsample", "pixel_shuffle", "pixel_unshuffle", "roll", "flip",
))
_PRODUCTS = frozenset(("mul", "__mul__", "__rmul__", "__imul__", "mul_", "multiply"))
_QUOTIENTS = frozenset(("div", "__truediv__", "__itruediv__", "div_", "true_divide", "divide"))


_RULED_NODES = ("_RectifierBackward", "_ChainRectifierBackward", "_EvalBatchNormBackward", "_ChainBatchNormBackward")


def _keeps_deconv_static(func, args: tuple, out: object) -> bool:
    """False when `func` (just run with grad on) recorded a node whose backward reads forward values."""
    results = out if isinstance(out, (tuple, list)) else (out,)
    if not any(isinstance(t, Tensor) and t.grad_fn is not None for t in results):
        return True  # nothing recorded (a shape query, a detached result, ...)
    if func in _INTERCEPT or func is F.batch_norm:  # ours, unless not a rectifier or training-mode BN
        return type(results[0].grad_fn).__name__ in _RULED_NODES
    name = getattr(func, "__name__", "")
    if name == "dropout":
        return results[0] is args[0]  # inference dropout returns its input
    if name in _LINEAR_OPS:
        return True
    grads = [isinstance(a, Tensor) and a.requires_grad for a in args[:2]]
    if name in _PRODUCTS:
        return sum(grads) <= 1
    if name in _QUOTIENTS:
        return len(grads) < 2 or not grads[1]
    return False


# Activation modules that get no ReLU-style rule: guided backprop and deconvnet pass their plain derivative.
_UNRULED = (nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.SELU,
            nn.CELU, nn.Mish, nn.Softplus, nn.PReLU)


def unruled_activations(net: nn.Module) -> list[str]:
    """Type names of the activation modules in `net` that get no deconv/guided rule (plain gradient there),
    so the UI can say what guided backprop and deconvnet really do on this model."""
    return sorted({type(m).__name__ for m in net.modules() if isinstance(m, _UNRULED)})


def rule_note(net: nn.Module) -> str:
    """One line for the inspector and docs: which activations pass the plain gradient under every method."""
    names = unruled_activations(net)
    if not names:
        return "all activations are ReLU-family: deconvnet and guided backprop rules apply everywhere"
    return (f"{', '.join(names)} get no ReLU-style rule: deconvnet and guided backprop pass their plain "
            "gradient there")
