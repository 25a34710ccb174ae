"""Caffe-exact shape inference over a Graph, layer by layer in file order.

The per-type arithmetic is in the registry (`layers.py`); this module feeds it the
input shapes, applies user overrides for source blobs, checks what Caffe checks
between layers (in-place layers keep the shape, top counts) and records where and
why inference stopped. Shapes are tuples; None means unknown, never a guess.
"""

from typing import NamedTuple

from .errors import SurgeryError
from .layers import Unknown, rule_for


class ShapeResult(NamedTuple):
    shapes: dict         # blob -> tuple or None (the final shape of the blob)
    param_shapes: dict   # layer -> list of tuples, or None when inputs are unknown
    in_shapes: dict      # layer -> list of bottom shapes as that layer saw them
    out_shapes: dict     # layer -> list of top shapes it produced
    stopped: dict        # layer -> reason inference could not continue there


def header_shapes(net):
    """Shapes declared by a legacy `input:` header (input_shape or 4 input_dim per input)."""
    names = list(net.input)
    if not names:
        return {}
    if len(net.input_shape):
        dims = [tuple(int(d) for d in s.dim) for s in net.input_shape]
    elif len(net.input_dim):
        flat = list(net.input_dim)
        if len(flat) != 4 * len(names):
            raise SurgeryError(f"{len(flat)} input_dim values for {len(names)} inputs (need 4 each)")
        dims = [tuple(flat[i:i + 4]) for i in range(0, len(flat), 4)]
    else:
        return {name: None for name in names}
    if len(dims) != len(names):
        raise SurgeryError(f"{len(dims)} input_shape entries for {len(names)} inputs")
    return dict(zip(names, dims))


def _check_overrides(graph, overrides):
    clean = {}
    for blob, shape in (overrides or {}).items():
        if blob not in graph.inputs:
            listed = ", ".join(graph.inputs) or "none"
            raise SurgeryError(f"--input-shape names '{blob}', which is not an input blob "
                               f"(inputs: {listed})", blob=blob)
        shape = tuple(int(d) for d in shape)
        if not shape or any(d <= 0 for d in shape):
            raise SurgeryError(f"input shape {shape} must be positive integers", blob=blob)
        clean[blob] = shape
    return clean


def _source_outputs(node, rule, overrides, stopped):
    try:
        outs = list(rule.out_shapes(node.layer, []))
    except Unknown as exc:
        outs = [None] * len(node.tops)
        first = overrides.get(node.tops[0]) if node.tops else None
        derived = getattr(rule, "tops_from_data", None)
        if first is not None and derived is not None:
            outs = list(derived(node.layer, first) or outs)
        if not any(top in overrides for top in node.tops):
            stopped[node.name] = str(exc)
    outs += [None] * (len(node.tops) - len(outs))
    return [overrides.get(top, out) for top, out in zip(node.tops, outs)]


def infer_shapes(graph, *, input_shapes=None):
    """Run shape inference; SurgeryError (naming the layer) for nets Caffe would reject."""
    overrides = _check_overrides(graph, input_shapes)
    shapes = {}
    for name, shape in header_shapes(graph.net).items():
        shapes[name] = overrides.get(name, shape)
    params, ins_by_layer, outs_by_layer, stopped = {}, {}, {}, {}
    for node in graph.nodes:
        rule = rule_for(node.type)
        layer = node.layer
        ins = [shapes.get(b) for b in node.bottoms]
        ins_by_layer[node.name] = ins
        layer_params = None
        if not node.bottoms:
            outs = _source_outputs(node, rule, overrides, stopped)
            layer_params = []
        elif any(s is None for s in ins):
            outs = [None] * len(node.tops)
        else:
            try:
                outs = list(rule.out_shapes(layer, ins))
                layer_params = [tuple(p) for p in rule.param_shapes(layer, ins)]
            except Unknown as exc:
                outs = [None] * len(node.tops)
                if node.tops:  # a top-less layer (MatWrite...) stops nothing
                    stopped[node.name] = str(exc)
        if len(outs) != len(node.tops):
            raise SurgeryError(f"type '{node.type}' makes {len(outs)} output(s) here but the "
                               f"layer lists {len(node.tops)} top(s)", layer=node.name)
        for top, shape in zip(node.tops, outs):
            shape = None if shape is None else tuple(int(d) for d in shape)
            old = shapes.get(top)
            if graph.is_in_place(node, top) and old is not None and shape is not None and old != shape:
                raise SurgeryError(f"in-place layer would change blob '{top}' from {old} to {shape}",
                                   layer=node.name, blob=top)
            shapes[top] = shape
        outs_by_layer[node.name] = [shapes[t] for t in node.tops]
        params[node.name] = layer_params
    return ShapeResult(shapes, params, ins_by_layer, outs_by_layer, stopped)
