"""The one writer of caffemodels: streams a `WeightPlan` (surgery.weights.plan) from the
input caffemodel to the output.

    summary = read_caffemodel("in.caffemodel")
    check(plan, summary)                        # raises before anything is written
    write(plan, "out.caffemodel", source=summary)

Layers the plan does not name are copied byte for byte (io.caffemodel's Copy ranges), and
so are `Copied` blobs and every field of an edited layer other than its blobs and name.
Blob values are read and written in pieces as the file is written, never a whole model,
so memory stays flat whatever the size of the weights. The output is written atomically.
"""

import numpy as np

from ..errors import SurgeryError
from ..io import caffemodel as cm
from .fillers import pieces as filler_pieces
from .plan import Copied, New, Replaced, Reshaped

READ_VALUES = 1 << 20    # values read at a time when a blob's data is not one packed run


class Inputs:
    """The input caffemodel as a `Replaced` blob's `values` sees it: any blob of any layer,
    `open`ed for reading in parts or `read` whole (small blobs: a BatchNorm's statistics)."""

    def __init__(self, summary, layer):
        self.summary, self.layer = summary, layer

    def info(self, layer=None):
        return self.layer if layer is None else self.summary.layer(layer)

    def open(self, index, layer=None):
        """A BlobReader (use it in a `with`): `.read(start, count)` gives flat values."""
        return cm.BlobReader(self.summary, self.info(layer), index)

    def read(self, index, layer=None):
        return cm.read_blob(self.summary, self.info(layer), index)


def _blob_field(info):
    return cm.V1_BLOBS if info.field == "layers" else cm.L_BLOBS


def _reshaped_pieces(summary, info, index):
    """Blob `index`'s values in order: its data bytes themselves when packed."""
    with cm.BlobReader(summary, info, index) as reader:
        if reader.packed:
            yield from reader.raw_pieces()
            return
        total = reader.blob.count
        for start in range(0, total, READ_VALUES):
            yield reader.read(start, min(READ_VALUES, total - start))


def _replaced_pieces(blob, inputs):
    yield from blob.values(inputs)


def _new_pieces(blob, layer, index):
    if blob.filler is not None:
        return filler_pieces(blob.filler, blob.shape, seed=blob.seed, layer=layer, index=index)
    return blob.pieces


def _spec(blob, index, name, summary, info):
    """The io.caffemodel blob (RawBlob or StreamBlob) that writes `blob`."""
    if isinstance(blob, Copied):
        return cm.RawBlob(info.blobs[blob.blob], _blob_field(info))
    if isinstance(blob, Reshaped):
        source = info.blobs[blob.blob]
        return cm.StreamBlob(tuple(blob.shape), _reshaped_pieces(summary, info, blob.blob),
                             double=source.dtype == "double", legacy=source.legacy)
    if isinstance(blob, Replaced):
        like = None if blob.like is None else info.blobs[blob.like]
        return cm.StreamBlob(tuple(blob.shape), _replaced_pieces(blob, Inputs(summary, info)),
                             double=like is not None and like.dtype == "double",
                             legacy=like is not None and like.legacy)
    if isinstance(blob, New):
        return cm.StreamBlob(tuple(blob.shape), _new_pieces(blob, name, index))
    raise TypeError(f"not a planned blob: {blob!r}")


