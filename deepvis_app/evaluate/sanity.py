"""Sanity check (Adebayo et al. 2018): does the map depend on what the network learned?

Cascading randomization: the model's parameter groups are re-initialized one by one from the output down (on a
private copy, seeded), and after each step the map is recomputed and compared with the original by Spearman's
rank correlation (of absolute values, as the paper's main figures). A map that stays highly correlated while the
weights it explains are noise is an edge detector, not an explanation. The baseline beside it is the correlation
of two independent random maps (about 0).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..abort import Abort, aborted
from ..errors import DeepVisError

MAX_GROUPS = 8


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two maps (ties broken by position, which random float maps do not have)."""
    ra = torch.argsort(torch.argsort(a.flatten())).double()
    rb = torch.argsort(torch.argsort(b.flatten())).double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float((ra * rb).sum().item() / denom) if denom > 0 else 0.0


def parameter_groups(net: nn.Module, limit: int = MAX_GROUPS) -> list[tuple[str, nn.Module]]:
    """The model's parameterized blocks from the output down: its children, split further while there are fewer
    than four, at most `limit` groups (the deepest ones merged into the last)."""
    groups = [(n, m) for n, m in net.named_children() if any(True for _ in m.parameters())]
    while len(groups) < 4:
        wider = []
        for name, module in groups:
            kids = [(f"{name}.{n}", m) for n, m in module.named_children() if any(True for _ in m.parameters())]
            wider.extend(kids if len(kids) > 1 else [(name, module)])
        if len(wider) == len(groups):
            break
        groups = wider
    groups = groups[::-1]
    if len(groups) > limit:
        rest = nn.ModuleList([m for _, m in groups[limit - 1:]])
        groups = groups[: limit - 1] + [(groups[limit - 1][0] + "...", rest)]
    return groups


def randomize(module: nn.Module, seed: int) -> None:
    """Re-initialize every parameter of `module` (its own reset where it has one; else normal noise), seeded."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
            else:
                for p in m.parameters(recurse=False):
                    p.normal_(0, 0.02)


def cascading_randomization(net: nn.Module, compute: Callable[[nn.Module], Tensor], *, seed: int = 0,
                            abort: Abort = None) -> list[dict]:
    """`compute(model) -> heat [H, W]` on the trained model, then after each cascading step; a list of
    `{"layer": group name, "spearman": rank correlation with the original map}`."""
    original = compute(net)
    model = copy.deepcopy(net)
    steps = []
    for i, (name, module) in enumerate(parameter_groups(model)):
        if aborted(abort):
            raise DeepVisError("cancelled")
        randomize(module, seed + i)
        steps.append({"layer": name, "spearman": spearman(original.abs(), compute(model).abs())})
    return steps
