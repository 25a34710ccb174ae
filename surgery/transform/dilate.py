"""Output-stride conversion: the exact a-trous rewrite (NOTES §2, FCN §3.2).

Every blob gets a grid record: `factor` (original stride / new stride, per axis) and
`offset` (the converted index of original position 0). A window layer whose input has
factor f gets dilation*f and pad*f, so its taps land on the pixels they were trained on;
where a stride is removed the layer keeps dilation*f (its input grid did not change) and
its output factor grows. Strides are capped at the target: a blob whose original stride
is S ends at min(S, N), which removes strides from the end of the net backwards.

What cannot be exact is said, never hidden: pooling windows after a removed stride
(Caffe pooling has no dilation), classifier heads whose weights depend on the map size,
and layers that resample the grid. Options choose what to do with each; every change is
recorded with `exact` True or False.
"""

import math
from fractions import Fraction
from typing import NamedTuple

from ..analysis.analyse import analyse
from ..errors import SurgeryError
from .grid import SAME, Grid, num, show
from ..layers import type_hint
from ..analysis.nominal import nominal_strides
from ..pair import Pair
from .regrid import APPROXIMATE, EXACT, Regrid, Unreachable
from ..weights.reweight import resized
from . import head as heads
from .walk import Change, Edit, apply_edits, convert, walk


class DilateReport(NamedTuple):
    changes: list
    grids: dict            # blob -> Grid (converted vs original), for the analysed phase
    exact_blobs: set       # blobs whose converted values equal the original on the grid
    stride_before: object  # Pair at the deepest blob, or None
    stride_after: object
    rf_before: object
    rf_after: object
    deepest: object        # blob name
    exact_sizes: str       # for which input sizes the rewrite is exact
    notes: list
    resized: tuple = ()    # layers given new kernels: weights to rewrite (weights/reweight.py)

    @property
    def exact(self):
        return all(c.exact for c in self.changes)

    def to_json(self):
        pair = lambda p: None if p is None else [num(v) for v in p]
        return {
            "changes": [c.to_json() for c in self.changes],
            "exact": self.exact,
            "deepest_blob": self.deepest,
            "output_stride": {"before": pair(self.stride_before), "after": pair(self.stride_after)},
            "rf": {"before": pair(self.rf_before), "after": pair(self.rf_after)},
            "grid": {b: g.to_json() for b, g in self.grids.items()},
            "exact_blobs": sorted(self.exact_blobs),
            "exact_sizes": self.exact_sizes,
            "notes": list(self.notes),
            "new_weights": list(self.resized),
        }


HEAD_CHOICES = ("error", "cut", "global")
POOLING_CHOICES = ("strict", "cover")
DILATION_CHOICES = ("strict", "round")
CONVENTIONS = ("exact", "pspnet")


# ---------------------------------------------------------------------------
# The policy: which strides go, and the conventions
# ---------------------------------------------------------------------------