def _size(shape):
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def check(plan, summary):
    """Refuse a plan the input cannot serve, before anything is written: a source layer or
    blob that is not there, a reshape that changes the number of values, two output
    layers of one name. `summary` is None when the plan has no input (only new layers)."""
    edits = tuple(plan.edit)
    listed = edits + (tuple(plan.add) if isinstance(plan.add, (tuple, list)) else ())
    path = summary.path if summary is not None else "(no input weights)"
    for layer in listed:
        info = None
        if layer.source is not None:
            info = summary.find(layer.source) if summary is not None else None
            if info is None:
                raise SurgeryError(f"the weights ({path}) have no layer of this name",
                                   layer=layer.source)
        elif layer.type is None:
            raise SurgeryError("a new layer needs a type", layer=layer.name)
        for blob in layer.blobs:
            index = blob.like if isinstance(blob, Replaced) else \
                None if isinstance(blob, New) else blob.blob
            if index is None:
                continue
            if info is None or not 0 <= index < len(info.blobs):
                held = len(info.blobs) if info is not None else 0
                raise SurgeryError(f"the weights ({path}) hold {held} blob(s) here, the plan "
                                   f"reads blob {index}", layer=layer.source or layer.name)
            if isinstance(blob, Reshaped) and info.blobs[index].count != _size(blob.shape):
                raise SurgeryError(f"blob {index} holds {info.blobs[index].count} values, "
                                   f"shape {list(blob.shape)} needs {_size(blob.shape)}",
                                   layer=layer.source)
    if summary is None:
        return
    dropped, edited = set(plan.drop), {layer.source for layer in edits}
    taken = {l.name for l in summary.layers if l.name not in dropped and l.name not in edited}
    for layer in listed:
        if layer.name in taken:
            raise SurgeryError("two layers would share this name in the output",
                               layer=layer.name)
        taken.add(layer.name)


def _entry(layer, summary, info, legacy):
    specs = tuple(_spec(blob, i, layer.name, summary, info) for i, blob in enumerate(layer.blobs))
    if layer.type is None:
        return cm.EditLayer(info, name=None if layer.name == info.name else layer.name,
                            blobs=specs)
    return cm.NewLayer(layer.name, layer.type, specs, tuple(layer.bottoms), tuple(layer.tops),
                       legacy=legacy)


def entries(plan, summary):
    """io.caffemodel entries (Copy / EditLayer / NewLayer) that carry out `plan` on
    `summary`'s file: each edited layer at its source's place (the first layer of that
    name), dropped layers left out, everything else in file order as verbatim ranges, then
    the new layers (V1 `layers` entries when the input is a V1 file)."""
    edits = {layer.source: layer for layer in plan.edit}
    dropped = set(plan.drop)
    starts = {info.start: info for info in summary.layers}
    legacy = summary.legacy
    out, done = [], set()
    for _number, start, end in summary.items:
        info = starts.get(start)
        if info is not None and info.name in dropped:
            continue
        if info is not None and info.name in edits and info.name not in done:
            done.add(info.name)
            out.append(_entry(edits[info.name], summary, info, legacy))
        elif out and isinstance(out[-1], cm.Copy) and out[-1].end == start:
            out[-1] = cm.Copy(out[-1].start, end)
        else:
            out.append(cm.Copy(start, end))
    for layer in plan.add:
        info = summary.find(layer.source) if layer.source is not None else None
        out.append(_entry(layer, summary, info, legacy))
    return out


def write(plan, path, *, source=None, name=None, in_place=False, inputs=(), outputs=None):
    """Write `plan` to `path`, atomically and streaming; returns the input's Summary.

    `source` is the input caffemodel (a path or its Summary), or None for a file of new
    layers only (init-weights), whose NetParameter name is then `name`. `inputs` are
    other files `path` must not overwrite; `outputs`, an io.atomic.Outputs transaction,
    stages the file for that transaction's commit (a command's outputs: all or none).
    Checks the plan first (see `check`), except new layers given as a generator, which
    are drawn as they are written."""
    if source is None:
        check(plan, None)

        def layers():
            for layer in plan.add:
                specs = tuple(_spec(b, i, layer.name, None, None)
                              for i, b in enumerate(layer.blobs))
                yield cm.NewLayer(layer.name, layer.type, specs, tuple(layer.bottoms),
                                  tuple(layer.tops))

        cm.write_caffemodel(str(path), layers(), name=name, inputs=inputs, outputs=outputs)
        return None
    summary = source if isinstance(source, cm.Summary) else cm.read_caffemodel(source)
    check(plan, summary)
    cm.write_entries(path, entries(plan, summary), source=summary.path, inputs=inputs,
                     in_place=in_place, outputs=outputs)
    return summary
