"""A net made runnable for one engine, in memory, before it runs: the user's files are
never changed, and the engine reads only what this module writes.

`prepare(analysis, engine)` takes the analysed net (one phase's layers, upgraded from
V0/V1 by the loader) and asks each layer's rule what the engine runs in its place
(`LayerRule.for_engine`):

- data layers (ImageSegData, ImageData, Data, DenseImageData, AnnotatedData, WindowData,
  HDF5Data, MemoryData, Python readers) become an Input of the same tops, sized as the
  analysis found them (the data layer's settings or --input-shape); tops after the first
  are labels, which a run feeds with zeros;
- layers that only score or write (losses, Accuracy, SegAccuracy, MatWrite, Silence)
  are left out, and so is what then computes only from labels for nobody (a shrunk
  label), and a label no layer reads;
- fork layers become their exact BVLC form (PSPNet's BN: BatchNorm + Scale) or, in Caffe,
  a Python layer with the fork's arithmetic (engines/pylayers/forklayers.py); OpenCV
  gets the forms its own importer computes right (Interp sized, Axpy's operands swapped,
  ceil_mode for round_mode).

The rewritten layers are listed in `forms`; transform.bvlc.form_weights makes the weight
plan for those whose blobs change (BN's become BatchNorm's and Scale's).
"""

from typing import NamedTuple

from .. import caffe_pb2
from ..errors import SurgeryError
from ..layers import rule_for
from .engine import ENGINES

# BVLC master's LayerParameter ends at clip_param = 148; proto/caffe.proto puts the forks'
# layer fields after it (DeepLab v1's strict_dim, interp_param, bn_param, ...), which
# BVLC Caffe's parser refuses.
BVLC_LAST_LAYER_FIELD = 148
_FORK_LAYER_FIELDS = tuple(fd.name for fd in caffe_pb2.LayerParameter.DESCRIPTOR.fields
                           if fd.number > BVLC_LAST_LAYER_FIELD)
_RULE_FIELDS = ("include", "exclude", "phase")


class Prepared(NamedTuple):
    net: object          # NetParameter the engine runs (no phase rules left)
    forms: tuple         # ((original layer, [layers in its place]), ...) rewritten layers
    labels: frozenset    # input blobs that hold labels (a run feeds zeros)
    left_out: tuple      # names of the original's layers that do not run

    @property
    def blobs(self):
        """Every blob the prepared net computes or is fed."""
        return {top for layer in self.net.layer for top in layer.top}

    @property
    def inputs(self):
        """The blobs fed to the net (tops of layers without bottoms), in order."""
        return [top for layer in self.net.layer if not layer.bottom for top in layer.top]


def prepare(analysis, engine, *, as_is=()):
    """The analysed net made runnable in `engine` ("caffe" or "opencv"). `as_is`: names
    of layers to run as they are (a layer holding a field the schema lacks: its meaning
    is not known well enough to rewrite it)."""
    if engine not in ENGINES:
        raise SurgeryError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}")
    layers, forms, labels, left_out, sizes = [], [], set(), [], {}
    for node in analysis.graph.nodes:
        layer = node.layer
        form = None if node.name in as_is else node.rule.for_engine(layer, engine)
        shapes = (analysis.in_shapes.get(node.name) or [],
                  dict(zip(node.tops, analysis.out_shapes.get(node.name) or ())))
        if form is None:
            layers.append(_clean(layer, engine))
            sizes[layer.name] = shapes
            continue
        if not form:
            left_out.append(node.name)
            continue
        made = [_clean(new, engine) for new in form]
        for new in made:
            if list(new.top) == list(node.tops):     # it stands for the layer: same sizes
                sizes[new.name] = shapes
        if not node.bottoms and not any(new.bottom for new in made):
            labels.update(node.tops[1:])         # a data layer's tops after the image
        forms.append((layer, made))
        layers.extend(made)
    layers = _without_label_only(layers, labels, left_out)
    _check_names(layers)
    # Sizes last: a label nobody reads is gone by now, so its size need not be known.
    layers = [_sized(layer, *sizes[layer.name]) if layer.name in sizes else layer
              for layer in layers]
    net = caffe_pb2.NetParameter()
    if analysis.graph.net.HasField("name"):
        net.name = analysis.graph.net.name
    net.layer.extend(layers)
    kept = {top for layer in layers for top in layer.top}
    return Prepared(net, tuple(forms), frozenset(labels & kept), tuple(left_out))


def _sized(layer, in_shapes, out_shapes):
    return rule_for(layer.type).with_sizes(layer, in_shapes, [out_shapes.get(t) for t in layer.top])


def _clean(layer, engine):
    """A copy without phase rules (the phase is chosen already) and, for Caffe, without
    the layer fields BVLC's parser lacks."""
    new = type(layer)()
    new.CopyFrom(layer)
    for name in _RULE_FIELDS + (_FORK_LAYER_FIELDS if engine == "caffe" else ()):
        new.ClearField(name)
    return new


def _without_label_only(layers, labels, left_out):
    """`layers` without what computes only from labels for no one (a label shrunk for a
    loss that is left out), and without label tops no layer reads."""
    layers = list(layers)
    changed = True
    while changed:
        changed = False
        from_data = set()
        for layer in layers:
            inputs = not layer.bottom
            if (inputs and rule_for(layer.type).makes_data(layer)) or \
                    any(b in from_data for b in layer.bottom):
                from_data.update(t for t in layer.top if not (inputs and t in labels))
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            if not layer.bottom or any(b in from_data for b in layer.bottom):
                continue
            read = {b for later in layers[i + 1:] for b in later.bottom}
            if not set(layer.top) & read:
                left_out.append(layer.name)
                del layers[i]
                changed = True
    read = {b for layer in layers for b in layer.bottom}
    out = []
    for layer in layers:
        unread = [t for t in layer.top if t in labels and t not in read]
        if unread:
            layer = _without_tops(layer, unread)
            if not layer.top:
                continue
        out.append(layer)
    return out


def _without_tops(layer, tops):
    new = type(layer)()
    new.CopyFrom(layer)
    keep = [i for i, t in enumerate(layer.top) if t not in tops]
    del new.top[:]
    new.top.extend(layer.top[i] for i in keep)
    shapes = list(layer.input_param.shape)
    if len(shapes) == len(layer.top):
        del new.input_param.shape[:]
        new.input_param.shape.extend(shapes[i] for i in keep)
    return new


def _check_names(layers):
    seen = set()
    for layer in layers:
        if layer.name in seen:
            raise SurgeryError("two layers of the net prepared for the engine share this "
                               "name (a rewritten layer's new part?)", layer=layer.name)
        seen.add(layer.name)
