"""Nominal strides: the stride each blob of a dilated net was trained at.

A dilated net computes some blobs more densely than its kernels need: DeepLab v2's
ResNet-101 runs res5 at stride 8 with dilation 4, so its res5 blobs could just as well
be computed at stride 32 with dilation 1. A blob's *limit* is, per axis, the largest
factor by which it can be made coarser with every layer that reads it still exact:
each consumer allows what divides its dilation and pad, and passes on its own output's
limit through the stride it keeps (`LayerRule.coarsen_limit`). The gcd over the
consumers is the blob's limit; a join needs one grid on all its inputs, so they share
the gcd of theirs. A blob nothing reads has no limit (0); the net's inputs cannot
change (1).

The nominal stride is the actual stride times the limit. Coarsening restores strides
where the nominal stride grows (transform/dilate.py), and inspect reports the net's
nominal output stride ("output stride 8, dilated from 32").
"""

import math

from ..pair import Pair

UNLIMITED = Pair(0, 0)


def _gcd(a, b):
    return Pair(math.gcd(a.h, b.h), math.gcd(a.w, b.w))


def coarsen_limits(analysis, *, removed=frozenset(), narrow=False, round_dilation=False):
    """{blob: Pair of ints} for every blob with a known stride; 0 means no limit.
    Layers in `removed` (a cut head) read nothing; `narrow` lets pooling windows narrow,
    `round_dilation` lets kernels after a dilated one round a dilation that does not divide."""
    graph = analysis.graph
    side = analysis.resampled_branches()    # a pyramid's pools adapt to any map
    nodes = [n for n in graph.nodes if n.name not in removed
             and not (n.tops and all(t in side for t in n.tops))]
    rounding = _after_dilated(graph) if round_dilation else set()
    limits = {b: UNLIMITED for b, g in analysis.carried_geometry().items() if g is not None}
    for blob in graph.inputs:       # the net's input comes as it comes
        if blob in limits:
            limits[blob] = Pair(1, 1)
    changed = True
    while changed:      # a join passes a limit forward to its other inputs: repeat to a fixpoint
        changed = False
        for node in reversed(nodes):
            rule = node.rule
            spatial = [b for b in graph.grid_inputs(node) if b in limits]
            if not spatial:
                continue
            out = UNLIMITED
            for top in node.tops:
                out = _gcd(out, limits.get(top, Pair(1, 1)))
            allowed = rule.coarsen_limit(node.layer, out, narrow=narrow,
                                         round_dilation=node.name in rounding)
            group = spatial + ([t for t in node.tops if t in limits]
                               if rule.joins(node.layer) else [])
            shared = allowed
            for blob in group:
                shared = _gcd(shared, limits[blob])
            for blob in group:
                if limits[blob] != shared:
                    limits[blob], changed = shared, True
    return limits


def _after_dilated(graph):
    """Kernels whose dilation is not a multiple of one before them: a smaller one
    (PSPNet's conv5_4 after res5, Dilation's context module after its front end) or an
    odd multiple (DeepLab v2's ASPP rates 6 and 18 after res5's 4): trained at the dense
    stride, they are the only ones that may round. The dilated kernels themselves keep
    the exact rule, so strides still come back where the net was dilated."""
    seen, out = {}, set()      # blob -> the largest dilation that computed it
    for node in graph.nodes:
        before = max((seen.get(b, 1) for b in node.bottoms), default=1)
        own = 1
        if node.rule.dilatable and node.rule.reads_window(node.layer):
            win = node.rule.window(node.layer)
            if max(win.kernel) > 1:
                own = max(win.dilation)
                if own % before:
                    out.add(node.name)
        for top in node.tops:
            seen[top] = max(seen.get(top, 1), before, own)
    return out


def nominal_strides(analysis, *, removed=frozenset(), narrow=False, round_dilation=False):
    """{blob: Pair}: stride times limit. A blob nothing limits (the last of a net cut
    short, what only a global pooling reads) follows what it is computed from: the
    nominal strides of its inputs, times its layer's stride, the coarsest of them; a join
    holds one value for all its blobs, so the branches it sums come back together. None
    where no input tells either (the stride was never written anywhere)."""
    out, geometry = {}, analysis.carried_geometry()
    for blob, limit in coarsen_limits(analysis, removed=removed, narrow=narrow,
                                      round_dilation=round_dilation).items():
        stride = geometry[blob].stride
        out[blob] = Pair(*(s * lim if lim else None for s, lim in zip(stride, limit)))
    free = {(b, axis) for b, v in out.items() for axis in range(2) if v[axis] is None}
    changed = True
    while changed:      # a join raises a branch it reads: repeat to a fixpoint
        changed = False
        for node in analysis.graph.nodes:
            if node.name in removed:
                continue
            rule = node.rule
            spatial = [b for b in analysis.graph.grid_inputs(node) if b in out]
            window = rule.grid_window(node.layer)
            if not spatial or window is None:
                continue
            group = [t for t in node.tops if t in out]
            members = group + (spatial if rule.joins(node.layer) else [])
            for axis in range(2):
                known = [out[b][axis] * window.stride[axis] for b in spatial
                         if out[b][axis] is not None]
                known += [out[b][axis] for b in members if out[b][axis] is not None]
                if not known:
                    continue
                for blob in members:
                    value = out[blob][axis]
                    if (blob, axis) in free and (value is None or value < max(known)):
                        out[blob] = Pair(*(max(known) if a == axis else v
                                           for a, v in enumerate(out[blob])))
                        changed = True
    return out
