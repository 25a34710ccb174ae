"""What a report says about one net or a conversion, computed from the nets alone.

Nothing here knows how CONVERTED was made: layers are paired by name, a layer's status
comes from comparing its two versions (`layer_status`, the one place statuses are
decided), the common grid of the deepest shared blob is found from both nets' geometry
as `verify` finds it, and the input sizes for which that grid holds are found by
analysing both nets over one period of the sizes that matter.
"""

import math
from typing import NamedTuple

from ...analysis.analyse import analyse
from ...errors import SurgeryError
from ...layers import Unknown
from ...transform.dilate import adapted_layers, approximate_layers
from ...engines.verify import _deepest_exact, _grid

# Layer statuses in a conversion (None: the conversion left the layer alone).
EXACT, APPROXIMATE, ADAPTED, REMOVED, ADDED = "EXACT", "APPROXIMATE", "ADAPTED", "REMOVED", "NEW"
STATUSES = (EXACT, APPROXIMATE, ADAPTED, REMOVED, ADDED)


class Side(NamedTuple):
    """One net of the report: its file, its NetFile (from load_net) and its Analysis."""
    path: str
    loaded: object
    analysis: object


class LayerView(NamedTuple):
    """What a status compares: a layer's settings as the registry sees them."""
    name: str
    type: str
    role: str
    window: object       # Window, None (no window) or "?" (cannot be read)
    params: object       # param shapes from the analysis


def view(analysis, node):
    rule = node.rule
    try:
        window = rule.window(node.layer)
    except (SurgeryError, Unknown):
        window = "?"
    return LayerView(node.name, node.type, rule.role_name(node.layer), window,
                     analysis.param_shapes.get(node.name))


def layer_status(before, after, approximate, adapted=frozenset()):
    """The status of one layer of a conversion, from its two versions alone.

    `before`/`after` are LayerViews, None where that net lacks the layer; `approximate`
    holds the names `approximate_layers` gives for the pair. Returns None for a layer
    the conversion left alone and exact.

    To add a status (e.g. ADAPTED: an intended change that keeps the net's meaning at the
    new stride but is not numerically equal), give it a constant in STATUSES, a branch
    here (before the EXACT one) and a colour in graph.STYLES; the page, legend, counts
    and old -> new windows follow."""
    if after is None:
        return REMOVED
    if before is None:
        return ADDED
    if after.name in adapted:
        return ADAPTED
    if after.name in approximate:
        return APPROXIMATE
    if before[1:] != after[1:]:
        return EXACT
    return None


class Report(NamedTuple):
    before: Side
    after: object          # Side, or None for a one-net report
    status: dict           # layer name -> status or None, over both nets
    approximate: set       # layer names of `after` that cannot be exact
    grid: object           # (blob, factor, offset) of the deepest shared exact blob, or None
    sizes: object          # SizeCondition, or None for a one-net report

    @property
    def drawn(self):
        """The net whose layers and shapes the page shows (the converted one, if any)."""
        return self.after or self.before

    def changed(self):
        return [name for name, s in self.status.items() if s is not None]


class SizeCondition(NamedTuple):
    text: str              # e.g. "every input size", "H mod 16 in {...} and W mod 16 in {...}"
    holds_here: object     # True / False at the analysed size, None when unknown


def compare(before, after, *, input_shapes=None, phase="TEST"):
    """The Report for one Side, or for a conversion `before` -> `after`."""
    if after is None:
        return Report(before, None, {n.name: None for n in before.analysis.graph.nodes},
                      set(), None, None)
    a, b = before.analysis, after.analysis
    approximate = approximate_layers(before.loaded.net, after.loaded.net,
                                     input_shapes=input_shapes, phase=phase)
    adapted = adapted_layers(before.loaded.net, after.loaded.net,
                             input_shapes=input_shapes, phase=phase)
    old = {n.name: view(a, n) for n in a.graph.nodes}
    new = {n.name: view(b, n) for n in b.graph.nodes}
    status = {name: layer_status(old.get(name), new.get(name), approximate, adapted)
              for name in list(new) + [n for n in old if n not in new]}
    tainted = b.graph.downstream_blobs(approximate)
    blob = _deepest_exact(a, b, tainted, set(b.graph.inputs))
    grid = (blob, *_grid(blob, a, b)[0]) if blob is not None else None
    sizes = size_condition(before, after, tainted, phase)
    return Report(before, after, status, approximate, grid, sizes)


