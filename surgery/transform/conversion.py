"""The one result of a conversion: what changed, on which grid, and for which input sizes
it is exact. Every command reads it (dilate's summary and --json, verify's choice of
blobs, report's statuses and size condition); none computes these facts again.

It is concluded from the walk that made the conversion (transform/walk.py): each layer's
status and note come from its registry rule (`rule.regrid`), each blob's grid and
exactness from the walk. A pair of files (verify, report) is judged by walking the
original again under the policy that reproduces the converted file (transform/judge.py),
so both paths end here, in `conclude`.

Statuses: EXACT (equal on the stated grid), APPROXIMATE (the closest grid-aligned
choice, or not the exact rewrite), ADAPTED (changed on purpose, not numerically equal),
REMOVED (in the original only), NEW (in the converted net only, or of another type).
"""

import math
from typing import NamedTuple

from ..analysis.analyse import analyse
from ..errors import SurgeryError
from .regrid import ADAPTED, APPROXIMATE, EXACT, Unreachable
from .walk import walk

REMOVED, NEW = "REMOVED", "NEW"
STATUSES = (EXACT, APPROXIMATE, ADAPTED, REMOVED, NEW)


class SizeCondition(NamedTuple):
    """For which input sizes the exact part of a conversion stays exact."""

    text: str              # "every input size", "H mod 16 in {...} and W mod 16 in {...}", ...
    holds_here: object     # True / False at the analysed size, None when unknown


class Conversion(NamedTuple):
    """A conversion of one net into another, judged in one phase."""

    phase: str
    before: object          # Analysis of the original
    after: object           # Analysis of the converted net
    changes: list           # [walk.Change] in file order: every layer the conversion touched
    grids: dict             # blob -> Grid of the converted blob on the original's samples
    exact_blobs: frozenset  # blobs that hold the original's values on their grid
    excused: frozenset      # blobs computed from a layer that cannot be exact (APPROXIMATE
                            # or ADAPTED by necessity; not from a deviation, see judge.py)
    deepest: object         # the deepest blob the conversion changed and kept exact, or None
    sizes: SizeCondition
    layers: tuple           # every layer of either net: the converted net's, then the
                            # original's it lacks

    @property
    def exact(self):
        return all(c.exact for c in self.changes)

    def status(self, layer):
        """The layer's status, None for a layer the conversion left alone."""
        for change in self.changes:
            if change.layer == layer:
                return _status(change)
        return None

    def statuses(self):
        """{layer: status} for every layer of either net (None: left alone)."""
        out = dict.fromkeys(self.layers)
        out.update((c.layer, _status(c)) for c in self.changes)
        return out

    def settled(self):
        """The judgement without the two analyses it was made from (what a report keeps:
        on a deep net they are most of a command's memory, and nothing reads them after)."""
        return self._replace(before=None, after=None)

    def not_exact(self):
        """Names of the layers marked APPROXIMATE or ADAPTED, in file order."""
        return [c.layer for c in self.changes if c.status in (APPROXIMATE, ADAPTED)]


def result_status(changes):
    """The one word for a whole conversion (dilate's "result:", inspect's reachable
    strides): EXACT when every change is, else APPROXIMATE when any change is, else
    ADAPTED."""
    statuses = {c.status for c in changes}
    if all(c.exact for c in changes):
        return EXACT
    return APPROXIMATE if APPROXIMATE in statuses else ADAPTED


def _status(change):
    if change.action == "remove":
        return REMOVED
    if change.action == "add":
        return NEW
    return change.status


