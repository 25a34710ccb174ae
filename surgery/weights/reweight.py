"""New weights for the few layers a conversion gives new param shapes (an upsampling
Deconvolution whose factor changed): the registry rule says how (`resized_weights`), and
every other layer of the caffemodel is copied byte for byte. Streamed: a layer's blob is
read and written in pieces, never whole."""

from ..errors import SurgeryError
from ..layers import rule_for


def resized(changes, graph):
    """Names of the rewritten layers whose weights must be rewritten (the registry says
    which: an upsampling Deconvolution given a new factor or kernel)."""
    out = []
    for change in changes:
        if change.action != "rewrite" or change.before is None or change.after is None:
            continue
        node = graph.node(change.layer)
        if node.rule.new_weights(change.before, change.after) and \
                node.rule.param_count(node.layer, len(node.bottoms)):
            out.append(change.layer)
    return tuple(out)


def plan(summary, original, converted, changed):
    """The WeightPlan for `summary`'s file with the layers named in `changed` given the
    weights `converted` needs: each such layer's weight blob replaced by the registry's
    `resized_weights` (streamed from the old one), its other blobs copied. Checks every
    such layer first, so a mismatch stops the run before anything is written."""
    from ..io.caffemodel import BlobReader
    from .plan import Copied, LayerWeights, Replaced, WeightPlan
    from .writer import check

    old_layers = {layer.name: layer for layer in original.layer}
    new_layers = {layer.name: layer for layer in converted.layer}
    edits = []
    for name in changed:
        info = summary.find(name)
        if info is None:
            raise SurgeryError(f"the weights ({summary.path}) have no layer of this name, so "
                               "its new weights cannot be made", layer=name)
        shape, pieces = rule_for(old_layers[name].type).resized_weights(
            old_layers[name], new_layers[name], lambda info=info: BlobReader(summary, info, 0))
        blobs = (Replaced(shape, lambda _inputs, pieces=pieces: pieces()),)
        blobs += tuple(Copied(i) for i in range(1, len(info.blobs)))
        edits.append(LayerWeights(name, blobs, source=name))
    planned = WeightPlan(edit=tuple(edits))
    check(planned, summary)
    return planned
