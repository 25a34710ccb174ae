"""Where each blob's pixels sit on the input image, and what each layer costs.

Per blob and spatial axis (Araujo et al., "Computing Receptive Fields of CNNs", 2019):
cumulative stride S, receptive-field size r and the centre of output pixel 0's RF in
input pixels (offset). A layer seen as a window (kernel k, stride s, pad p, dilation d,
extent e = d*(k-1)+1) maps them as
    r_out = r_in + (e-1)*S_in,   S_out = S_in*s,   offset_out = offset_in + ((e-1)/2 - p)*S_in.
The registry says how each layer's output grid sits on its input grid
(`rule.grid_window`); layers without one (collapse, resample, unknown) end the geometry.
Joins must be aligned (same stride and offset on every branch); a misaligned join is a
warning, not an error, and the largest RF is carried on.
"""

from fractions import Fraction
from typing import NamedTuple

from ..layers import IDENTITY, count
from ..pair import Pair


def _num(x):
    """An int when integral (JSON-friendly), else a float (offsets may be half pixels)."""
    x = Fraction(x)
    return int(x) if x.denominator == 1 else float(x)


class Geometry(NamedTuple):
    stride: Pair
    rf: Pair
    offset: Pair

    def to_json(self):
        return {"stride": list(self.stride), "rf": list(self.rf), "offset": list(self.offset)}


ORIGIN = Geometry(Pair(1, 1), Pair(1, 1), Pair(0, 0))


def apply_window(geom, window):
    """The geometry of a window layer's output given its input's."""
    stride, rf, offset = geom
    kernel, step, pad, dilation = window
    h = _axis(stride.h, rf.h, offset.h, kernel.h, step.h, pad.h, dilation.h)
    w = _axis(stride.w, rf.w, offset.w, kernel.w, step.w, pad.w, dilation.w)
    return Geometry(Pair(h[0], w[0]), Pair(h[1], w[1]), Pair(h[2], w[2]))


def _axis(s_in, r_in, o_in, k, s, p, d):
    """(stride, rf, offset) of one axis after a window (the formulas above)."""
    extent = d * (k - 1) + 1
    return s_in * s, r_in + (extent - 1) * s_in, _offset(o_in, extent, p, s_in)


def _offset(o_in, extent, p, s_in):
    """offset_out = o_in + ((extent-1)/2 - p) * s_in, as `_num` gives it. All integers
    (nearly every layer) need no Fraction: twice the offset is a whole number."""
    if type(o_in) is int and type(extent) is int and type(p) is int and type(s_in) is int:
        twice = 2 * o_in + (extent - 1 - 2 * p) * s_in
        return twice // 2 if twice % 2 == 0 else twice / 2
    return _num(Fraction(o_in) + (Fraction(extent - 1, 2) - p) * s_in)


def join_inputs(graph, node, geometry):
    """[(blob, Geometry)] of the inputs whose grids a layer brings together (a join's
    inputs); None when any is unknown."""
    geoms = [(b, geometry.get(b)) for b in graph.grid_inputs(node)]
    return geoms if geoms and all(g is not None for _, g in geoms) else None


def misaligned(geoms):
    """Whether inputs of one layer sit on different grids (stride or centre)."""
    first = geoms[0][1]
    return any(g.stride != first.stride or g.offset != first.offset for _, g in geoms[1:])


def _join(node, geoms, warnings):
    first_blob, first = geoms[0]
    for blob, g in geoms[1:]:
        if g.stride != first.stride or g.offset != first.offset:
            warnings.append(
                f"layer '{node.name}' ({node.type}): inputs are misaligned: '{first_blob}' has "
                f"stride {tuple(first.stride)} offset {tuple(first.offset)}, '{blob}' has stride "
                f"{tuple(g.stride)} offset {tuple(g.offset)}")
    rf = Pair(max(g.rf.h for _, g in geoms), max(g.rf.w for _, g in geoms))
    return Geometry(first.stride, rf, first.offset)


def infer_geometry(graph):
    """Blob -> Geometry or None, plus a list of warning strings (misaligned joins)."""
    geometry = {name: ORIGIN for name in graph.header_inputs}
    warnings = []
    for node in graph.nodes:
        rule = node.rule
        layer = node.layer
        out = None
        if not node.bottoms:
            out = ORIGIN if rule.makes_data(layer) or not rule.known(layer) else None
        else:
            window = rule.grid_window(layer)
            geoms = join_inputs(graph, node, geometry)
            if window is not None and geoms is not None:
                base = _join(node, geoms, warnings) if len(geoms) > 1 else geoms[0][1]
                # a pointwise layer or a join keeps the grid: apply_window would give base
                out = base if window is IDENTITY else apply_window(base, window)
        for top in node.tops:
            geometry[top] = out
    return geometry, warnings


class LayerStats(NamedTuple):
    name: str
    type: str
    params: object       # number of weights, None if unknown
    flops: object        # multiply-adds (see docs/analysis.md), None if unknown
    activations: object  # elements of the new (not in-place) tops, None if unknown


def layer_stats(graph, shape_result):
    """Per kept layer: parameter count, FLOPs and activation elements."""
    stats = []
    for node in graph.nodes:
        ins = shape_result.in_shapes[node.name]
        outs = shape_result.out_shapes[node.name]
        pshapes = shape_result.param_shapes[node.name]
        params = None if pshapes is None else sum(count(p) for p in pshapes)
        flops = None
        if all(s is not None for s in ins) and all(s is not None for s in outs):
            flops = node.rule.flops(node.layer, ins, outs) if node.bottoms else 0
        new_tops = [s for top, s in zip(node.tops, outs) if not graph.is_in_place(node, top)]
        acts = None if any(s is None for s in new_tops) else sum(count(s) for s in new_tops)
        stats.append(LayerStats(node.name, node.type, params, flops, acts))
    return stats


class Totals(NamedTuple):
    params: int
    flops: int
    activations: int
    complete: bool   # False when some layer's numbers were unknown (totals are lower bounds)


def totals(stats):
    known = lambda key: [getattr(s, key) for s in stats if getattr(s, key) is not None]
    complete = all(s.params is not None and s.flops is not None and s.activations is not None
                   for s in stats)
    return Totals(sum(known("params")), sum(known("flops")), sum(known("activations")), complete)
