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

from ..analysis import analyse
from ..errors import SurgeryError
from ..graph import described_phases
from ..layers import Unknown, rule_for, type_hint
from ..pair import Pair, Window
from . import head as heads

ONE = Pair(1, 1)
ZERO = Pair(0, 0)


class Grid(NamedTuple):
    """Where a converted blob's samples sit relative to the original blob's."""

    factor: Pair
    offset: Pair

    @property
    def identity(self):
        return self.factor == ONE and self.offset == ZERO


SAME = Grid(ONE, ZERO)


class Change(NamedTuple):
    layer: str
    type: str
    action: str          # "rewrite", "remove", "global", or "keep" (unchanged but approximate)
    before: object       # Window or None
    after: object        # Window or None
    exact: bool
    note: str = ""

    def to_json(self):
        win = lambda w: None if w is None else {k: list(v) for k, v in w._asdict().items()}
        return {"layer": self.layer, "type": self.type, "action": self.action,
                "before": win(self.before), "after": win(self.after), "exact": self.exact,
                "note": self.note}


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

    @property
    def exact(self):
        return all(c.exact for c in self.changes)

    def to_json(self):
        pair = lambda p: None if p is None else list(p)
        return {
            "changes": [c.to_json() for c in self.changes],
            "exact": self.exact,
            "deepest_blob": self.deepest,
            "output_stride": {"before": pair(self.stride_before), "after": pair(self.stride_after)},
            "rf": {"before": pair(self.rf_before), "after": pair(self.rf_after)},
            "grid": {b: {"factor": list(g.factor), "offset": list(g.offset)}
                     for b, g in self.grids.items()},
            "exact_blobs": sorted(self.exact_blobs),
            "exact_sizes": self.exact_sizes,
            "notes": list(self.notes),
        }


class _Unreachable(Exception):
    """The target stride falls inside one layer's stride (not a prefix product)."""


HEAD_CHOICES = ("error", "cut", "global")
POOLING_CHOICES = ("strict", "cover")
CONVENTIONS = ("exact", "pspnet")


# ---------------------------------------------------------------------------
# Per-layer arithmetic
# ---------------------------------------------------------------------------

def _new_stride(layer, s_in, factor, stride, target):
    """The stride a layer keeps so that its output stride is min(original, target)."""
    new = []
    for S, f, s in zip(s_in, factor, stride):
        s_prev = Fraction(S, f)               # the input's stride after conversion
        s_out = min(S * s, max(target, s_prev))
        kept = s_out / s_prev
        if kept.denominator != 1 or s % kept.numerator:
            raise _Unreachable(layer)
        new.append(int(kept))
    return Pair(*new)


def _extra_window(in_size, out_size, window):
    """Per axis: does the layer have a last, partial window that floor rounding drops?"""
    return Pair(*(o > (h + 2 * p - e) // s + 1 for h, o, e, s, p in
                  zip(in_size, out_size, window.extent, window.stride, window.pad)))


def _centre(window, axis):
    """Centre of output pixel 0's window on its input grid: (extent-1)/2 - pad."""
    return Fraction(window.extent[axis] - 1, 2) - window.pad[axis]


class Rewrite(NamedTuple):
    node: object
    before: Window
    after: Window
    factor_in: Pair
    exact: bool
    note: str


class _Plan(NamedTuple):
    rewrites: list    # Rewrite per window layer whose window changes
    approximate: dict # name -> (node, why) an unchanged layer's output is no longer exact
    grids: dict       # blob -> Grid
    exact: dict       # blob -> bool
    broken: list      # nodes whose weights are sized for the original map
    issues: dict      # node name -> why no exact rewrite exists (stops the run)
    extra: dict       # node name -> Pair of bools: a CEIL extra window was kept with pad


