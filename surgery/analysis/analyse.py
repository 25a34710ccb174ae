"""One call that answers "what does this net compute, on which grid, at what cost".

`analyse(net)` bundles the phase-filtered graph, Caffe-exact shapes and param shapes,
per-blob geometry (stride, receptive field, centre offset), per-layer cost and the
warnings; passes and the `inspect` command read everything from here.

What a file leaves open is passed in as `Unknowns` (built by `io.netfile.load_net`):
a `${NAME}` where a number belongs makes only the dims that depend on it unknown
(see shapes.py), and a layer whose window is open, or that holds a field the schema
lacks inside its window parameters, is shown to everyone downstream (geometry, the
passes) as a layer of unknown type, `Type?`: its geometry is unknown and no pass
rewrites through it. Passes take the same `unknowns=` keyword and hand it on to
every `analyse` they run.
"""

import functools
import re

from ..errors import SurgeryError
from .geometry import ORIGIN, apply_window, infer_geometry, join_inputs, layer_stats, misaligned, totals
from .graph import Graph, build_graph
from ..layers import UNKNOWN, Unknown
from .shapes import infer_shapes, with_standins
from ..pair import Pair
from ..unknowns import NO_UNKNOWNS


class Analysis:
    """What `analyse` found. The per-layer costs (`layer_stats`, `totals`) are counted
    on first use: the passes never read them."""

    def __init__(self, graph, result, geometry, warnings, unknown):
        self.graph = graph
        self.shapes = result.shapes              # blob -> tuple or None
        self.param_shapes = result.param_shapes  # layer -> list of tuples (None when its
                                                 # inputs are unknown)
        self.geometry = geometry     # blob -> Geometry(stride, rf, offset) or None
        self.warnings = warnings     # strings, e.g. misaligned joins
        self.stopped = result.stopped            # layer -> why shape inference stopped there
        self.in_shapes = result.in_shapes        # layer -> bottom shapes as that layer saw them
        self.out_shapes = result.out_shapes      # layer -> top shapes it produced
        self.unknown = unknown       # layer -> why values are unknown from there on
                                     # (`stopped`, and layers where a placeholder leaves a
                                     # size open)
        self._shapes = result
        self._carried = None
        self._stride = None         # (output_stride(),), found when first asked

    @functools.cached_property
    def layer_stats(self):
        """LayerStats per kept layer, in order."""
        return layer_stats(self.graph, _fully_known(self._shapes))

    @property
    def totals(self):
        return totals(self.layer_stats)

    def misaligned_joins(self):
        """Names of the layers whose inputs sit on different grids."""
        return {node.name for node in self.graph.nodes if len(node.bottoms) > 1
                and (geoms := join_inputs(self.graph, node, self.geometry)) is not None and misaligned(geoms)}

    def output_stride(self):
        """The net's output stride: the largest stride on its trunk (a pyramid's pooled
        branches aside), per axis; None when no blob has a known stride. A conversion caps
        every stride at its target, so this is what it compares the target with."""
        if self._stride is None:
            side = self.resampled_branches()
            strides = [g.stride for b, g in self.geometry.items()
                       if g is not None and b not in side]
            self._stride = (Pair(max(s.h for s in strides), max(s.w for s in strides)),) \
                if strides else (None,)
        return self._stride[0]

    def deepest_blob(self):
        """'The output' of a backbone: of the blobs on the image grid with more than one
        pixel (so a classifier's 7x7 pool5 gives way to res5c), off any resampled side
        branch, the one that sees the most (the largest receptive field; the last in file
        order on a tie). A skip net's output is its trunk's (FCN-8s: score_fr, not the
        skip branches its upsampled scores meet), and an auxiliary classifier's coarse
        pooling (GoogLeNet's loss1/ave_pool) is not the net's output. Of one layer's tops,
        the first: a MAX pooling's argmax mask (SegNet's pool5_mask) is not its output."""
        side = self.resampled_branches()
        best, best_rf, best_node = None, None, None
        for node in self.graph.nodes:
            for top in node.tops:
                geometry = self.geometry.get(top)
                if geometry is None or top in side or not _is_spatial(self.shapes.get(top)):
                    continue
                rf = max(geometry.rf)
                if best_rf is None or rf > best_rf or (rf == best_rf and node is not best_node):
                    best, best_rf, best_node = top, rf, node
        return best

    def unknown_origins(self):
        """({blob: layers}, {layer: layers}): for each blob whose shape, and each layer whose
        param shapes or costs, are not fully known, the layers of `unknown` the gap comes
        from, in file order."""
        position = {node.name: i for i, node in enumerate(self.graph.nodes)}
        blobs, layers = {}, {}
        for node, stats in zip(self.graph.nodes, self.layer_stats):
            origins = {name for b in node.bottoms for name in blobs.get(b, ())}
            if node.name in self.unknown:
                origins.add(node.name)
            ordered = sorted(origins, key=position.get)
            if None in (stats.params, stats.flops, stats.activations) or \
                    not all(_whole(p) for p in self.param_shapes.get(node.name) or ()):
                layers[node.name] = ordered
            for top, shape in zip(node.tops, self.out_shapes[node.name]):
                if _whole(shape):
                    blobs.pop(top, None)
                else:
                    blobs[top] = ordered
        return blobs, layers

    def unknown_reasons(self):
        """{layer: why its param shapes or costs are not fully known}, one line each."""
        _, layers = self.unknown_origins()
        return {name: "; ".join(f"layer '{o}': {self.unknown[o]}" for o in origins)
                for name, origins in layers.items() if origins}

    def carried_geometry(self):
        """The geometry, plus where it was lost only because a join also reads a resampled
        blob (PSPNet's Concat of the trunk and its upsampled bins): the join sits on the
        grid of its first input with a known geometry, and the layers after it carry that
        on; and through a layer that keeps the grid in blocks of rows (the RPN's Reshape,
        whose rows are not image rows, so it has no geometry of its own). Enough to convert them (transform/walk.py) and to bound their coarsening.
        A resampled copy of the image itself (DeepLab's multi-scale inputs, `data075`)
        starts a grid of its own, so the trunk that reads it converts like the main one.
        Found once per analysis; callers only read it."""
        if self._carried is None:
            self._carried = self._carry_geometry()
        return self._carried

    def _carry_geometry(self):
        geometry = dict(self.geometry)
        for node in self.graph.nodes:
            if node.bottoms and node.rule.resamples(node.layer) and \
                    node.rule.grid_window(node.layer) is None and \
                    geometry.get(node.bottoms[0]) == ORIGIN:
                for top in node.tops:
                    geometry.setdefault(top, None)
                    geometry[top] = geometry[top] or ORIGIN
                continue
            spatial = self.graph.grid_inputs(node)
            source = geometry.get(node.bottoms[0]) if node.bottoms else None
            if source is None:
                source = next((geometry[b] for b in spatial if geometry.get(b) is not None), None)
            lost = [top for top in node.tops if geometry.get(top) is None]
            window = node.rule.grid_window(node.layer) if lost and source is not None else None
            for top in lost:
                if window is not None:
                    geometry[top] = apply_window(source, window)
                elif source is not None and node.rule.keeps_grid(node.layer):
                    geometry[top] = source      # blocks of rows, each on the input's grid
        return geometry

    def resampled_branches(self):
        """Blobs on side branches that rejoin the net only through a resampling layer, such
        as PSPNet's pyramid pooling (pool -> conv -> Interp back to the trunk's size). Their
        coarse stride is not the net's output stride. (The graph alone decides them: found
        once per graph, however many passes ask.)"""
        memo = self.graph.memo
        if "resampled_branches" not in memo:
            memo["resampled_branches"] = frozenset(_resampled_branches(self.graph))
        return memo["resampled_branches"]