class DilatePolicy:
    """Strides are capped at the target: a blob whose original stride is S ends at
    min(S, target), which removes strides from the end of the net backwards. A layer
    that loses its stride keeps dilation*f_in, or (pspnet convention) is dilated by its
    output factor too. `globalised` names the poolings --head global turns global.

    Coarsening (`nominal` given: blob -> nominal strides, surgery.analysis.nominal) is the same
    rule read the other way: a blob ends at min(nominal, max(target, its input's new
    stride)), so strides come back, as early as the kernels after them allow, where
    the net was dilated."""

    def __init__(self, target, *, pooling="strict", convention="exact", globalised=frozenset(),
                 nominal=None, resample=None, sizes=None, dilation="strict"):
        self.target, self.pooling, self.convention = target, pooling, convention
        self.dilation = dilation         # "round": coarsening rounds what does not divide
        self.globalised = globalised
        self.nominal = nominal
        self.resample = resample or {}   # layer -> Grid its output must land on (a join's)
        self.sizes = sizes or {}         # layer -> (h, w) its output must have

    def wanted(self, node):
        return self.resample.get(node.name), self.sizes.get(node.name)

    def visit(self, node, rule, step):
        if node.name in self.globalised:
            if step.grid_in.identity:    # the pool already covered the whole map
                return Regrid(rule.with_global(node.layer), SAME, EXACT,
                              "global pooling (the window already covered the map)")
            return Regrid(rule.with_global(node.layer), SAME, APPROXIMATE,
                          "global pooling over the denser map (approximate)")
        return None

    def stride(self, step, window):
        """The stride a layer keeps so that its output stride is min(original, target)
        (coarsening: min(nominal, target)). A side branch resampled back to the trunk
        keeps its strides while its input does."""
        if step.side and step.grid_in.identity:
            return window.stride
        if self.nominal is not None:
            return self._coarse_stride(step, window)
        new = []
        for S, f, s in zip(step.geometry_in.stride, step.grid_in.factor, window.stride):
            s_prev = Fraction(S) / f                # the input's new stride
            s_out = min(S * s, max(self.target, s_prev))
            kept = s_out / s_prev
            if kept.denominator != 1 or s % kept.numerator:
                raise Unreachable(step.node.name)
            new.append(int(kept))
        return Pair(*new)

    def _coarse_stride(self, step, window):
        nominal = self.nominal.get(step.node.tops[0]) or Pair(None, None)
        new = []
        for S, f, s, nom in zip(step.geometry_in.stride, step.grid_in.factor, window.stride,
                                nominal):
            s_prev = Fraction(S) / f
            # Nothing reads a blob whose nominal stride is unknown (a net's last layer, or
            # what only a global pooling reads): whether it was ever strided is not written
            # anywhere, so it keeps its stride (Dilation's context module stays at 8).
            s_out = s_prev * s if nom is None else max(s_prev * s, min(nom, self.target))
            kept = s_out / s_prev
            if kept.denominator != 1:
                raise Unreachable(step.node.name)
            new.append(int(kept))
        return Pair(*new)

    def dilation_scale(self, step, rule, window, f_in, f_out):
        if self.convention == "pspnet" and f_out != f_in and max(window.kernel) > 1 \
                and rule.dilatable:
            return f_out, "pspnet convention: the formerly strided layer is dilated too (not exact)"
        return f_in, ""

    def describe(self, node, rule, outcome):
        before = rule.window(node.layer)     # None for a layer without a window
        if node.name in self.globalised:
            return Change(node.name, node.type, "global", before, None, outcome.status, outcome.note)
        if outcome.layer is None:
            return Change(node.name, node.type, "keep", None, None, outcome.status, outcome.note)
        return Change(node.name, node.type, "rewrite", before, rule.window(outcome.layer),
                      outcome.status, outcome.note)


# ---------------------------------------------------------------------------
# Reachability and exact input sizes
# ---------------------------------------------------------------------------

def output_stride(analysis):
    """The net's output stride: the largest stride on its trunk (a pyramid's pooled branches
    aside), per axis; None when no blob has a known stride."""
    side = analysis.resampled_branches()
    strides = [g.stride for b, g in analysis.geometry.items() if g is not None and b not in side]
    if not strides:
        return None
    return Pair(max(s.h for s in strides), max(s.w for s in strides))


def _geometry_stops(analysis):
    """The first layer of unknown type whose inputs are on the grid but whose outputs are not."""
    for node in analysis.graph.nodes:
        rule = node.rule
        if rule.known(node.layer) or not node.bottoms:
            continue
        if all(analysis.geometry.get(b) is not None for b in node.bottoms) and \
                all(analysis.geometry.get(t) is None for t in node.tops):
            return node
    return None


def _directed(analysis, policy, removed):
    """`policy` for this net: coarsening (with the nominal strides) when the target is
    above the net's output stride."""
    before = output_stride(analysis)
    if before is not None and policy.target > max(before):
        return _retarget(policy, policy.target, nominal=nominal_strides(
            analysis, removed=removed, narrow=policy.pooling == "cover",
            round_dilation=policy.dilation == "round"))
    return _retarget(policy, policy.target, nominal=None)


def _walk_to(analysis, policy, phase, removed):
    """Walk under `policy`; Unreachable unless the output stride ends at the target."""
    result = walk(analysis, policy, phase=phase, removed=removed)
    side = analysis.resampled_branches()
    reached = [Fraction(s) / f for b, grid in result.grids.items() if b not in side
               and analysis.geometry.get(b) is not None
               for s, f in zip(analysis.geometry[b].stride, grid.factor)]
    if reached and max(reached) != policy.target:
        raise Unreachable(None)
    return result