def _rewrite_window(node, rule, analysis, grid_in, target, options):
    """(Rewrite or None, output Grid, issue or None, extra flags or None) for a window layer."""
    layer = node.layer
    win = rule.window(layer)
    geom = analysis.geometry.get(node.bottoms[0])
    if geom is None:     # _plan only gets here when the input grid is unchanged
        return None, SAME, None, None
    f_in, o_in = grid_in
    stride = _new_stride(node.name, geom.stride, f_in, win.stride, target)
    f_out = Pair(*(f * s // n for f, s, n in zip(f_in, win.stride, stride)))
    loses = f_out != f_in
    exact, notes, issue, extra = True, [], None, None
    scale = f_in
    if options["convention"] == "pspnet" and loses and max(win.kernel) > 1:
        scale, exact = f_out, False
        notes.append("pspnet convention: the formerly strided layer is dilated too (not exact)")
    # A 1-wide kernel axis has no taps to spread, so its dilation stays; its pad is a
    # shift of the grid and scales like any other.
    spread = Pair(*(f if k > 1 else 1 for f, k in zip(scale, win.kernel)))
    kernel, dilation, pad = win.kernel, win.dilation * spread, win.pad * scale
    if not rule.dilatable and any(k > 1 and f > 1 for k, f in zip(kernel, f_in)):
        # No dilation field (pooling): widening the window is the closest grid-aligned choice.
        kernel = Pair(*((k - 1) * f + 1 for k, f in zip(win.kernel, f_in)))
        dilation, exact = win.dilation, False
        notes.append(f"window widened to {kernel.h}x{kernel.w} (approximate)")
        issue = (f"{layer.type} window {win.kernel.h}x{win.kernel.w} follows a removed stride and "
                 "has no dilation field, so no exact rewrite exists; use --pooling cover to widen "
                 "it (approximate), --head cut if it belongs to a classifier head, or "
                 "--cut-after BLOB to stop before it")
    if loses:
        in_shape = analysis.shapes.get(node.bottoms[0])
        out_shape = analysis.shapes.get(node.tops[0])
        if (in_shape is None or out_shape is None) and not rule.dilatable:
            exact = False
            notes.append("input size unknown, so Caffe's partial CEIL window could not be "
                         "checked; give --input-shape")
        if in_shape is not None and out_shape is not None and len(in_shape) == 4:
            extra = _extra_window(in_shape[2:], out_shape[2:], win)
            bump = Pair(*(s - 1 if (x and n == 1) else 0
                          for x, s, n in zip(extra, win.stride, stride)))
            if any(x and n != 1 and s != n for x, s, n in zip(extra, win.stride, stride)):
                exact = False
                notes.append("a partial CEIL window is lost (stride only partly removed)")
            if any(bump):
                pad = Pair(pad.h + bump.h, pad.w + bump.w)
                notes.append(f"pad +{bump.h},{bump.w} keeps the last partial (CEIL) window")
                if not rule.pad_is_neutral(layer):
                    exact = False
                    notes.append("the extra pad changes border averages")
    offset = []
    for axis in range(2):
        after = Window(kernel, stride, pad, dilation)
        shift = o_in[axis] + f_in[axis] * _centre(win, axis) - _centre(after, axis)
        if shift.denominator == 1 and shift % stride[axis] and rule.pad_is_neutral(layer):
            need = stride[axis] - int(shift) % stride[axis]   # a little more zero pad aligns it
            pad = Pair(*(p + need if a == axis else p for a, p in enumerate(pad)))
            shift += need
        value = shift / stride[axis]
        if value.denominator != 1 or value < 0:
            exact = False
            notes.append("output is off the original grid")
        offset.append(math.floor(value))
    after = Window(kernel, stride, pad, dilation)
    if not rule.dilatable and (pad.h >= kernel.h or pad.w >= kernel.w):
        raise SurgeryError(f"keeping the partial window needs pad {tuple(pad)} but Caffe pooling "
                           f"requires pad < kernel {tuple(kernel)}; choose another input size",
                           layer=node.name)
    note = "; ".join(dict.fromkeys(notes))
    rewrite = Rewrite(node, win, after, f_in, exact, note) if after != win else None
    return rewrite, Grid(f_out, Pair(*offset)), issue, extra


def _plan(analysis, target, options, *, removed=frozenset(), globalised=frozenset()):
    """Walk the graph once in file order, giving every blob a Grid."""
    grids = {b: SAME for b in analysis.graph.header_inputs}
    exact = {b: True for b in analysis.graph.header_inputs}
    rewrites, broken, issues, extras, approximate = [], [], {}, {}, {}
    side = analysis.resampled_branches()
    for node in analysis.graph.nodes:
        if node.name in removed:
            continue
        rule = rule_for(node.type)
        role = rule.role_of(node.layer)
        spatial = [node.bottoms[i] for i in rule.grid_bottoms(node.layer) if i < len(node.bottoms)]
        ins = [grids.get(b, SAME) for b in spatial]
        ok = all(exact.get(b, True) for b in node.bottoms)
        grid_in = ins[0] if ins else SAME
        if len(set(ins)) > 1:
            detail = ", ".join(f"'{b}' factor {tuple(g.factor)} offset {tuple(g.offset)}"
                               for b, g in zip(spatial, ins))
            issues.setdefault(node.name, f"branches meet on different grids after the rewrite "
                                         f"({detail}); the join cannot be exact")
        out_grid = grid_in
        if node.name in globalised:
            out_grid, ok = SAME, False
        elif role == "window" and grid_in.identity and all(t in side for t in node.tops):
            pass   # a side branch resampled back to the trunk: its input is unchanged, so is it
        elif role == "window" and analysis.geometry.get(node.bottoms[0]) is None \
                and not grid_in.identity:
            issues.setdefault(node.name, "its input's stride is unknown (geometry stopped "
                                         "upstream), so it cannot be rewritten")
        elif role == "window":
            rewrite, out_grid, issue, flags = _rewrite_window(node, rule, analysis, grid_in,
                                                              target, options)
            if issue and options["pooling"] == "strict":
                issues[node.name] = issue
            if flags is not None and any(flags):
                extras[node.name] = flags
            if rewrite is not None:
                rewrites.append(rewrite)
                ok = ok and rewrite.exact
        elif not grid_in.identity and role not in ("pointwise", "join", "source"):
            out_grid = SAME
            if _size_bound(analysis, node):
                broken.append(node)          # weights sized for the original map
            elif _collapses_to_point(analysis, node):
                ok = False                   # global pooling: same shape, denser average
                approximate[node.name] = (node, "pools over the denser map, so it also sees positions "
                                          "the original never computed (approximate)")
            elif role == "sink":
                ok = False                   # a loss or accuracy over the denser map
                approximate[node.name] = (node, "computed over the denser map (approximate)")
            else:
                why = {"unknown": "its type is not in the registry, so what it does on a denser "
                                  "map is unknown",
                       "collapse": "it reshapes or collapses the map, so its output depends on "
                                   "the map size"}.get(role, "it resamples the grid by its own rule")
                issues.setdefault(node.name, (
                    f"{node.type} after a removed stride has no exact rewrite ({why}); stop "
                    "before it with --cut-after BLOB"))
        for top in node.tops:
            grids[top] = out_grid
            exact[top] = ok
    return _Plan(rewrites, approximate, grids, exact, broken, issues, extras)


def _size_bound(analysis, node):
    """Whether the layer's weight shapes depend on its input's spatial size (InnerProduct
    on a map), asked of the registry with the real input and one a pixel larger."""
    rule = rule_for(node.type)
    ins = analysis.in_shapes.get(node.name) or []
    if not ins or any(s is None for s in ins):
        ins = [(1, 1, 3, 3)] * len(node.bottoms)
    grown = [tuple(s[:2]) + tuple(d + 1 for d in s[2:]) for s in ins]
    try:
        return rule.param_shapes(node.layer, ins) != rule.param_shapes(node.layer, grown)
    except (SurgeryError, Unknown, ArithmeticError, IndexError, ValueError):
        return False


def _collapses_to_point(analysis, node):
    """A collapse whose output is 1x1 whatever the map size (global pooling); asked of the
    registry on two stand-in sizes when the real ones are unknown."""
    rule = rule_for(node.type)
    known = [analysis.shapes.get(t) for t in node.tops]
    if all(s is not None and None not in s for s in known):
        return all(len(s) == 4 and s[2] == s[3] == 1 for s in known)
    try:
        outs = [rule.out_shapes(node.layer, [(1, 1, n, n)] * len(node.bottoms)) for n in (5, 9)]
    except (SurgeryError, Unknown, ArithmeticError, IndexError, ValueError):
        return False
    return all(len(s) == 4 and tuple(s[2:]) == (1, 1) for run in outs for s in run)


# ---------------------------------------------------------------------------
# Reachability and exact input sizes
# ---------------------------------------------------------------------------

def _output_stride(analysis):
    side = analysis.resampled_branches()
    strides = [g.stride for b, g in analysis.geometry.items() if g is not None and b not in side]
    if not strides:
        return None
    return Pair(max(s.h for s in strides), max(s.w for s in strides))


def _geometry_stops(analysis):
    """The first layer of unknown type whose inputs are on the grid but whose outputs are not."""
    for node in analysis.graph.nodes:
        rule = rule_for(node.type)
        if rule.role_of(node.layer) != "unknown" or not node.bottoms:
            continue
        if all(analysis.geometry.get(b) is not None for b in node.bottoms) and \
                all(analysis.geometry.get(t) is None for t in node.tops):
            return node
    return None


def _reachable(analysis, options, removed):
    """Every blob stride that can be the target without splitting a layer's stride."""
    values = sorted({v for g in analysis.geometry.values() if g is not None for v in g.stride})
    ok = []
    for value in values:
        try:
            _plan(analysis, value, options, removed=removed)
        except _Unreachable:
            continue
        except SurgeryError:
            pass
        ok.append(value)
    return ok


def _exact_sizes(net, analysis, target, options, plan, *, removed, globalised, phase, unknowns):
    """Which input sizes make the same CEIL-window decisions as the analysed size.

    Only pools that lose their stride depend on the size; their decision repeats with
    the period of their output stride, so checking one period per axis is enough."""
    if not all(r.exact for r in plan.rewrites):
        return "approximate (see the changes marked approximate)"
    stride_losers = [r.node for r in plan.rewrites if r.before.stride != r.after.stride]
    watched = [n for n in stride_losers if not rule_for(n.type).dilatable]
    if not watched:
        return "exact for every input size"
    inputs = {b: s for b, s in analysis.shapes.items()
              if b in analysis.graph.inputs and s is not None and len(s) == 4}
    if len(inputs) != 1:
        return "exact for the analysed input size; other sizes not checked"
    (blob, shape), = inputs.items()
    parts = []
    for axis in range(2):
        period = math.lcm(*(analysis.geometry[n.tops[0]].stride[axis] for n in watched))
        base = shape[2 + axis]
        good = []
        for size in range(base, base + period):
            dims = list(shape)
            dims[2 + axis] = size
            try:
                other = analyse(net, input_shapes={blob: tuple(dims)}, phase=phase, unknowns=unknowns)
                flags = _plan(other, target, options, removed=removed, globalised=globalised).extra
            except (SurgeryError, _Unreachable):
                continue
            if all(flags.get(n.name, (False, False))[axis] == plan.extra.get(n.name, (False, False))[axis]
                   for n in watched):
                good.append(size % period)
        parts.append(f"{'HW'[axis]} mod {period} in {{{', '.join(map(str, sorted(good)))}}}")
    return f"exact for input sizes with {' and '.join(parts)} (the layout is size-dependent)"


# ---------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------

def _check_options(output_stride, head, pooling, convention, multi_grid):
    if isinstance(output_stride, bool) or not isinstance(output_stride, int) or output_stride < 1:
        raise SurgeryError(f"output stride must be a positive integer, got {output_stride!r}")
    for value, choices, name in ((head, HEAD_CHOICES, "head"), (pooling, POOLING_CHOICES, "pooling"),
                                 (convention, CONVENTIONS, "convention")):
        if value not in choices:
            raise SurgeryError(f"--{name} must be one of {', '.join(choices)}, got '{value}'")
    if multi_grid is not None and (not multi_grid or any(g < 1 for g in multi_grid)):
        raise SurgeryError("--multi-grid takes positive integers, e.g. 1,2,4")


class _PhasePlan(NamedTuple):
    analysis: object
    plan: _Plan
    removed: set
    globalised: set
    phase: str


def _plan_phase(net, phase, output_stride, options, *, head, cut_after, input_shapes, unknowns):
    """Plan one phase, resolving the classifier head; None when nothing needs changing."""
    analysis = analyse(net, input_shapes=input_shapes, phase=phase, unknowns=unknowns)
    removed = heads.cut_after(analysis.graph, cut_after) if cut_after else set()
    before = _output_stride(analysis)
    if before is None:
        raise SurgeryError("no blob of the net has a known stride; nothing to dilate")
    if max(before) <= output_stride and not removed:
        blind = _geometry_stops(analysis)
        if blind:
            why = (analysis.stopped.get(blind.name) or f"type '{blind.type}' is not in the "
                   f"registry{type_hint(blind.type)}")
            raise SurgeryError(
                f"the stride after this layer is unknown ({why}), so the output stride cannot "
                f"be checked against {output_stride}; nothing can be rewritten through it "
                "(--cut-after a blob before it)", layer=blind.name)
        return None
    try:
        plan = _plan(analysis, output_stride, options, removed=removed)
    except _Unreachable as exc:
        ok = _reachable(analysis, options, removed)
        raise SurgeryError(
            f"output stride {output_stride} is not reachable: layer '{exc.args[0]}' would have to "
            f"keep part of its stride; reachable output strides: {', '.join(map(str, ok))}") from None
    globalised = set()
    seeds = list(plan.broken)
    if head == "cut":     # a classifier behind global pooling loads, but the user wants it gone
        pools = [node for node, _ in plan.approximate.values()]
        seeds += [n for n in heads.classifiers_after(analysis, pools) if n not in seeds]
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
            globalised = {heads.global_pool_for(analysis, plan.broken).name}
        plan = _plan(analysis, output_stride, options, removed=removed, globalised=globalised)
    for node in analysis.graph.nodes:
        if node.name in plan.issues:
            raise SurgeryError(plan.issues[node.name], layer=node.name)
    return _PhasePlan(analysis, plan, removed, globalised, phase)


def dilate(net, *, output_stride, head="error", pooling="strict", convention="exact",
           multi_grid=None, cut_after=None, input_shapes=None, unknowns=None):
    """Return (new_net, DilateReport): `net` rewritten to output stride `output_stride`.

    `net` is an upgraded NetParameter and is not modified. Every phase the net declares
    is planned; a layer must get the same rewrite in each. `unknowns` (from the loader)
    names the fields a template or fork leaves open, so they stay unknown.
    """
    _check_options(output_stride, head, pooling, convention, multi_grid)
    options = {"pooling": pooling, "convention": convention}
    new = type(net)()
    new.CopyFrom(net)
    layers, drop, changes, notes, first = {}, set(), [], [], None
    for phase in described_phases(net):
        planned = _plan_phase(net, phase, output_stride, options, head=head, cut_after=cut_after,
                              input_shapes=input_shapes, unknowns=unknowns)
        if planned is None:
            notes.append(f"{phase}: the output stride is already at or below {output_stride}; "
                         "nothing changed")
            continue
        first = first or planned
        rewrites = planned.plan.rewrites
        if multi_grid:
            rewrites = _multi_grid(rewrites, multi_grid)
        for r in rewrites:
            layer = rule_for(r.node.type).with_window(r.node.layer, r.after)
            _record(layers, changes, r.node, layer,
                    Change(r.node.name, r.node.type, "rewrite", r.before, r.after, r.exact, r.note))
        for node, why in planned.plan.approximate.values():
            if node.index not in layers and node.index not in drop:
                _record(layers, changes, node, node.layer,
                        Change(node.name, node.type, "keep", None, None, False, why))
        for node in planned.analysis.graph.nodes:
            if node.name in planned.globalised:
                layer = rule_for(node.type).with_global(node.layer)
                _record(layers, changes, node, layer, Change(
                    node.name, node.type, "global", rule_for(node.type).window(node.layer), None,
                    False, "global pooling over the denser map (approximate)"))
            elif node.name in planned.removed and node.index not in drop:
                drop.add(node.index)
                changes.append(Change(node.name, node.type, "remove", None, None, True,
                                      "not needed for the kept outputs"))
    for index, layer in layers.items():
        new.layer[index].CopyFrom(layer)
    for index in sorted(drop, reverse=True):
        del new.layer[index]
    return new, _report(net, new, changes, notes, first, output_stride, options, input_shapes,
                        bool(multi_grid), unknowns)


def _record(layers, changes, node, layer, change):
    """Keep one rewrite per layer across phases; phases that disagree are an error."""
    if node.index in layers:
        if layers[node.index] != layer:
            raise SurgeryError("the TRAIN and TEST phases need different rewrites of this layer",
                               layer=node.name)
        return
    layers[node.index] = layer
    changes.append(change)


def _multi_grid(rewrites, grid):
    """DeepLab v3 multi-grid: unit rates in the last converted stage, times the stage rate.

    The units are the dilatable kernels (> 1) whose input has the largest factor, in order."""
    top = max((max(r.factor_in) for r in rewrites), default=1)
    out, unit = [], 0
    for r in rewrites:
        if max(r.factor_in) == top and top > 1 and max(r.after.kernel) > 1 and \
                rule_for(r.node.type).dilatable:
            g = grid[unit % len(grid)]
            unit += 1
            if g != 1:
                after = r.after._replace(dilation=r.after.dilation * g, pad=r.after.pad * g)
                note = "; ".join(x for x in (r.note, f"multi-grid x{g} (not exact)") if x)
                r = r._replace(after=after, exact=False, note=note)
        out.append(r)
    return out


def _report(net, new, changes, notes, first, target, options, input_shapes, multi_grid, unknowns):
    if first is None:
        return DilateReport(changes, {}, set(), None, None, None, None, None, "unchanged", notes)
    analysis, plan = first.analysis, first.plan
    after = analyse(new, input_shapes=input_shapes, phase=first.phase, unknowns=unknowns)
    for warning in after.warnings:
        if "misaligned" in warning:
            raise SurgeryError(f"the rewritten net does not line up: {warning}")
    deepest = after.deepest_blob()
    g_before = analysis.geometry.get(deepest) if deepest else None
    g_after = after.geometry.get(deepest) if deepest else None
    first_deepest = analysis.deepest_blob()
    os_before = analysis.geometry[first_deepest].stride if first_deepest else None
    os_after = g_after.stride if g_after else None
    approximate = {c.layer for c in changes if not c.exact}
    exact_blobs = {b for b, ok in plan.exact.items() if ok and b in after.shapes}
    if approximate:
        exact_blobs -= after.graph.downstream_blobs(approximate)
    if multi_grid:
        sizes = "approximate (multi-grid)"
    else:
        sizes = _exact_sizes(net, analysis, target, options, plan, removed=first.removed,
                             globalised=first.globalised, phase=first.phase, unknowns=unknowns)
    order = [t for node in after.graph.nodes for t in node.tops]
    shown = deepest if deepest in exact_blobs else next(
        (b for b in reversed(order) if b in exact_blobs and plan.grids.get(b) is not None
         and not plan.grids[b].identity), None)
    if shown is not None and plan.grids.get(shown) is not None:
        grid = plan.grids[shown]
        notes.append(f"converted '{shown}' at offset + factor*i equals the original at i, with "
                     f"factor {tuple(grid.factor)} and offset {tuple(grid.offset)}"
                     + ("" if shown == deepest else f" (the deepest blob kept exact; "
                                                    f"'{deepest}' is approximate)"))
    return DilateReport(changes, {b: g for b, g in plan.grids.items() if b in after.shapes},
                        exact_blobs, os_before, os_after,
                        g_before and g_before.rf, g_after and g_after.rf, deepest, sizes, notes)


def approximate_layers(original, converted, *, input_shapes=None, phase="TEST"):
    """Layers of `converted` whose output cannot be exact whatever their settings.

    Independent of how `converted` was made (verify uses it on any pair of nets): the
    factor f at each layer's input comes from the two nets' strides. Unavoidably
    approximate are a pooling window that sees a removed stride (widened or not), a
    pooling whose pad grew where pad is not neutral, and a collapse over a denser map.
    A convolution can always be exact, so a convolution that differs from the exact rule
    (pspnet convention, multi-grid, or a mistake) is not excused: verify judges it."""
    a = analyse(original, input_shapes=input_shapes, phase=phase)
    b = analyse(converted, input_shapes=input_shapes, phase=phase)
    result = set()
    for node in b.graph.nodes:
        if node.name not in a.graph or not node.bottoms:
            continue
        rule = rule_for(node.type)
        old_node = a.graph.node(node.name)
        role = rule.role_of(node.layer)
        if role != rule.role_of(old_node.layer):
            result.add(node.name)
            continue
        g_old, g_new = a.geometry.get(node.bottoms[0]), b.geometry.get(node.bottoms[0])
        if g_old is None or g_new is None or role not in ("window", "collapse"):
            continue
        if any(n == 0 or o % n for o, n in zip(g_old.stride, g_new.stride)):
            continue
        f = Pair(*(o // n for o, n in zip(g_old.stride, g_new.stride)))
        if role == "collapse":
            if f != ONE:
                result.add(node.name)
            continue
        old, new = rule.window(old_node.layer), rule.window(node.layer)
        if not rule.dilatable:
            sees_gap = any(k > 1 and fa > 1 for k, fa in zip(old.kernel, f))
            pad_grew = new.pad != old.pad * f and not rule.pad_is_neutral(node.layer)
            if sees_gap or pad_grew or new.kernel != old.kernel:
                result.add(node.name)
    return result
