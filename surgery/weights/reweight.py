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


def entries(summary, original, converted, changed):
    """Caffemodel entries (io.caffemodel.plan) for `summary`'s file with the layers named
    in `changed` rewritten for `converted`. Checks every such layer first, so a mismatch
    stops the run before anything is written."""
    from ..io.caffemodel import BlobReader, BlobSpec, StreamBlob, plan, read_blob

    old_layers = {layer.name: layer for layer in original.layer}
    new_layers = {layer.name: layer for layer in converted.layer}
    replace = {}
    for name in changed:
        try:
            info = summary.layer(name)
        except SurgeryError:
            raise SurgeryError(f"the weights ({summary.path}) have no layer of this name, so "
                               "its new weights cannot be made", layer=name) from None
        old, new = old_layers[name], new_layers[name]
        shape, pieces = rule_for(old.type).resized_weights(
            old, new, lambda info=info: BlobReader(summary, info, 0))
        blobs = [StreamBlob(shape, pieces(), double=info.blobs[0].dtype == "double",
                            legacy=info.blobs[0].legacy)]
        blobs += [BlobSpec(read_blob(summary, info, i), legacy=info.blobs[i].legacy)
                  for i in range(1, len(info.blobs))]
        replace[name] = blobs
    return plan(summary, replace=replace)


def write(path, summary, planned, *, in_place=False, outputs=None):
    """Write the `entries` of `summary`'s caffemodel to `path`, atomically (staged in
    `outputs`, an io.atomic.Outputs transaction, when given)."""
    from ..io.caffemodel import write_entries

    write_entries(path, planned, source=summary.path, in_place=in_place, outputs=outputs)