def _resampled_branches(graph):
    found = {}

    def readers(blob):
        if blob not in found:
            writers = {w.name for w in graph.writers(blob)}
            found[blob] = [c for c in graph.consumers(blob) if c.name not in writers]
        return found[blob]

    leads = set()    # every path from the blob meets a resampling layer first
    for node in reversed(graph.nodes):
        for top in node.tops:
            if not graph.is_in_place(node, top) and readers(top) and \
                    all(_leads_to_resampling(r, leads) for r in readers(top)):
                leads.add(top)
    # A side branch hangs off a trunk blob that also feeds the rest of the net. One that
    # starts by resampling (a multi-scale input, `data075`) is a trunk of its own.
    side, stack = set(), []
    for blob in graph.blobs:
        starts = [r for r in readers(blob) if _leads_to_resampling(r, leads)
                  and not r.rule.resamples(r.layer)]
        if blob not in leads and starts:
            stack += [t for r in starts for t in r.tops if t in leads]
    while stack:
        blob = stack.pop()
        if blob not in side:
            side.add(blob)
            stack += [t for r in readers(blob) for t in r.tops if t in leads]
    return side


def _leads_to_resampling(node, side):
    rule = node.rule
    if rule.resamples(node.layer):
        return True
    return (rule.reads_window(node.layer) or rule.keeps_grid(node.layer)) and \
        all(t in side for t in node.tops)


def _whole(shape):
    return shape is not None and None not in shape