def conclude(plan, new, changes, *, input_shapes=None, unknowns=None, net=None, after=None,
             decided=None):
    """The Conversion of `plan` (a PhasePlan: the walk of the original in one phase, the
    policy and the layers removed), whose result is the net `new` with `changes`.

    Analyses `new` unless `after` is its analysis already (SurgeryError when it would not
    build in Caffe: the rewrite left a layer's inputs incompatible). `net` is the original
    NetParameter, for the size condition (which walks it at other input sizes);
    `decided` the CEIL-window decisions `new` holds, when they are not the walk's (see
    `size_condition`).

    A blob computed from a NEW layer, or from a deviation from the exact rewrite (PSPNet's
    convention, multi-grid: an exact rewrite exists), is neither exact nor excused:
    `verify` holds it to the tolerance, and the summary claims nothing for it."""
    result = plan.walk
    before = result.analysis
    if after is None:
        try:
            after = analyse(new, input_shapes=input_shapes, phase=result.phase,
                            unknowns=unknowns, copy=False)
        except SurgeryError as exc:
            raise SurgeryError(f"the rewritten net would not build in Caffe ({exc}); no exact "
                               "rewrite keeps this layer's inputs compatible at this output "
                               "stride", layer=exc.layer) from None
    # A join the original already had misaligned keeps its relation (the walk checked
    # that its inputs moved to one grid); only a join the rewrite misaligns is an error.
    broken = after.misaligned_joins() - before.misaligned_joins()
    for warning in after.warnings:
        if any(f"layer '{name}' " in warning for name in broken):
            raise SurgeryError(f"the rewritten net does not line up: {warning}")
    graph = after.graph
    excused = frozenset(graph.downstream_blobs(
        {c.layer for c in changes if c.status in (APPROXIMATE, ADAPTED)
         and not c.get("deviation")}))
    unknown = graph.downstream_blobs({c.layer for c in changes
                                      if _status(c) == NEW or c.get("deviation")})
    exact = frozenset(b for b, ok in result.exact.items()
                      if ok and b in after.shapes and b not in excused and b not in unknown)
    grids = {b: g for b, g in result.grids.items() if b in after.shapes}
    changed = graph.downstream_blobs({c.layer for c in changes})
    inputs = set(graph.inputs)
    deepest = next((b for node in reversed(graph.nodes) for b in reversed(node.tops)
                    if b in exact and b in changed and b not in inputs
                    and grids.get(b) is not None), None)
    sizes = size_condition(net, plan, unknowns, decided) if net is not None else \
        SizeCondition("unknown", None)
    layers = tuple(dict.fromkeys([n.name for n in after.graph.nodes]
                                 + [n.name for n in before.graph.nodes]))
    return Conversion(result.phase, before, after, list(changes), grids, exact, excused,
                      deepest, sizes, layers)


def size_flags(result):
    """{layer: per-axis size decisions} of a walk (Caffe's CEIL windows, see regrid)."""
    return {name: o.size_flags for name, o in result.outcomes.items()
            if o.size_flags is not None and any(o.size_flags)}


def size_condition(net, plan, unknowns, decided=None):
    """Which input sizes make the CEIL-window decisions the converted net holds.

    Only pools that lose their stride depend on the size: Caffe's last, partial window
    is kept with one more pad exactly where the size has one. `decided` maps each such
    pool to its per-axis decision in the converted net; by default the walk's own, for
    the exact ones. A decision repeats with the period of the pool's output stride, so
    one period per axis is walked again."""
    result, policy = plan.walk, plan.policy
    analysis = result.analysis
    flags = size_flags(result)
    if decided is None:
        decided = {node.name: flags.get(node.name, (False, False))
                   for node, _, change in result.changes
                   if change.action == "rewrite" and change.before is not None
                   and change.after is not None and change.before.stride != change.after.stride
                   and not node.rule.dilatable and change.exact}
    if not decided:
        return SizeCondition("every input size", True)
    here = all(flags.get(name, (False, False)) == d for name, d in decided.items())
    inputs = {b: s for b, s in analysis.shapes.items()
              if b in analysis.graph.inputs and s is not None and len(s) == 4}
    if len(inputs) != 1:
        return SizeCondition("the analysed input size; other sizes not checked", here)
    (blob, shape), = inputs.items()
    geometry = analysis.carried_geometry()
    tops = [analysis.graph.node(name).tops[0] for name in decided]
    parts = []
    for axis in range(2):
        period = math.lcm(*(geometry[top].stride[axis] for top in tops))
        base = shape[2 + axis]
        good = []
        for size in range(base, base + period):
            dims = list(shape)
            dims[2 + axis] = size
            try:
                other = analyse(net, input_shapes={blob: tuple(dims)}, phase=result.phase,
                                unknowns=unknowns, copy=False)
                there = size_flags(walk(other, policy, phase=result.phase,
                                        removed=plan.removed))
            except (SurgeryError, Unreachable):
                continue
            if all(there.get(name, (False, False))[axis] == d[axis]
                   for name, d in decided.items()):
                good.append(size % period)
        if len(good) < period:
            parts.append(f"{'HW'[axis]} mod {period} in {{{', '.join(map(str, sorted(good)))}}}")
    if not parts:
        return SizeCondition("every input size", here)
    return SizeCondition(f"input sizes with {' and '.join(parts)} (the layout is "
                         "size-dependent)", here)
