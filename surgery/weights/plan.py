"""Weight plans: what each layer of an output caffemodel holds, as plain data.

A pass that changes weights (dilate's resized upsamplers, fcn, segment, fold, init-weights)
says what it wants written as a `WeightPlan`; one writer (`surgery.weights.writer`) streams
it from the input caffemodel to the output. The plan names, per output layer, where every
blob comes from:

- `Copied(i)`: the input layer's blob i, byte for byte;
- `Reshaped(i, shape)`: blob i's values in the same order under a new shape (fc -> conv);
- `Replaced(shape, values, like)`: new values computed from the input's as they stream
  (an upsampler's new bilinear kernel, a folded convolution, a decimated fc);
- `New(shape, filler or pieces)`: values that owe nothing to the input weights (a Caffe
  filler drawn seeded by (seed, layer, blob index), or init-weights' own draws).

Every input layer a plan does not name is copied byte for byte, in its place, and so is
every other top-level field of the file. Keeping the plan as data keeps the passes free
of the wire format and lets a test compare what a plan says with what was written.
"""

from typing import Callable, Iterable, NamedTuple, Optional


class Copied(NamedTuple):
    """Blob number `blob` of the source layer, byte for byte (its tag renumbered only when
    a V1 layer's blob goes into a V2 layer or back)."""

    blob: int

    kind = "copied"


class Reshaped(NamedTuple):
    """Blob number `blob` of the source layer under `shape`: the same values in the same
    order (an InnerProduct's (N, C*H*W) read as a Convolution's (N, C, H, W)); keeps its
    float or double data and its legacy dims."""

    blob: int
    shape: tuple

    kind = "reshaped"


class Replaced(NamedTuple):
    """New values made from the input weights while they stream.

    `values(inputs)` yields the blob's values in C order, as arrays (or raw little-endian
    bytes) of any size that add up to `shape`; `inputs` (writer.Inputs) opens any blob of
    the input caffemodel: `inputs.open(index, layer=None)` a BlobReader over part of a
    blob (a `with` block), `inputs.read(index, layer=None)` a whole (small) blob. `layer`
    defaults to the source layer. The blob is written like the source's blob `like`
    (float or double data, legacy dims); `like=None` writes float32 with a shape field."""

    shape: tuple
    values: Callable
    like: Optional[int] = 0

    kind = "replaced"


class New(NamedTuple):
    """Values that owe nothing to the input weights, written as float32.

    With `filler` (a caffe_pb2.FillerParameter), Caffe's formula drawn by
    weights.fillers.pieces, seeded by (seed, output layer name, blob index), so one layer's
    values never depend on another's. Without it, `pieces` is an iterable of float32
    arrays in C order (consumed once: init-weights draws as the writer writes)."""

    shape: tuple
    filler: object = None
    seed: int = 0
    pieces: Optional[Iterable] = None

    kind = "new"


class LayerWeights(NamedTuple):
    """One output layer: its name and its blobs (Copied / Reshaped / Replaced / New).

    `source` is the input layer it is made from (None for a new layer); its first layer of
    that name is the one read. Without `type`, the output layer is the source layer with
    every field other than its blobs (and its name, when `name` differs) byte for byte,
    and the new blobs stand where its first blob stood. With `type`, the layer is written
    afresh from name, type, bottoms, tops and blobs alone (a layer of another type: fcn's
    Convolution in place of an InnerProduct, a new head layer)."""

    name: str
    blobs: tuple
    source: Optional[str] = None
    type: Optional[str] = None
    bottoms: tuple = ()
    tops: tuple = ()


class WeightPlan(NamedTuple):
    """How an output caffemodel differs from its input.

    edit: LayerWeights for input layers written otherwise (matched by `source`), each in
          its source's place;
    drop: names of input layers left out (every layer of that name);
    add:  LayerWeights of new layers, appended in order. May be a generator, drawn while
          the file is written (init-weights); then the writer cannot check it first.
    Every other input layer and top-level field is copied byte for byte."""

    edit: tuple = ()
    drop: frozenset = frozenset()
    add: Iterable = ()

    def describe(self):
        """{output layer name: [blob kinds]} for the layers the plan writes (not the
        copies), e.g. {"conv1": ["replaced", "replaced"]}; for reports and tests."""
        return {layer.name: [blob.kind for blob in layer.blobs]
                for layer in (*self.edit, *self.add)}