def _reachable(analysis, policy, removed):
    """Every output stride, finer or coarser, the net can be converted to exactly:
    tried over the strides and nominal strides its blobs have."""
    values = {v for g in analysis.geometry.values() if g is not None for v in g.stride}
    values |= {v for pair in nominal_strides(analysis, removed=removed, narrow=True).values()
               for v in pair if v is not None}
    ok = []
    for value in sorted(values):
        try:
            _walk_to(analysis, _directed(analysis, _retarget(policy, value), removed),
                     "TEST", removed)
        except Unreachable:
            continue
        except SurgeryError:
            pass
        ok.append(value)
    return ok


def reachable_strides(analysis, *, pooling="strict"):
    """The output strides, finer or coarser, `dilate` can convert this net to."""
    return _reachable(analysis, DilatePolicy(1, pooling=pooling), frozenset())


def _unreachable(analysis, policy, removed, exc):
    layer = exc.args[0] if exc.args else None
    before = output_stride(analysis)
    if layer is None and before is not None and policy.target > max(before):
        why = ("no exact coarsening goes that far (a kernel's dilation or pad does not divide "
               "by the factor)")
    elif layer is None:
        why = "no layer can change its stride that far"
    elif policy.nominal is not None:
        why = (f"layer '{layer}' cannot be made coarser exactly (its dilation or pad does not "
               "divide by the coarsening, or it is a pooling window)")
    else:
        why = f"layer '{layer}' would have to keep part of its stride"
    ok = _reachable(analysis, policy, removed)
    if policy.dilation == "strict" and _rounding_reaches(analysis, policy, removed):
        why += ("; --dilation round reaches it approximately, rounding the dilations after "
                "the dilated layers")
    return SurgeryError(f"output stride {policy.target} is not reachable: {why}; reachable "
                        f"output strides: {', '.join(map(str, ok)) or 'none'}")


def _rounding_reaches(analysis, policy, removed):
    before = output_stride(analysis)
    if before is None or policy.target <= max(before):
        return False
    try:
        _walk_to(analysis, _directed(analysis, _retarget(policy, policy.target, dilation="round"),
                                     removed), "TEST", removed)
    except (Unreachable, SurgeryError):
        return False
    return True


def _retarget(policy, target, **changes):
    return DilatePolicy(target, pooling=policy.pooling, convention=policy.convention,
                        dilation=changes.get("dilation", policy.dilation),
                        globalised=changes.get("globalised", policy.globalised),
                        nominal=changes.get("nominal", policy.nominal),
                        resample=changes.get("resample", policy.resample),
                        sizes=changes.get("sizes", policy.sizes))


# ---------------------------------------------------------------------------
# Resampling layers follow the grid of what they meet
# ---------------------------------------------------------------------------

def _meets(analysis, result, removed):
    """[(join node, {bottom: Grid})] for each kept layer reading two or more spatial blobs
    whose new grids differ (a loss reading scores and a shrunk label; a Concat of the trunk
    and a pyramid's upsampled bins)."""
    out = []
    for node in analysis.graph.nodes:
        if node.name in removed or len(set(node.bottoms)) < 2:
            continue
        grids = {b: result.grids.get(b) for b in node.bottoms
                 if (analysis.shapes.get(b) or ()) and len(analysis.shapes[b]) == 4}
        if len({g for g in grids.values() if g is not None}) > 1:
            out.append((node, grids))
    return out


def _adapt_resamplers(net, analysis, policy, result, phase, removed, unknowns):
    """Walk again until every resampling layer (rule.fits_joins) that feeds a join lands on
    the grid, and has the size, of the moved blob it meets: DeepLab's label shrink follows
    the scores, PSPNet's upsampled bins follow the trunk."""
    graph = analysis.graph
    for _ in range(3):
        wishes, sizes, cut = {}, {}, None
        for node, grids in _meets(analysis, result, removed):
            anchors = _anchors(graph, result, grids)
            if len(set(anchors.values())) != 1:
                continue
            trunk, grid = next(iter(anchors.items()))
            for blob, g in grids.items():
                maker = graph.producer(blob)
                if g != grid and maker is not None and maker.rule.fits_joins:
                    wishes[maker.name] = grid
                    sizes[maker.name] = trunk
                    cut = node if cut is None or node.index < cut.index else cut
        wishes = {k: v for k, v in wishes.items() if policy.resample.get(k) != v}
        if not wishes:
            return policy, result
        found = _sizes_before(net, result, removed, cut, phase, {sizes[k] for k in wishes}, unknowns)
        policy = _retarget(policy, policy.target, resample={**policy.resample, **wishes},
                           sizes={**policy.sizes, **{k: found[sizes[k]] for k in wishes
                                                     if sizes[k] in found}})
        result = walk(analysis, policy, phase=phase, removed=removed)
    return policy, result


