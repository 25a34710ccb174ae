"""Caffe-exact shape inference over a Graph, layer by layer in file order.

The per-type arithmetic is in the registry (`layers.py`); this module feeds it the
input shapes, applies user overrides for source blobs, checks what Caffe checks
between layers (in-place layers keep the shape, top counts) and records where and
why inference stopped. Shapes are tuples; None means unknown, never a guess.

A template can leave a number open (`num_output: ${NUM_LABELS}`). Such a layer is run
twice with two different stand-in values for each open field (and for each unknown
input dim); a dim that differs between the runs depends on the unknown and is None,
the rest is exact. So an open channel count leaves the spatial sizes known.
"""

import math
from typing import NamedTuple

from ..errors import SurgeryError
from ..layers import Unknown


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
    """The --input-shape overrides, refused at once where they cannot be right: a blob
    that is not an input, a rank other than the one the net declares for the blob, or
    fewer or more than N,C,H,W for a blob that reaches a spatial window. (A 2-D im_info
    or a label that feeds no window may have any rank.)"""
    clean = {}
    declared = _declared_shapes(graph)
    for blob, shape in (overrides or {}).items():
        if blob not in graph.inputs:
            listed = ", ".join(graph.inputs) or "none"
            raise SurgeryError(f"--input-shape names '{blob}', which is not an input blob "
                               f"(inputs: {listed})", blob=blob)
        shape = tuple(int(d) for d in shape)
        if not shape or any(d <= 0 for d in shape):
            raise SurgeryError(f"input shape {shape} must be positive integers", blob=blob)
        given = f"--input-shape gives {len(shape)} dims ({','.join(map(str, shape))})"
        known = declared.get(blob)
        if known is not None and len(known) != len(shape):
            form = "N,C,H,W" if len(known) == 4 else ",".join("?" * len(known))
            raise SurgeryError(f"{given}, but the net declares {len(known)} "
                               f"({'x'.join(map(str, known))}): give {form}", blob=blob)
        reader = _spatial_reader(graph, blob)
        if len(shape) != 4 and reader is not None:
            raise SurgeryError(f"{given}, but it feeds layer '{reader.name}' ({reader.type}), "
                               "which needs N,C,H,W", blob=blob)
        clean[blob] = shape
    return clean


def _declared_shapes(graph):
    """Input blob -> the shape the net itself declares (header or source layer), if any."""
    declared = {k: v for k, v in header_shapes(graph.net).items() if v is not None}
    for node in graph.nodes:
        if node.bottoms or not node.rule.makes_data(node.layer):
            continue
        try:
            outs = node.rule.out_shapes(node.layer, [])
        except (SurgeryError, Unknown):
            continue
        declared.update((top, tuple(shape)) for top, shape in zip(node.tops, outs)
                        if shape is not None)
    return declared


def _spatial_reader(graph, blob):
    """The first layer with a spatial window (convolution, pooling, resampling) that
    `blob` reaches through layers that keep its grid; None when there is none."""
    seen, stack = set(), [blob]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in graph.consumers(current):
            rule = node.rule
            if rule.reads_window(node.layer) or rule.resamples(node.layer):
                return node
            if rule.keeps_grid(node.layer) or rule.joins(node.layer):
                stack.extend(t for t in node.tops if t not in seen)
    return None


# Two stand-ins for an unknown integer: lcm(1..16) and twice it, so any group or split
# divides both; the other types get two distinct values of their kind.
STANDINS = (720720, 1441440)
_FLOAT_STANDINS = (1.5, 2.5)


def _standin(fd, k):
    if fd.type == fd.TYPE_BOOL:
        return bool(k)
    if fd.type == fd.TYPE_ENUM:
        values = fd.enum_type.values
        return values[min(k, len(values) - 1)].number
    if fd.cpp_type == fd.CPPTYPE_FLOAT or fd.cpp_type == fd.CPPTYPE_DOUBLE:
        return _FLOAT_STANDINS[k]
    return STANDINS[k]


