"""Planning an output-stride conversion: which strides go or come back, per phase.

The policy (`DilatePolicy`) answers the walk's questions (transform/walk.py): which
stride each window layer keeps, how far its kernel is dilated, which poolings turn
global. `plan` runs the walk in every phase the net describes, resolves the classifier
head, lets resamplers follow the joins they meet, and returns the new net with the
record of every change. A conversion it cannot make raises `Blocked`, which names the
layers in the way; transform/reach.py turns that into the refusal the user reads.

Strides are capped at the target: a blob whose original stride is S ends at
min(S, target), which removes strides from the end of the net backwards. Coarsening
(target above the net's output stride) is the same rule read the other way, from the
nominal strides (analysis/nominal.py): strides come back as early as the kernels after
them allow.
"""

from fractions import Fraction
from typing import NamedTuple

from ..analysis.analyse import analyse
from ..analysis.nominal import nominal_strides
from ..errors import SurgeryError
from ..layers import type_hint
from ..pair import Pair
from . import head as heads
from .grid import SAME
from .regrid import APPROXIMATE, EXACT, Regrid, Unreachable, ratio, whole_as_int
from .walk import Change, Edit, apply_edits, convert, walk

HEAD_CHOICES = ("error", "cut", "global")
POOLING_CHOICES = ("strict", "cover")
DILATION_CHOICES = ("strict", "round")
CONVENTIONS = ("exact", "pspnet")


class Options(NamedTuple):
    """What the user asked of `dilate`, one field per option."""

    output_stride: int
    head: str = "error"
    pooling: str = "strict"
    convention: str = "exact"
    dilation: str = "strict"
    multi_grid: tuple = None
    cut_after: str = None

    def check(self):
        """SurgeryError for a value no command line could mean."""
        stride = self.output_stride
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise SurgeryError(f"output stride must be a positive integer, got {stride!r}")
        for value, choices, name in ((self.head, HEAD_CHOICES, "head"),
                                     (self.pooling, POOLING_CHOICES, "pooling"),
                                     (self.convention, CONVENTIONS, "convention"),
                                     (self.dilation, DILATION_CHOICES, "dilation")):
            if value not in choices:
                raise SurgeryError(f"--{name} must be one of {', '.join(choices)}, got '{value}'")
        grid = self.multi_grid
        if grid is not None and (not grid or any(g < 1 for g in grid)):
            raise SurgeryError("--multi-grid takes positive integers, e.g. 1,2,4")
        return self


class Blocked(Exception):
    """The conversion cannot be made as asked. `kind` says how: "layers" (each of
    `layers`, [(name, why)] in file order, has no acceptable rewrite), "range" (no layer
    blocks, but no stride reaches the target), "head" (`layers` are a classifier head
    sized for the map), "blind" (geometry stops at `layers`' first) or "build" (the
    rewritten net would not build at the first of `layers`)."""

    def __init__(self, kind, layers=(), *, coarser=False, phase="TEST"):
        super().__init__(kind, layers)
        self.kind, self.layers, self.coarser, self.phase = kind, list(layers), coarser, phase


class DilatePolicy:
    """The walk's policy for `dilate` (see the module docstring). A layer that loses its
    stride keeps dilation*f_in, or (pspnet convention) is dilated by its output factor
    too. `globalised` names the poolings --head global turns global; `resample` and
    `sizes` the grid and size a resampler that meets a join must land on.

    Never changed once made (`replace` makes another): a later walk reuses an earlier
    walk's answers only under the very same policy. (A plain class: the dataclasses
    module would cost every command's start-up more than the walk it serves.)"""

    FIELDS = ("target", "pooling", "convention", "dilation", "globalised", "nominal",
              "resample", "sizes")

    def __init__(self, target, pooling="strict", convention="exact", dilation="strict",
                 globalised=frozenset(), nominal=None, resample=None, sizes=None):
        self.target = target
        self.pooling = pooling
        self.convention = convention
        self.dilation = dilation          # "round": coarsening rounds what does not divide
        self.globalised = globalised
        self.nominal = nominal            # blob -> nominal strides, when coarsening
        self.resample = {} if resample is None else resample     # layer -> Grid
        self.sizes = {} if sizes is None else sizes              # layer -> (h, w)

    def replace(self, **changes):
        return type(self)(**{**{name: getattr(self, name) for name in self.FIELDS}, **changes})

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
            s_prev = ratio(S, whole_as_int(f))      # the input's new stride
            s_out = min(S * s, max(self.target, s_prev))
            kept = ratio(s_out, s_prev)
            if kept.denominator != 1 or s % kept.numerator:
                raise Unreachable(step.node.name, f"it would have to keep {kept} of its "
                                                  f"stride {s}")
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
                raise Unreachable(step.node.name, f"its stride would have to grow by {kept}")
            new.append(int(kept))
        return Pair(*new)

    def dilation_scale(self, step, rule, window, f_in, f_out):
        if self.convention == "pspnet" and f_out != f_in and max(window.kernel) > 1 \
                and rule.dilatable:
            return f_out, "pspnet convention: the formerly strided layer is dilated too (not exact)"
        return f_in, ""

    def describe(self, node, rule, outcome):
        before = rule.window(node.layer)     # None for a layer without a window
        details = (("deviation", True),) if outcome.deviates else ()
        if node.name in self.globalised:
            return Change(node.name, node.type, "global", before, None, outcome.status, outcome.note)
        if outcome.layer is None:
            return Change(node.name, node.type, "keep", None, None, outcome.status, outcome.note,
                          details)
        return Change(node.name, node.type, "rewrite", before, rule.window(outcome.layer),
                      outcome.status, outcome.note, details)