def _anchors(graph, result, grids):
    """{blob: Grid} of a join's inputs that set its grid: those not made by a resampler
    that follows joins (Interp, an upsampling Deconvolution). A Crop only shifts its first
    bottom, so it brings that bottom's factor (its offset follows whatever it lines up
    with). The blobs the walk computed come first."""
    anchors = {}
    for blob, g in grids.items():
        maker = graph.producer(blob)
        if maker is not None and maker.rule.shifts_only:
            g = result.grids.get(maker.bottoms[0])
        elif maker is not None and maker.rule.fits_joins:
            continue
        if g is not None:
            anchors[blob] = g
    return dict(sorted(anchors.items(), key=lambda item: graph.producer(item[0]) is not None
                       and graph.producer(item[0]).rule.shifts_only))


def _sizes_before(net, result, removed, join, phase, blobs, unknowns):
    """{blob: (h, w)} of `blobs` in the converted net, analysed up to (not including) `join`."""
    edits = [Edit(n.name, phase, layer) for n, layer, _ in result.changes if layer is not None]
    edits += [Edit(name, phase, None) for name in removed]
    candidate = apply_edits(net, edits)
    kept = [layer for layer in candidate.layer if layer.name != join.name]
    stop = next((i for i, layer in enumerate(candidate.layer) if layer.name == join.name), None)
    if stop is not None:
        kept = list(candidate.layer)[:stop]
    del candidate.layer[:]
    candidate.layer.extend(kept)
    try:
        after = analyse(candidate, phase=phase, unknowns=unknowns)
    except SurgeryError:
        return {}
    return {b: tuple(after.shapes[b][2:]) for b in blobs
            if after.shapes.get(b) is not None and None not in after.shapes[b]}


def _size_flags(result):
    return {name: o.size_flags for name, o in result.outcomes.items()
            if o.size_flags is not None and any(o.size_flags)}


def _exact_sizes(net, planned, unknowns):
    """Which input sizes make the same CEIL-window decisions as the analysed size.

    Only pools that lose their stride depend on the size; their decision repeats with
    the period of their output stride, so checking one period per axis is enough."""
    result, policy = planned.walk, planned.policy
    analysis = result.analysis
    # The exact part of an approximate conversion has a condition too: only the exact
    # stride-losing pools decide it.
    rewrites = [(node, change) for node, layer, change in result.changes if change.action == "rewrite"]
    watched = [node for node, change in rewrites if change.before is not None
               and change.after is not None and change.before.stride != change.after.stride
               and not node.rule.dilatable and change.exact]
    if not watched:
        return "exact for every input size"
    inputs = {b: s for b, s in analysis.shapes.items()
              if b in analysis.graph.inputs and s is not None and len(s) == 4}
    if len(inputs) != 1:
        return "exact for the analysed input size; other sizes not checked"
    (blob, shape), = inputs.items()
    flags = _size_flags(result)
    geometry = analysis.carried_geometry()
    parts = []
    for axis in range(2):
        period = math.lcm(*(geometry[n.tops[0]].stride[axis] for n in watched))
        base = shape[2 + axis]
        good = []
        for size in range(base, base + period):
            dims = list(shape)
            dims[2 + axis] = size
            try:
                other = analyse(net, input_shapes={blob: tuple(dims)}, phase=result.phase,
                                unknowns=unknowns)
                there = _size_flags(walk(other, policy, phase=result.phase, removed=planned.removed))
            except (SurgeryError, Unreachable):
                continue
            if all(there.get(n.name, (False, False))[axis] == flags.get(n.name, (False, False))[axis]
                   for n in watched):
                good.append(size % period)
        parts.append(f"{'HW'[axis]} mod {period} in {{{', '.join(map(str, sorted(good)))}}}")
    return f"exact for input sizes with {' and '.join(parts)} (the layout is size-dependent)"


# ---------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------