def _path_key(path):
    return [(c if isinstance(c, int) else -1, str(c)) for c in path]


def with_standins(layer, paths, k):
    """A copy of `layer` with every open field (a path inside the layer, e.g.
    ("convolution_param", "num_output") or ("input_param", "shape", 0, "dim", 2)) set to
    stand-in number k; a repeated entry is inserted where the placeholder stood."""
    new = type(layer)()
    new.CopyFrom(layer)
    for path in sorted(paths, key=_path_key):
        _set_open(new, tuple(path), k)
    return new


def _set_open(msg, path, k):
    head, rest = path[0], path[1:]
    if len(rest) > 1 and isinstance(rest[0], int):      # inside one of repeated blocks
        return _set_open(getattr(msg, head)[rest[0]], rest[1:], k)
    if rest and not isinstance(rest[0], int):           # inside a singular block
        return _set_open(getattr(msg, head), rest, k)
    fd = msg.DESCRIPTOR.fields_by_name[head]
    value = _standin(fd, k)
    if not fd.is_repeated:
        setattr(msg, head, value)
        return None
    values = list(getattr(msg, head))
    values.insert(rest[0] if rest else len(values), value)
    del getattr(msg, head)[:]
    getattr(msg, head).extend(values)
    return None


def _known(shape):
    return shape is not None and None not in shape


def _agree(a, b):
    """Per dim: the value both runs gave, None where they differ."""
    if a is None or b is None or len(a) != len(b):
        return None
    return [None if x is None or y is None or len(x) != len(y) else
            tuple(u if u == v else None for u, v in zip(x, y)) for x, y in zip(a, b)]


def evaluate(rule, layer, ins, paths=(), *, params=True):
    """(out shapes, param shapes or None) of one layer; dims that depend on an open field
    (`paths`) or on an unknown input dim are None. Raises Unknown when the rule cannot tell."""
    if not paths and all(_known(s) for s in ins):
        outs = list(rule.out_shapes(layer, ins))
        return outs, ([tuple(p) for p in rule.param_shapes(layer, ins)] if params else None)
    runs, errors = [], []
    for k in (0, 1):
        lay = with_standins(layer, paths, k) if paths else layer
        ins_k = [tuple(STANDINS[k] if d is None else d for d in s) for s in ins]
        try:
            outs = [None if s is None else tuple(s) for s in rule.out_shapes(lay, ins_k)]
            pars = [tuple(p) for p in rule.param_shapes(lay, ins_k)] if params else None
        except SurgeryError as exc:
            errors.append(exc)
            continue
        runs.append((outs, pars))
    if errors:
        # Refused whatever an open input dim is (say the box count R after a proposal
        # layer): Caffe refuses it too. With a template's field open, it may be the value.
        if not paths and len(errors) == 2 and errors[0].message == errors[1].message:
            raise errors[0]
        raise Unknown(f"cannot tell with the placeholder values open ({errors[0].message})")
    (o0, p0), (o1, p1) = runs
    outs = _agree(o0, o1)
    return (outs if outs is not None else [None] * len(o0)), (_agree(p0, p1) if params else None)


def _source_outputs(node, rule, overrides, stopped, paths=()):
    try:
        outs = list(evaluate(rule, node.layer, [], paths, params=False)[0])
    except Unknown as exc:
        outs = [None] * len(node.tops)
        first = overrides.get(node.tops[0]) if node.tops else None
        derived = getattr(rule, "tops_from_data", None)
        if first is not None and derived is not None:
            outs = list(derived(node.layer, first) or outs)
        if not any(top in overrides for top in node.tops):
            # A source whose sizes only its data (or its Python code) decides: say which
            # inputs the user must give.
            tops = node.tops[:1] if derived is not None else node.tops
            wanted = " ".join(f"--input-shape {top}=N,C,H,W" for top in tops)
            stopped[node.name] = f"{exc}; give its tops' shapes: {wanted}"
    outs += [None] * (len(node.tops) - len(outs))
    return [overrides.get(top, out) for top, out in zip(node.tops, outs)]


