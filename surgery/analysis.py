"""One call that answers "what does this net compute, on which grid, at what cost".

`analyse(net)` bundles the phase-filtered graph, Caffe-exact shapes and param shapes,
per-blob geometry (stride, receptive field, centre offset), per-layer cost and the
warnings; passes and the `inspect` command read everything from here.
"""

import re
from typing import NamedTuple

from .errors import SurgeryError
from .geometry import infer_geometry, layer_stats, totals
from .graph import build_graph
from .shapes import infer_shapes


class Analysis(NamedTuple):
    graph: object
    shapes: dict         # blob -> tuple or None
    param_shapes: dict   # layer -> list of tuples (None when its inputs are unknown)
    geometry: dict       # blob -> Geometry(stride, rf, offset) or None
    layer_stats: list    # LayerStats per kept layer, in order
    warnings: list       # strings, e.g. misaligned joins
    stopped: dict        # layer -> why shape inference stopped there
    in_shapes: dict      # layer -> bottom shapes as that layer saw them
    out_shapes: dict     # layer -> top shapes it produced

    @property
    def totals(self):
        return totals(self.layer_stats)

    def deepest_blob(self):
        """The last blob (in file order) still on the image grid with more than one pixel
        (so a classifier's 7x7 pool5 gives way to res5c): 'the output' of a backbone."""
        for node in reversed(self.graph.nodes):
            for top in reversed(node.tops):
                if self.geometry.get(top) is not None and _is_spatial(self.shapes.get(top)):
                    return top
        return None


def _is_spatial(shape):
    return shape is None or (len(shape) == 4 and shape[2] * shape[3] > 1)


def analyse(net, *, input_shapes=None, phase="TEST"):
    """Analyse a NetParameter (upgraded to `layer` form); SurgeryError for nets Caffe rejects."""
    graph = build_graph(net, phase=phase)
    result = infer_shapes(graph, input_shapes=input_shapes)
    geometry, warnings = infer_geometry(graph)
    for name, reason in result.stopped.items():
        warnings.append(f"layer '{name}': shape inference stopped: {reason}")
    stats = layer_stats(graph, result)
    return Analysis(graph, result.shapes, result.param_shapes, geometry, stats, warnings,
                    result.stopped, result.in_shapes, result.out_shapes)


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
