"""The weight plan and its one streaming writer: every blob kind, and an edited layer that
equals its source in everything the plan does not change (down to a field stored between
two of its blobs, which a writer could drop unseen)."""

import numpy as np
import pytest

from surgery import caffe_pb2
from surgery.errors import SurgeryError
from surgery.io import caffemodel as cm
from surgery.weights import writer
from surgery.weights.plan import Copied, LayerWeights, New, Replaced, Reshaped, WeightPlan

RNG = np.random.default_rng(5)
LAYER, V1_LAYERS = 100, 2            # NetParameter fields
L_BLOBS, V1_BLOBS, L_NAME = 7, 6, 1  # LayerParameter / V1LayerParameter fields


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob(array):
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(array.shape)
    blob.data.extend(array.reshape(-1).tolist())
    return blob.SerializeToString()


def _layer(*parts):
    """LayerParameter bytes with its fields in the order given: protobuf itself always
    writes field-number order, so a field between two blobs is spliced in by hand."""
    return b"".join(parts)


def _read_varint(message, pos):
    value, shift = 0, 0
    while True:
        b = message[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def _fields(message):
    """The top-level (field number, raw bytes) of a message, in file order."""
    out, pos = [], 0
    while pos < len(message):
        start = pos
        key, pos = _read_varint(message, pos)
        wire = key & 7
        if wire == 0:
            pos = _read_varint(message, pos)[1]
        elif wire == 2:
            n, pos = _read_varint(message, pos)
            pos += n
        else:
            pos += {1: 8, 5: 4}[wire]
        out.append((key >> 3, message[start:pos]))
    return out


def _layers(path):
    """Each layer message's bytes, in file order."""
    data = open(path, "rb").read()
    return [_payload(raw) for n, raw in _fields(data) if n in (LAYER, V1_LAYERS)]


def _payload(raw):
    """A length-delimited field's payload (its tag and length cut off)."""
    n, pos = _read_varint(raw, _read_varint(raw, 0)[1])
    return raw[pos:pos + n]


W0, B0, W1 = (RNG.standard_normal(s).astype(np.float32) for s in ((4, 3, 3, 3), (4,), (2, 4)))
PARAM = caffe_pb2.LayerParameter(param=[caffe_pb2.ParamSpec(lr_mult=0.5)]).SerializeToString()
PHASE = caffe_pb2.LayerParameter(phase=caffe_pb2.TEST).SerializeToString()


@pytest.fixture
def source(tmp_path):
    """conv1: name, type, blob 0, a `param` spec, blob 1, then a `phase`; fc1 and relu1
    as protobuf writes them."""
    conv = _layer(_field(L_NAME, b"conv1"), _field(2, b"Convolution"), _field(L_BLOBS, _blob(W0)),
                  PARAM, _field(L_BLOBS, _blob(B0)), PHASE)
    fc = caffe_pb2.LayerParameter(name="fc1", type="InnerProduct")
    fc.blobs.add().ParseFromString(_blob(W1))
    relu = caffe_pb2.LayerParameter(name="relu1", type="ReLU")
    data = _field(1, b"net") + _field(LAYER, conv) + _field(LAYER, fc.SerializeToString()) \
        + _field(LAYER, relu.SerializeToString())
    path = tmp_path / "in.caffemodel"
    path.write_bytes(data)
    return path


def _doubled(inputs):
    with inputs.open(0) as reader:
        yield reader.read(0, reader.blob.count) * 2


def assert_edit_keeps_the_rest(before, after, plan_layer, values):
    """`after` (a layer's bytes) is `before` with the plan's changes and nothing else: the
    same non-blob fields in the same order, byte for byte (the name excepted when the plan
    renames), and each blob what the plan says (`values`: the Replaced blobs' arrays)."""
    old, new = _fields(before), _fields(after)

    def rest(fields):
        return [f for f in fields if f[0] not in (L_BLOBS, L_NAME)]

    assert rest(new) == rest(old), "a field other than the blobs changed or was lost"
    old_blobs = [raw for n, raw in old if n == L_BLOBS]
    new_blobs = [raw for n, raw in new if n == L_BLOBS]
    assert len(new_blobs) == len(plan_layer.blobs)
    made = iter(values)
    for planned, raw in zip(plan_layer.blobs, new_blobs):
        if isinstance(planned, Copied):
            assert raw == old_blobs[planned.blob]
        else:
            blob = caffe_pb2.BlobProto.FromString(_payload(raw))
            want = next(made)
            assert tuple(blob.shape.dim) == tuple(planned.shape)
            np.testing.assert_array_equal(np.array(blob.data, np.float32), want.reshape(-1))
    names = [raw for n, raw in new if n == L_NAME]
    assert [_payload(r).decode() for r in names] == [plan_layer.name]


EDIT = LayerWeights("conv1-new", (Replaced(W0.shape, _doubled), Copied(1)), source="conv1")


def test_an_edited_layer_keeps_every_field_the_plan_does_not_change(source, tmp_path):
    out = tmp_path / "out.caffemodel"
    writer.write(WeightPlan(edit=(EDIT,)), out, source=source)
    before, after = _layers(source), _layers(out)
    assert_edit_keeps_the_rest(before[0], after[0], EDIT, [W0 * 2])
    assert after[1:] == before[1:]           # untouched layers: byte for byte
    assert open(out, "rb").read().startswith(_field(1, b"net"))


def test_the_check_fails_when_the_field_between_the_blobs_is_dropped(source):
    """The assertion above can fail: the same layer written without its `param` spec
    (what a writer that replaced everything from the first blob to the last would do)."""
    before = _layers(source)[0]
    fields = _fields(before)
    new_blob = _field(L_BLOBS, _blob(W0 * 2))
    dropped = b"".join(raw if n != L_NAME else _field(L_NAME, b"conv1-new")
                       for n, raw in fields if n != L_BLOBS and raw != PARAM)
    head, tail = dropped[:dropped.index(PHASE)], PHASE
    mutant = head + new_blob + [raw for n, raw in fields if n == L_BLOBS][1] + tail
    with pytest.raises(AssertionError, match="a field other than the blobs"):
        assert_edit_keeps_the_rest(before, mutant, EDIT, [W0 * 2])


def test_every_blob_kind_drop_and_add(source, tmp_path):
    out = tmp_path / "out.caffemodel"
    filler = caffe_pb2.FillerParameter(type="gaussian", std=0.5)
    plan = WeightPlan(
        edit=(LayerWeights("fc1-conv", (Reshaped(0, (2, 1, 2, 2)),), source="fc1",
                           type="Convolution", bottoms=("x",), tops=("y",)),),
        drop=frozenset({"relu1"}),
        add=(LayerWeights("head", (New((3, 2), filler=filler, seed=7),
                                   New((3,), pieces=[np.arange(3, dtype=np.float32)])),
                          type="Convolution"),))
    writer.write(plan, out, source=source)
    net = caffe_pb2.NetParameter.FromString(open(out, "rb").read())
    assert [l.name for l in net.layer] == ["conv1", "fc1-conv", "head"]
    fc = net.layer[1]
    assert (fc.type, list(fc.bottom), list(fc.top)) == ("Convolution", ["x"], ["y"])
    assert tuple(fc.blobs[0].shape.dim) == (2, 1, 2, 2)
    assert fc.blobs[0].data == caffe_pb2.BlobProto.FromString(_blob(W1)).data  # same bytes
    from surgery.weights.fillers import fill
    np.testing.assert_array_equal(np.array(net.layer[2].blobs[0].data, np.float32).reshape(3, 2),
                                  fill(filler, (3, 2), seed=7, layer="head", index=0))
    assert list(net.layer[2].blobs[1].data) == [0, 1, 2]
    assert plan.describe() == {"fc1-conv": ["reshaped"], "head": ["new", "new"]}


def test_a_v1_blob_copied_into_a_new_v2_layer_gets_the_v2_tag(tmp_path):
    v1 = caffe_pb2.V1LayerParameter(name="fc", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    v1.blobs.add().ParseFromString(_blob(W1))
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(_field(V1_LAYERS, v1.SerializeToString()))
    out = tmp_path / "out.caffemodel"
    plan = WeightPlan(edit=(LayerWeights("fc", (Copied(0),), source="fc", type="Convolution"),))
    writer.write(plan, out, source=path)
    net = caffe_pb2.NetParameter.FromString(open(out, "rb").read())
    assert len(net.layers) == 1 and net.layers[0].blobs[0] == v1.blobs[0]


@pytest.mark.parametrize("plan, message", [
    (WeightPlan(edit=(LayerWeights("x", (Copied(0),), source="nope"),)), "no layer of this name"),
    (WeightPlan(edit=(LayerWeights("fc1", (Copied(3),), source="fc1"),)), "reads blob 3"),
    (WeightPlan(edit=(LayerWeights("fc1", (Reshaped(0, (3, 3)),), source="fc1"),)),
     "shape \\[3, 3\\] needs 9"),
    (WeightPlan(edit=(LayerWeights("relu1", (Copied(0),), source="fc1"),)),
     "two layers would share this name"),
])
def test_a_plan_the_input_cannot_serve_is_refused_before_writing(source, tmp_path, plan,
                                                                 message):
    out = tmp_path / "out.caffemodel"
    with pytest.raises(SurgeryError, match=message):
        writer.write(plan, out, source=source)
    assert not out.exists()


def test_memory_stays_flat_a_replaced_blob_is_pulled_piece_by_piece(source, tmp_path):
    """The writer asks a Replaced blob for its pieces only when it writes it."""
    asked = []

    def values(inputs):
        asked.append("start")
        yield np.zeros(W0.size, np.float32)

    plan = WeightPlan(edit=(LayerWeights("conv1", (Replaced(W0.shape, values), Copied(1)),
                                         source="conv1"),))
    entries = writer.entries(plan, cm.read_caffemodel(source))
    assert not asked
    cm.write_entries(tmp_path / "o.caffemodel", entries, source=str(source))
    assert asked == ["start"]