def infer_shapes(graph, *, input_shapes=None, open_fields=None, opaque=None):
    """Run shape inference; SurgeryError (naming the layer) for nets Caffe would reject.

    `open_fields`: {layer name: paths of fields whose value a template leaves open};
    `opaque`: {layer name: why its outputs cannot be known} (inference stops there)."""
    open_fields, opaque = open_fields or {}, opaque or {}
    overrides = _check_overrides(graph, input_shapes)
    shapes = {}
    for name, shape in header_shapes(graph.net).items():
        shapes[name] = overrides.get(name, shape)
    params, ins_by_layer, outs_by_layer, stopped = {}, {}, {}, {}
    for node in graph.nodes:
        rule = node.rule
        layer = node.layer
        ins = [shapes.get(b) for b in node.bottoms]
        ins_by_layer[node.name] = ins
        layer_params = None
        paths = open_fields.get(node.name, ())
        if node.name in opaque:
            outs = [None] * len(node.tops)
            stopped[node.name] = opaque[node.name]
        elif not node.bottoms:
            if not rule.makes_data(layer) and rule.known(layer):
                raise SurgeryError(f"type '{node.type}' needs a bottom; this layer has none",
                                   layer=node.name)
            outs = _source_outputs(node, rule, overrides, stopped, paths)
            layer_params = []
        elif any(s is None for s in ins):
            outs = [None] * len(node.tops)
            count = rule.param_count(layer, len(ins))   # how many, if not their shapes
            layer_params = None if count is None else [None] * count
        else:
            try:
                outs, layer_params = evaluate(rule, layer, ins, paths)
            except Unknown as exc:
                outs = [None] * len(node.tops)
                if node.tops:  # a top-less layer (MatWrite...) stops nothing
                    stopped[node.name] = str(exc)
        if len(outs) != len(node.tops):
            raise SurgeryError(f"type '{node.type}' makes {len(outs)} output(s) here but the "
                               f"layer lists {len(node.tops)} top(s)", layer=node.name)
        for top, shape in zip(node.tops, outs):
            if shape is not None:
                shape = tuple(map(int, shape)) if None not in shape else \
                    tuple(None if d is None else int(d) for d in shape)
            old = shapes.get(top)
            if graph.is_in_place(node, top) and _differ(old, shape):
                raise SurgeryError(f"in-place layer would change blob '{top}' from {old} to {shape}",
                                   layer=node.name, blob=top)
            shapes[top] = shape
        outs_by_layer[node.name] = [shapes[t] for t in node.tops]
        params[node.name] = layer_params
        for shape in outs_by_layer[node.name] + list(layer_params or ()):
            _check_blob_limits(node, shape)
    return ShapeResult(shapes, params, ins_by_layer, outs_by_layer, stopped)


MAX_AXES = 32            # Caffe's kMaxBlobAxes
MAX_COUNT = 2 ** 31 - 1  # a Caffe blob counts its elements in an int


def _check_blob_limits(node, shape):
    """What Blob::Reshape refuses, found before anyone allocates it."""
    if shape is None:
        return
    if len(shape) > MAX_AXES:
        raise SurgeryError(f"a blob of {len(shape)} axes; Caffe allows at most {MAX_AXES}",
                           layer=node.name)
    count = math.prod(shape) if None not in shape else math.prod(d for d in shape if d is not None)
    if count > MAX_COUNT:
        raise SurgeryError(f"a blob of shape {tuple(shape)} has {count} elements; Caffe counts "
                           f"them in an int (at most {MAX_COUNT})", layer=node.name)


def _differ(old, new):
    """Known shapes that disagree in rank or in a dim both know."""
    if old is None or new is None:
        return False
    return len(old) != len(new) or any(a is not None and b is not None and a != b
                                       for a, b in zip(old, new))