def _geometry_stops(analysis):
    """The first layer of unknown type whose inputs are on the grid but whose outputs are not."""
    for node in analysis.graph.nodes:
        if node.rule.known(node.layer) or not node.bottoms:
            continue
        if all(analysis.geometry.get(b) is not None for b in node.bottoms) and \
                all(analysis.geometry.get(t) is None for t in node.tops):
            return node
    return None


def directed(analysis, policy, removed):
    """`policy` for this net: coarsening (with the nominal strides) when the target is
    above the net's output stride."""
    before = analysis.output_stride()
    if before is not None and policy.target > max(before):
        return policy.replace(nominal=nominal_strides(
            analysis, removed=removed, narrow=policy.pooling == "cover",
            round_dilation=policy.dilation == "round"))
    return policy.replace(nominal=None)


def coarsening_blockers(net, options, phase, *, input_shapes=None, unknowns=None):
    """[(layer, why)]: the kernels that keep a coarsening from reaching the target, for a
    refusal to name: the strides are brought back as far as rounding the dilations would
    allow, and the exact rule then stops at each kernel whose dilation or pad does not
    divide (and, unless --pooling cover, at each pooling window on a coarser map)."""
    analysis = analyse(net, input_shapes=input_shapes, phase=phase, unknowns=unknowns)
    removed = heads.cut_after(analysis.graph, options.cut_after) if options.cut_after else set()
    policy = DilatePolicy(options.output_stride, pooling=options.pooling,
                          convention=options.convention, dilation=options.dilation)
    policy = policy.replace(nominal=nominal_strides(
        analysis, removed=removed, narrow=options.pooling == "cover", round_dilation=True))
    result = walk(analysis, policy, phase=phase, removed=removed)
    return [(name, result.issues[name]) for name in result.blocked]


def walk_to(analysis, policy, phase, removed):
    """Walk under `policy`; Blocked unless every layer has a rewrite and the output stride
    ends at the target."""
    result = walk(analysis, policy, phase=phase, removed=removed)
    if result.blocked:
        raise Blocked("layers", [(n, result.issues[n]) for n in result.blocked],
                      coarser=policy.nominal is not None, phase=phase)
    side = analysis.resampled_branches()
    before = analysis.output_stride()
    for axis in range(2):      # each axis ends at the target (or keeps a smaller stride)
        reached = [Fraction(analysis.geometry[b].stride[axis]) / grid.factor[axis]
                   for b, grid in result.grids.items()
                   if b not in side and analysis.geometry.get(b) is not None]
        wanted = policy.target if policy.nominal is not None else \
            min(policy.target, before[axis])
        if reached and max(reached) != wanted:
            raise Blocked("range", coarser=policy.nominal is not None, phase=phase)
    return result


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


