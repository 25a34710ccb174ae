"""Fork layers rewritten to BVLC Caffe's own layer types, wherever an exact form exists.

Each layer's rule says what its BVLC form is (`LayerRule.bvlc_form`: PSPNet's BN is
BatchNorm + Scale, SegNet's inference BN a Scale, ConvolutionDepthwise a grouped
Convolution, ReLU6 a Clip, the fork's ceil_mode BVLC's round_mode, Axpy a Reshape +
Scale + Eltwise, a whole-factor zoom Interp a bilinear Deconvolution) and what their
weights are (`LayerRule.form_blobs`). A layer with no such form stays, and is listed; so
is a layer holding a field the schema lacks, whose meaning is not known well enough to
rewrite it. The weights follow as one weight plan (weights/plan.py), streamed by the
one writer: the rewritten layers' blobs reshaped or made, every other layer copied
byte for byte.
"""

from typing import NamedTuple

from ..errors import SurgeryError
from ..layers import rule_for
from ..weights.plan import Copied, LayerWeights, WeightPlan


class Rewritten(NamedTuple):
    name: str
    type: str
    into: tuple          # ((name, type), ...) of the layers in its place


class Kept(NamedTuple):
    name: str
    type: str
    why: str


class BvlcResult(NamedTuple):
    net: object          # the rewritten NetParameter
    rewritten: tuple     # Rewritten, in file order
    kept: tuple          # Kept: fork layers left as they are, with the reason
    forms: tuple         # ((original layer, [its BVLC form]), ...) for form_weights

    def to_json(self):
        return {"rewritten": [{"layer": r.name, "type": r.type,
                               "into": [{"layer": n, "type": t} for n, t in r.into]}
                              for r in self.rewritten],
                "kept": [{"layer": k.name, "type": k.type, "why": k.why} for k in self.kept]}


def to_bvlc(net, *, unknown_layers=(), shapes=None):
    """`net` with every layer that has an exact BVLC form replaced by it (the forms keep
    the layer's place, its phase rules and its tops). `unknown_layers`: names of layers
    holding a field the schema lacks (kept as they are); `shapes`: {blob: shape} where
    known (a form that names a channel count needs its input's)."""
    shapes = shapes or {}
    new = type(net)()
    new.CopyFrom(net)
    del new.layer[:]
    rewritten, kept, forms = [], [], []
    for layer in net.layer:
        rule = rule_for(layer.type)
        in_shapes = [shapes.get(blob) for blob in layer.bottom]
        form = None if layer.name in unknown_layers else rule.bvlc_form(layer, in_shapes)
        if form is None:
            new.layer.add().CopyFrom(layer)
            if layer.type in rule.fork_types:
                why = ("it holds a field the schema lacks" if layer.name in unknown_layers
                       else _unsized(rule, layer, in_shapes) or "BVLC Caffe has no layer for it")
                kept.append(Kept(layer.name, layer.type, why))
            continue
        new.layer.extend(form)
        forms.append((layer, form))
        rewritten.append(Rewritten(layer.name, layer.type,
                                   tuple((f.name, f.type) for f in form)))
    names = [layer.name for layer in new.layer]
    for name in names:
        if names.count(name) > 1:
            raise SurgeryError("a rewritten layer's new part would share this name with "
                               "another layer; rename that layer first", layer=name)
    return BvlcResult(new, tuple(rewritten), tuple(kept), tuple(forms))


def _unsized(rule, layer, in_shapes):
    """Why a layer whose form names a channel count is kept when its input's shape is
    not known ("" when that is not the reason: asked again with any shape, it still has
    no form)."""
    known = all(s is not None and all(isinstance(d, int) for d in s) for s in in_shapes)
    if known or rule.bvlc_form(layer, [(1, 1, 1, 1)] * len(layer.bottom)) is None:
        return ""
    return ("its BVLC form needs its input's channel count, and shape inference stops "
            "before it (an input the net does not size: give it with --input-shape; or a "
            "template placeholder)")


def form_weights(forms, summary, *, retype=True):
    """The WeightPlan giving each layer of the forms its blobs from `summary`'s file: the
    blobs its rule makes (`form_blobs`), in the place of the original layer's weights
    when it keeps its name, else added. With `retype`, a form layer that keeps its
    name and its blobs (a depthwise convolution) is written with its new type too (the
    bvlc command's weights); without, only layers whose blobs change are (a verify run).
    A layer the file has no weights for gets only the blobs its rule makes from nothing
    (added as new layers); the rest is left to the weight check."""
    edit, add, drop = [], [], set()
    for layer, form in forms:
        info = summary.find(layer.name)
        if info is None:        # a layer with no params is often not in the file
            made = rule_for(layer.type).form_blobs(layer, form, None)
            add.extend(LayerWeights(new.name, tuple(made[new.name]), source=None, type=new.type,
                                    bottoms=tuple(new.bottom), tops=tuple(new.top))
                       for new in form if made.get(new.name))
            continue
        blobs = rule_for(layer.type).form_blobs(layer, form, [b.shape for b in info.blobs])
        for new in form:
            planned = blobs.get(new.name)
            if planned is None:
                if not retype or new.name != layer.name or new.type == layer.type:
                    continue
                planned = [Copied(i) for i in range(len(info.blobs))]
            weights = LayerWeights(new.name, tuple(planned), source=layer.name, type=new.type,
                                   bottoms=tuple(new.bottom), tops=tuple(new.top))
            (edit if new.name == layer.name else add).append(weights)
        if blobs and not any(new.name == layer.name for new in form):
            drop.add(layer.name)
    return WeightPlan(edit=tuple(edit), drop=frozenset(drop), add=tuple(add))
