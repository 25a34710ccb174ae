"""DeepLab v1's `hole`: its name for dilation, in one place.

DeepLab v1 wrote `convolution_param { hole: 2 }` (or `hole_h`/`hole_w`) where Caffe now
writes `dilation`. This module holds all that follows from it: the upgrade step that turns
a hole into a dilation (surgery.io.upgrade runs it after Caffe's own steps), the minimal
edit that writes a changed dilation back as a hole in a file that spells it so
(surgery.io.preserve), and the field path a placeholder on a hole has in the upgraded net
(surgery.io.netfile).
"""

from .. import caffe_pb2
from ..errors import SurgeryError

# The fork's fields in ConvolutionParameter (proto/caffe.proto).
HOLE_FIELDS = ("hole", "hole_h", "hole_w")


def hole_to_dilation(net, notes):
    """The upgrade step Caffe does not have, in place on an upgraded `net`: every layer's
    hole becomes its dilation (or is dropped when it repeats it), with a note each."""
    fields = caffe_pb2.ConvolutionParameter.DESCRIPTOR.fields_by_name
    hole_fields = [name for name in HOLE_FIELDS if name in fields]
    if not hole_fields:
        return
    for layer in net.layer:
        if not layer.HasField("convolution_param"):
            continue
        conv = layer.convolution_param
        if not any(conv.HasField(name) for name in hole_fields):
            continue
        both = conv.hole if conv.HasField("hole") else 1
        h = conv.hole_h if "hole_h" in hole_fields and conv.HasField("hole_h") else both
        w = conv.hole_w if "hole_w" in hole_fields and conv.HasField("hole_w") else both
        if h < 1 or w < 1:
            raise SurgeryError(f"hole must be at least 1, got {h}x{w}", layer=layer.name)
        wanted = [h] if h == w else [h, w]
        existing = list(conv.dilation)
        for name in hole_fields:
            conv.ClearField(name)
        if existing:
            as_pair = (existing[0], existing[0]) if len(existing) == 1 else tuple(existing[:2])
            if as_pair != (h, w):
                raise SurgeryError(
                    f"has hole {h}x{w} and dilation {existing} that disagree; keep one of them",
                    layer=layer.name,
                )
            notes.append(f"layer '{layer.name}': dropped hole, which repeats its dilation")
            continue
        conv.dilation.extend(wanted)
        shown = " ".join(str(v) for v in wanted)
        notes.append(f"layer '{layer.name}': DeepLab hole became dilation {shown}")


def as_hole(as_written, value):
    """A dilation written as DeepLab v1's `hole` (or hole_h/hole_w), clearing the old form."""
    conv = as_written.convolution_param
    fields = conv.DESCRIPTOR.fields_by_name
    old = [f"convolution_param.{f}" for f in HOLE_FIELDS if f in fields and conv.HasField(f)]
    if value is None:
        return [(p, None) for p in old]
    h, w = (value[0], value[0]) if len(value) == 1 else value[:2]
    want = ([("convolution_param.hole", h)] if h == w else
            [("convolution_param.hole_h", h), ("convolution_param.hole_w", w)])
    kept = {p for p, _ in want}
    return [(p, None) for p in old if p not in kept] + want


def has_hole(layer):
    """Whether a layer as written spells its dilation as DeepLab v1's `hole`."""
    if not layer.HasField("convolution_param"):
        return False
    conv = layer.convolution_param
    return any(f in conv.DESCRIPTOR.fields_by_name and conv.HasField(f) for f in HOLE_FIELDS)


def upgraded_path(path):
    """A path inside a layer, as the upgraded layer spells it (DeepLab `hole` is `dilation`)."""
    if path[:1] == ("convolution_param",) and len(path) > 1 and path[1] in HOLE_FIELDS:
        return ("convolution_param", "dilation")
    return tuple(path)