def _check_options(output_stride, head, pooling, convention, multi_grid, dilation="strict"):
    if isinstance(output_stride, bool) or not isinstance(output_stride, int) or output_stride < 1:
        raise SurgeryError(f"output stride must be a positive integer, got {output_stride!r}")
    for value, choices, name in ((head, HEAD_CHOICES, "head"), (pooling, POOLING_CHOICES, "pooling"),
                                 (convention, CONVENTIONS, "convention"),
                                 (dilation, DILATION_CHOICES, "dilation")):
        if value not in choices:
            raise SurgeryError(f"--{name} must be one of {', '.join(choices)}, got '{value}'")
    if multi_grid is not None and (not multi_grid or any(g < 1 for g in multi_grid)):
        raise SurgeryError("--multi-grid takes positive integers, e.g. 1,2,4")


class _PhasePlan(NamedTuple):
    walk: object          # the final Walk of this phase
    policy: DilatePolicy
    removed: set


def _plan_phase(net, phase, policy, *, head, cut_after, input_shapes, unknowns):
    """Plan one phase, resolving the classifier head; None when nothing needs changing."""
    analysis = analyse(net, input_shapes=input_shapes, phase=phase, unknowns=unknowns)
    removed = heads.cut_after(analysis.graph, cut_after) if cut_after else set()
    before = output_stride(analysis)
    if before is None:
        raise SurgeryError("no blob of the net has a known stride; nothing to dilate")
    policy = _directed(analysis, policy, removed)
    if max(before) == policy.target and not removed:
        blind = _geometry_stops(analysis)
        if blind:
            why = (analysis.stopped.get(blind.name) or f"type '{blind.type}' is not in the "
                   f"registry{type_hint(blind.type)}")
            raise SurgeryError(
                f"the stride after this layer is unknown ({why}), so the output stride cannot "
                f"be checked against {policy.target}; nothing can be rewritten through it "
                "(--cut-after a blob before it)", layer=blind.name)
        if head == "error" or not heads.classifier_layers(analysis):
            return None     # an explicit --head still applies to a net already at the target
    try:
        result = _walk_to(analysis, policy, phase, removed)
    except Unreachable as exc:
        raise _unreachable(analysis, policy, removed, exc) from None
    seeds = list(result.heads)
    if head == "cut":     # a classifier behind global pooling loads, but the user wants it gone
        pools = [node for node, layer, change in result.changes if change.action == "keep"]
        seeds += [n for n in heads.classifiers_after(analysis, pools) if n not in seeds]
    if head != "error" and not seeds:   # nothing moved, but the user asked for the head
        seeds = heads.classifier_layers(analysis)
    head_nodes = heads.find_head(analysis, seeds, removed)
    if head_nodes:
        names = ", ".join(n.name for n in head_nodes)
        if head == "error":
            raise SurgeryError(
                f"the head ({names}) has weights sized for the original map and cannot survive "
                "the rewrite; choose --head cut (drop it), --head global (global pooling before the "
                "classifier) or --cut-after BLOB")
        if head == "cut":
            removed = removed | {n.name for n in head_nodes}
        else:
            pool = heads.global_pool_for(analysis, seeds)
            policy = _retarget(policy, policy.target,
                               globalised={pool.name} if pool is not None else set())
        result = walk(analysis, policy, phase=phase, removed=removed, again=result)
    policy, result = _adapt_resamplers(net, analysis, policy, result, phase, removed, unknowns)
    found = result.first_issue()
    if found is not None:
        raise SurgeryError(found[1], layer=found[0].name)
    return _PhasePlan(result, policy, removed)


def dilate(net, *, output_stride, head="error", pooling="strict", convention="exact",
           multi_grid=None, cut_after=None, input_shapes=None, unknowns=None,
           dilation="strict"):
    """Return (new_net, DilateReport): `net` rewritten to output stride `output_stride`.

    `net` is an upgraded NetParameter and is not modified. Every phase the net declares
    is planned; a layer must get the same rewrite in each. `unknowns` (from the loader)
    names the fields a template or fork leaves open, so they stay unknown.
    """
    _check_options(output_stride, head, pooling, convention, multi_grid, dilation)
    policy = DilatePolicy(output_stride, pooling=pooling, convention=convention,
                          dilation=dilation)
    notes, plans = [], []

    def plan_phase(phase):
        planned = _plan_phase(net, phase, policy, head=head, cut_after=cut_after,
                              input_shapes=input_shapes, unknowns=unknowns)
        if planned is None:
            notes.append(f"{phase}: the output stride is already {output_stride}; "
                         "nothing changed")
            return None
        if multi_grid:
            planned = planned._replace(walk=_multi_grid(planned.walk, multi_grid))
        plans.append(planned)
        return planned.walk, planned.removed

    new, changes, _ = convert(net, plan_phase)
    return new, _report(net, new, changes, notes, plans[0] if plans else None, input_shapes,
                        unknowns)


