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
where the nominal stride grows (passes/dilate.py), and inspect reports the net's
nominal output stride ("output stride 8, dilated from 32").
"""

import math

from .pair import Pair

UNLIMITED = Pair(0, 0)


def _gcd(a, b):
    return Pair(math.gcd(a.h, b.h), math.gcd(a.w, b.w))


def coarsen_limits(analysis, *, removed=frozenset(), narrow=False):
    """{blob: Pair of ints} for every blob with a known stride; 0 means no limit.
    Layers in `removed` (a cut head) read nothing; `narrow` lets pooling windows narrow."""
    graph = analysis.graph
    side = analysis.resampled_branches()    # a pyramid's pools adapt to any map
    nodes = [n for n in graph.nodes if n.name not in removed
             and not (n.tops and all(t in side for t in n.tops))]
    limits = {b: UNLIMITED for b, g in analysis.geometry.items() if g is not None}
    for blob in graph.inputs:       # the net's input comes as it comes
        if blob in limits:
            limits[blob] = Pair(1, 1)
    changed = True
    while changed:      # a join passes a limit forward to its other inputs: repeat to a fixpoint
        changed = False
        for node in reversed(nodes):
            rule = node.rule
            spatial = [node.bottoms[i] for i in rule.grid_bottoms(node.layer)
                       if i < len(node.bottoms) and node.bottoms[i] in limits]
            if not spatial:
                continue
            out = UNLIMITED
            for top in node.tops:
                out = _gcd(out, limits.get(top, Pair(1, 1)))
            allowed = rule.coarsen_limit(node.layer, out, narrow=narrow)
            group = spatial + ([t for t in node.tops if t in limits]
                               if rule.role_of(node.layer) == "join" else [])
            shared = allowed
            for blob in group:
                shared = _gcd(shared, limits[blob])
            for blob in group:
                if limits[blob] != shared:
                    limits[blob], changed = shared, True
    return limits


def nominal_strides(analysis, *, removed=frozenset(), narrow=False):
    """{blob: Pair}: stride times limit, or None where nothing limits it."""
    out = {}
    for blob, limit in coarsen_limits(analysis, removed=removed, narrow=narrow).items():
        stride = analysis.geometry[blob].stride
        out[blob] = Pair(*(s * lim if lim else None for s, lim in zip(stride, limit)))
    return out