def adapt_resamplers(net, analysis, policy, result, phase, removed, unknowns):
    """Walk again until every resampling layer (rule.fits_joins) that feeds a join lands on
    the grid, and has the size, of the moved blob it meets: DeepLab's label shrink follows
    the scores, PSPNet's upsampled bins follow the trunk. Returns (policy, walk)."""
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
                # A chain of them (DeepLab v3's Tile along H, then W) lands there together.
                while g != grid and maker is not None and maker.rule.fits_joins:
                    wishes[maker.name] = grid
                    sizes[maker.name] = trunk
                    cut = node if cut is None or node.index < cut.index else cut
                    maker = graph.producer(maker.bottoms[0]) if maker.bottoms else None
        wishes = {k: v for k, v in wishes.items() if policy.resample.get(k) != v}
        if not wishes:
            return policy, result
        found = _sizes_before(net, result, removed, cut, phase, {sizes[k] for k in wishes}, unknowns)
        policy = policy.replace(resample={**policy.resample, **wishes},
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
    stop = next((i for i, layer in enumerate(candidate.layer) if layer.name == join.name), None)
    kept = list(candidate.layer)[:stop] if stop is not None else list(candidate.layer)
    del candidate.layer[:]
    candidate.layer.extend(kept)
    try:
        after = analyse(candidate, phase=phase, unknowns=unknowns)
    except SurgeryError:
        return {}
    return {b: tuple(after.shapes[b][2:]) for b in blobs
            if after.shapes.get(b) is not None and None not in after.shapes[b]}


# ---------------------------------------------------------------------------
# One phase, then every phase
# ---------------------------------------------------------------------------

class PhasePlan(NamedTuple):
    walk: object          # the final Walk of this phase
    policy: DilatePolicy
    removed: set


def plan_phase(net, phase, options, *, input_shapes=None, unknowns=None):
    """Plan one phase, resolving the classifier head; None when nothing needs changing.
    Blocked when the conversion cannot be made as asked."""
    # The analysis reads the net's own layers: a conversion only reads its input.
    analysis = analyse(net, input_shapes=input_shapes, phase=phase, unknowns=unknowns,
                       copy=False)
    removed = heads.cut_after(analysis.graph, options.cut_after) if options.cut_after else set()
    before = analysis.output_stride()
    if before is None:
        raise SurgeryError("no blob of the net has a known stride; nothing to dilate")
    policy = directed(analysis, DilatePolicy(options.output_stride, pooling=options.pooling,
                                             convention=options.convention,
                                             dilation=options.dilation), removed)
    head = options.head
    if max(before) == policy.target and not removed:
        blind = _geometry_stops(analysis)
        if blind:
            why = (analysis.stopped.get(blind.name) or f"type '{blind.type}' is not in the "
                   f"registry{type_hint(blind.type)}")
            raise Blocked("blind", [(blind.name, why)], phase=phase)
        if head == "error" or not heads.classifier_layers(analysis):
            return None     # an explicit --head still applies to a net already at the target
    result = walk_to(analysis, policy, phase, removed)
    seeds = list(result.heads)
    if head == "cut":     # a classifier behind global pooling loads, but the user wants it gone
        pools = [node for node, layer, change in result.changes if change.action == "keep"]
        seeds += [n for n in heads.classifiers_after(analysis, pools) if n not in seeds]
    if head != "error" and not seeds:   # nothing moved, but the user asked for the head
        seeds = heads.classifier_layers(analysis)
    head_nodes = heads.find_head(analysis, seeds, removed)
    if head_nodes:
        if head == "error":
            raise Blocked("head", [(n.name, "its weights are sized for the original map")
                                   for n in head_nodes], phase=phase)
        if head == "cut":
            removed = removed | {n.name for n in head_nodes}
        else:
            pool = heads.global_pool_for(analysis, seeds)
            policy = policy.replace(globalised=frozenset({pool.name}) if pool is not None
                                    else frozenset())
        result = walk(analysis, policy, phase=phase, removed=removed, again=result)
    policy, result = adapt_resamplers(net, analysis, policy, result, phase, removed, unknowns)
    if result.issues:
        raise Blocked("layers", [(node.name, result.issues[node.name])
                                 for node in analysis.graph.nodes if node.name in result.issues],
                      phase=phase)
    if options.multi_grid:
        result = _multi_grid(result, options.multi_grid)
    return PhasePlan(result, policy, removed)


def plan(net, options, *, input_shapes=None, unknowns=None):
    """(new net, [Change] in file order, [PhasePlan], notes): `net` converted as
    `options` ask, in every phase it describes (a layer shared by the phases must get
    the same rewrite in each). Blocked or SurgeryError when it cannot be."""
    notes, plans = [], []

    def one(phase):
        planned = plan_phase(net, phase, options, input_shapes=input_shapes, unknowns=unknowns)
        if planned is None:
            notes.append(f"{phase}: the output stride is already {options.output_stride}; "
                         "nothing changed")
            return None
        plans.append(planned)
        return planned.walk, planned.removed

    new, changes, _ = convert(net, one)
    return new, changes, plans, notes


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
        changes[i] = (node, layer, change._replace(after=after, status=APPROXIMATE, note=note,
                                                   details=(("deviation", True),)))
    return result._replace(changes=changes)
