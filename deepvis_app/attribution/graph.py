"""Reading autograd's recorded graph: the nodes between a result and an input, in the order the engine runs them.

Shared by the walkers that run a backward themselves (`stacked`: several rules at once; `program`: one compiled
call), so both take the same nodes in the same order as `torch.autograd.grad` would.
"""

from __future__ import annotations

from torch import Tensor


def leaf_node(root, x: Tensor):
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


def needed_nodes(root, end) -> list | None:
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


def add_alpha(node) -> float:
    """An AddBackward0's alpha (1 where it saved none)."""
    try:
        return float(node._saved_alpha)
    except (AttributeError, RuntimeError, TypeError):
        return 1.0