def _shared_grids(a, b, tainted):
    """blob -> ((fh, fw), (oh, ow)) for every 4-D blob both nets compute on the image grid
    that no approximate layer feeds; None where the two nets' grids do not line up."""
    grids = {}
    for node in b.graph.nodes:
        for blob in node.tops:
            shape = a.shapes.get(blob)
            if blob in tainted or a.graph.last_writer(blob) is None or shape is None \
                    or len(shape) != 4 or None in (a.geometry.get(blob), b.geometry.get(blob)):
                continue
            grids[blob] = _grid(blob, a, b)[0]
    return grids


def _covered(a, b, blob, grid, axis):
    """Does every position of the original blob have its sample in the converted one?"""
    (factor, offset) = grid
    n, m = a.shapes[blob][2 + axis], b.shapes[blob][2 + axis]
    return None not in (n, m) and offset[axis] + factor[axis] * (n - 1) < m


def _axis_holds(a, b, base, axis):
    """Along one axis, every blob of `base` keeps its grid there and all its positions."""
    grids = _shared_grids(a, b, ())
    return all(grids.get(blob) is not None and grids[blob][0][axis] == g[0][axis]
               and grids[blob][1][axis] == g[1][axis] and _covered(a, b, blob, grids[blob], axis)
               for blob, g in base.items())


def _size_dependent(a, b):
    """Layers of both nets that lost a stride and have no dilation field (pooling): Caffe
    rounds their output size up, so whether a partial last window exists depends on the size."""
    found = []
    for node in b.graph.nodes:
        rule = node.rule
        if node.name not in a.graph or rule.dilatable or not rule.reads_window(node.layer):
            continue
        old, new = view(a, a.graph.node(node.name)).window, view(b, node).window
        if all(w not in (None, "?") for w in (old, new)) and old.stride != new.stride:
            found.append(node)
    return found


def size_condition(before, after, tainted, phase):
    """For which input sizes the shared blobs that no approximate layer feeds keep their
    grid and every original position (see `_size_dependent`). A size-dependent layer's
    decision repeats with the period of its output stride, so one period is analysed."""
    a, b = before.analysis, after.analysis
    base = _shared_grids(a, b, tainted)
    known = {blob: g for blob, g in base.items()
             if None not in a.shapes[blob] and None not in b.shapes[blob]}
    holds = all(g is not None for g in known.values()) and \
        all(_axis_holds(a, b, known, axis) for axis in (0, 1))
    watched = _size_dependent(a, b)
    if not watched:
        return SizeCondition("every input size", holds)
    inputs = [(k, s) for k, s in a.shapes.items() if k in a.graph.inputs and s is not None]
    if len(inputs) != 1 or len(inputs[0][1]) != 4 or None in inputs[0][1] or None in base.values():
        return SizeCondition("unknown (needs one known 4-D input and aligned grids; give "
                             "--input-shape)", None if holds else False)
    (name, shape), = inputs
    periods = [math.lcm(*(a.geometry[n.tops[0]].stride[axis] for n in watched
                          if a.geometry.get(n.tops[0]) is not None)) for axis in (0, 1)]
    good = (set(), set())
    for k in range(math.lcm(*periods)):
        size = (*shape[:2], shape[2] + k, shape[3] + k)
        try:
            a2, b2 = (analyse(side.loaded.net, input_shapes={name: size}, phase=phase,
                              unknowns=side.loaded.unknowns) for side in (before, after))
        except SurgeryError:
            continue
        for axis in (0, 1):
            if _axis_holds(a2, b2, base, axis):
                good[axis].add(size[2 + axis] % periods[axis])
    if all(len(good[axis]) == periods[axis] for axis in (0, 1)):
        return SizeCondition("every input size", holds)
    return SizeCondition(" and ".join(
        f"{'HW'[axis]} mod {periods[axis]} in {{{', '.join(map(str, sorted(good[axis])))}}}"
        for axis in (0, 1)), holds)