def _multi_grid(result, grid):
    """DeepLab v3 multi-grid: the units of the last converted stage get rates grid[i] times
    the stage rate, in order, the first unit being the one whose stride was removed.

    The units are the dilatable kernels (> 1) whose output has the largest factor."""
    def factor(node):
        return max(result.grids[node.tops[0]].factor)

    rewrites = [(i, node, change) for i, (node, layer, change) in enumerate(result.changes)
                if change.action == "rewrite" and node.rule.dilatable
                and max(change.after.kernel) > 1]
    top = max((factor(node) for _, node, _ in rewrites), default=1)
    units = [(i, node, change) for i, node, change in rewrites if top > 1 and factor(node) == top]
    if len(grid) != len(units):
        names = ", ".join(node.name for _, node, _ in units) or "none"
        raise SurgeryError(f"--multi-grid gives {len(grid)} rates but the last converted stage "
                           f"has {len(units)} units ({names}); give one rate per unit")
    changes = list(result.changes)
    for g, (i, node, change) in zip(grid, units):
        if g == 1:
            continue
        after = change.after._replace(dilation=change.after.dilation * g, pad=change.after.pad * g)
        note = "; ".join(x for x in (change.note, f"multi-grid x{g} (not exact)") if x)
        layer = node.rule.with_window(node.layer, after)
        changes[i] = (node, layer, change._replace(after=after, status=APPROXIMATE, note=note))
    return result._replace(changes=changes)


def _report(net, new, changes, notes, first, input_shapes, unknowns):
    if first is None:
        return DilateReport(changes, {}, set(), None, None, None, None, None, "unchanged", notes)
    result = first.walk
    analysis = result.analysis
    try:
        after = analyse(new, input_shapes=input_shapes, phase=result.phase, unknowns=unknowns)
    except SurgeryError as exc:
        raise SurgeryError(f"the rewritten net would not build in Caffe ({exc}); no exact "
                           "rewrite keeps this layer's inputs compatible at this output stride",
                           layer=exc.layer) from None
    renewed = resized(changes, analysis.graph)
    _check_weights_fit(analysis, after, renewed)
    # A join the original already had misaligned keeps its relation (the walk checked
    # that its inputs moved to one grid); only a join the rewrite misaligns is an error.
    broken = after.misaligned_joins() - analysis.misaligned_joins()
    for warning in after.warnings:
        if any(f"layer '{name}' " in warning for name in broken):
            raise SurgeryError(f"the rewritten net does not line up: {warning}")
    deepest = after.deepest_blob()
    g_before = analysis.geometry.get(deepest) if deepest else None
    g_after = after.geometry.get(deepest) if deepest else None
    os_before, os_after = output_stride(analysis), output_stride(after)
    approximate = {c.layer for c in changes if not c.exact}
    exact_blobs = {b for b, ok in result.exact.items() if ok and b in after.shapes}
    if approximate:
        exact_blobs -= after.graph.downstream_blobs(approximate)
    sizes = _exact_sizes(net, first, unknowns)
    order = [t for node in after.graph.nodes for t in node.tops]
    grids = result.grids
    shown = deepest if deepest in exact_blobs else next(
        (b for b in reversed(order) if b in exact_blobs and grids.get(b) is not None
         and not grids[b].identity), None)
    if shown is not None and grids.get(shown) is not None:
        grid = grids[shown]
        notes.append(f"converted '{shown}' at offset + factor*i equals the original at i, with "
                     f"factor {show(grid.factor)} and offset {show(grid.offset)}"
                     + ("" if shown == deepest else f" (the deepest blob kept exact; "
                                                    f"'{deepest}' is approximate)"))
    return DilateReport(changes, {b: g for b, g in grids.items() if b in after.shapes},
                        exact_blobs, os_before, os_after,
                        g_before and g_before.rf, g_after and g_after.rf, deepest, sizes, notes,
                        renewed)