def _is_spatial(shape):
    if shape is None:
        return True
    return len(shape) == 4 and (None in shape[2:] or shape[2] * shape[3] > 1)


def analyse(net, *, input_shapes=None, phase="TEST", unknowns=None, copy=True):
    """Analyse a NetParameter (upgraded to `layer` form); SurgeryError for nets Caffe rejects.
    `unknowns`: what the file leaves open (see the module docstring); none by default.
    `copy=False`: the analysis reads `net`'s own layers instead of a copy of them (the
    caller does not change `net` while the analysis is in use; a conversion of a net of
    thousands of layers holds two analyses, and a copy of the net each would be most
    of their memory)."""
    unknowns = unknowns or NO_UNKNOWNS
    graph = build_graph(net, phase=phase, copy=copy)
    opaque = _opaque_layers(graph, unknowns)
    graph = _masked(graph, opaque)
    result = infer_shapes(graph, input_shapes=input_shapes, open_fields=unknowns.values,
                          opaque=opaque)
    geometry, warnings = infer_geometry(graph)
    for name, reason in result.stopped.items():
        warnings.append(f"layer '{name}': shape inference stopped: {reason}")
    unknown = dict(result.stopped)
    for name, reason in _left_open(graph, result, unknowns).items():
        unknown[name] = reason
        warnings.append(f"layer '{name}': {reason}")
    return Analysis(graph, result, geometry, warnings, unknown)


def _left_open(graph, result, unknowns):
    """Layers whose inputs are known but whose outputs or param shapes are not, because a
    placeholder leaves one of their fields open: layer -> why."""
    open_here = {}
    for node in graph.nodes:
        paths = unknowns.values.get(node.name)
        if not paths or node.name in result.stopped or \
                not all(_whole(s) for s in result.in_shapes[node.name]):
            continue
        made = list(result.out_shapes[node.name]) + list(result.param_shapes[node.name] or ())
        if not all(_whole(s) for s in made):
            open_here[node.name] = f"a placeholder in {_shown(paths)} leaves a size open"
    return open_here


def _shown(paths):
    return ", ".join(".".join(str(c) for c in p) for p in sorted(paths, key=str))


def _opaque_layers(graph, unknowns):
    """Kept layers whose geometry is unknown: the file says so, or an open field moves
    the window (tried with two stand-in values, so no per-field list is needed)."""
    opaque = {}
    for node in graph.nodes:
        if node.name in unknowns.opaque:
            opaque[node.name] = unknowns.opaque[node.name]
            continue
        paths = unknowns.values.get(node.name)
        if not paths:
            continue
        rule = node.rule
        seen = set()
        for k in (0, 1):
            layer = with_standins(node.layer, paths, k)
            try:
                seen.add((rule.role_name(layer), rule.window(layer)))
            except (SurgeryError, Unknown):
                seen.add(None)
        if len(seen) > 1 or None in seen:
            opaque[node.name] = f"a placeholder in {_shown(paths)} decides its window"
    return opaque


def _masked(graph, opaque):
    """The graph with each opaque layer read through the unknown rule (its type stays)."""
    if not opaque:
        return graph
    nodes = [n._replace(rule=UNKNOWN) if n.name in opaque else n for n in graph.nodes]
    return Graph(graph.net, nodes, graph.header_inputs)


def _fully_known(result):
    """The ShapeResult with partly known shapes as None, for counting params and FLOPs."""
    whole = lambda s: s if s is None or None not in s else None
    per_layer = lambda d: {k: None if v is None else [whole(s) for s in v] for k, v in d.items()}
    params = {k: None if v is None or any(whole(p) is None for p in v) else v
              for k, v in result.param_shapes.items()}
    return result._replace(param_shapes=params, in_shapes=per_layer(result.in_shapes),
                           out_shapes=per_layer(result.out_shapes))


_SPEC = re.compile(r"^\s*([^=\s][^=]*?)\s*=\s*(\d+(?:\s*[,x]\s*\d+)*)\s*$")


def parse_input_shapes(specs):
    """["data=1,3,224,224", ...] -> {"data": (1, 3, 224, 224)}; SurgeryError on bad syntax."""
    shapes = {}
    for spec in specs or ():
        match = _SPEC.match(spec)
        if not match:
            raise SurgeryError(f"bad --input-shape '{spec}'; expected NAME=N,C,H,W (e.g. data=1,3,224,224)")
        name, dims = match.group(1), tuple(int(d) for d in re.split(r"[,x]", match.group(2)))
        if any(d <= 0 for d in dims):
            raise SurgeryError(f"bad --input-shape '{spec}': sizes must be positive")
        if name in shapes:
            raise SurgeryError(f"--input-shape gives '{name}' twice")
        shapes[name] = dims
    return shapes