def _check_weights_fit(before, after, renewed):
    """Every weight keeps its shape, except those the conversion gives new values
    (`renewed`). A layer sized for a list of the map's positions (a fully connected layer
    after a Flatten, which follows any map) would not load its weights: stop there."""
    for node in after.graph.nodes:
        if node.name in renewed or node.name not in before.graph:
            continue
        old, new = before.param_shapes.get(node.name), after.param_shapes.get(node.name)
        if old is None or new is None or old == new or \
                any(s is None or None in s for s in list(old) + list(new)):
            continue
        raise SurgeryError(
            f"its weights are sized for what it reads ({', '.join(map(str, old))}), which the "
            f"rewrite changes ({', '.join(map(str, new))}): it reads a map on the new grid "
            "through layers that follow any map size; stop before it with --cut-after BLOB",
            layer=node.name)


def approximate_layers(original, converted, *, input_shapes=None, phase="TEST"):
    """Layers of `converted` whose output cannot be exact whatever their settings.

    Independent of how `converted` was made (verify uses it on any pair of nets): the
    factor f at each layer's input comes from the two nets' strides. Unavoidably
    approximate are a pooling window that sees a removed stride (widened or not), a
    pooling whose pad grew where pad is not neutral, a collapse over a denser map, and a
    kernel on a map coarser than its dilation allows (no whole dilation is exact).
    Otherwise a convolution can always be exact, so a convolution that differs from the exact rule
    (pspnet convention, multi-grid, or a mistake) is not excused: verify judges it."""
    a = analyse(original, input_shapes=input_shapes, phase=phase)
    b = analyse(converted, input_shapes=input_shapes, phase=phase)
    geo_a, geo_b = a.carried_geometry(), b.carried_geometry()
    result = set()
    for node in b.graph.nodes:
        if node.name not in a.graph or not node.bottoms:
            continue
        rule = node.rule
        old_node = a.graph.node(node.name)
        if rule.role_name(node.layer) != rule.role_name(old_node.layer):
            result.add(node.name)
            continue
        g_old, g_new = geo_a.get(node.bottoms[0]), geo_b.get(node.bottoms[0])
        window, collapse = rule.reads_window(node.layer), rule.collapses(node.layer)
        if g_old is None or g_new is None or not (window or collapse):
            continue
        f = Grid.between(g_old, g_new).factor
        if collapse:
            if f != (1, 1):
                result.add(node.name)
            continue
        old, new = rule.window(old_node.layer), rule.window(node.layer)
        if rule.dilatable and any(k > 1 and (Fraction(d) * fa).denominator != 1
                                  for k, d, fa in zip(old.kernel, old.dilation, f)):
            result.add(node.name)      # no whole dilation is exact (--dilation round)
            continue
        if not rule.dilatable:
            sees_gap = any(k > 1 and fa != 1 for k, fa in zip(old.kernel, f))
            pad_grew = new.pad != old.pad * f and not rule.pad_is_neutral(node.layer)
            if sees_gap or pad_grew or new.kernel != old.kernel:
                result.add(node.name)
    return result


def adapted_layers(original, converted, *, input_shapes=None, phase="TEST"):
    """Layers of `converted` changed on purpose to keep the net's meaning at the new stride:
    a resampling layer whose settings differ (Interp's factors or size), a layer that
    follows the grid (`rule.follows_grid`: an RoI pooling's spatial_scale, an RPN's
    feat_stride, a prior box's step, SSD's Flatten of a map) whose settings or input
    stride differ, and a pooling on a side branch resampled back to the trunk whose window
    differs (a pyramid bin)."""
    a = analyse(original, input_shapes=input_shapes, phase=phase)
    b = analyse(converted, input_shapes=input_shapes, phase=phase)
    side = a.resampled_branches()
    geo_a, geo_b = a.carried_geometry(), b.carried_geometry()
    found = set()
    for node in b.graph.nodes:
        if node.name not in a.graph:
            continue
        old = a.graph.node(node.name)
        if node.rule.follows_grid(node.layer) and node.bottoms:
            g_old, g_new = geo_a.get(node.bottoms[0]), geo_b.get(node.bottoms[0])
            if old.layer != node.layer or (g_old and g_new and g_old.stride != g_new.stride):
                found.add(node.name)
            continue
        if old.layer == node.layer:
            continue
        if node.rule.resamples(node.layer) or (node.tops and all(t in side for t in old.tops)):
            found.add(node.name)
    return found
