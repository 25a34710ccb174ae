"""The wire-level caffemodel reader/writer, checked against protobuf's own parser."""

import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from surgery.errors import SurgeryError
from surgery.io import caffemodel as cm
from surgery.io.v1types import SCHEMA_ONLY, V1_LAYER_TYPES, V1_TYPE_BY_NAME

caffe_pb2 = pytest.importorskip("surgery.caffe_pb2")

RNG = np.random.default_rng(1234)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def parse(path):
    net = caffe_pb2.NetParameter()
    with open(path, "rb") as f:
        net.ParseFromString(f.read())
    return net


def pb_shape(blob):
    if blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") \
            or blob.HasField("width"):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


def pb_values(blob):
    if len(blob.double_data):
        return np.array(blob.double_data, dtype=np.float64)
    return np.array(blob.data, dtype=np.float32)


def assert_matches_protobuf(path):
    """Every fact the reader reports agrees with a full protobuf parse of the file."""
    net = parse(path)
    summary = cm.read_caffemodel(path)
    pb_layers = [(l, "layers") for l in net.layers] + [(l, "layer") for l in net.layer]
    # Order in the file may interleave; compare per field kind in order.
    for kind in ("layer", "layers"):
        ours = [l for l in summary.layers if l.field == kind]
        theirs = [l for l, k in pb_layers if k == kind]
        assert len(ours) == len(theirs)
        for mine, pb in zip(ours, theirs):
            assert mine.name == pb.name
            if kind == "layers":
                assert mine.type_enum == pb.type
            else:
                assert mine.type == pb.type
            assert mine.bottoms == list(pb.bottom)
            assert mine.tops == list(pb.top)
            assert len(mine.blobs) == len(pb.blobs)
            for i, (blob, pblob) in enumerate(zip(mine.blobs, pb.blobs)):
                assert blob.shape == pb_shape(pblob)
                values = pb_values(pblob)
                assert blob.count == values.size
                if values.size:
                    assert blob.dtype == ("double" if values.dtype == np.float64 else "float")
                if values.size == blob.size:
                    got = cm.read_blob(summary, mine, i)
                    assert got.dtype == values.dtype
                    np.testing.assert_array_equal(got.reshape(-1), values)
                    assert got.shape == blob.shape
    assert summary.name == (net.name if net.HasField("name") else None)
    return summary


def sample_layers():
    return [
        dict(name="conv1", type="Convolution", bottom=["data"], top=["conv1"],
             blobs=[f32(8, 3, 3, 3), f32(8)]),
        dict(name="relu1", type="ReLU", bottom=["conv1"], top=["conv1"]),  # empty layer
        dict(name="bn1", type="BatchNorm", bottom=["conv1"], top=["conv1"],
             blobs=[f32(8), f32(8), np.array([1.0], np.float32)]),
        dict(name="scale_d", type="Scale", blobs=[RNG.standard_normal(8),  # double data
                                                  np.array(2.5)]),          # 0-d blob
        dict(name="fc_legacy", type="InnerProduct",
             blobs=[cm.BlobSpec(f32(10, 72), legacy=True), cm.BlobSpec(f32(10), legacy=True)]),
    ]


def test_writer_output_is_what_protobuf_would_serialise(tmp_path):
    path = tmp_path / "m.caffemodel"
    cm.write_caffemodel(path, sample_layers(), name="tiny")
    raw = path.read_bytes()
    net = parse(path)
    assert net.SerializeToString() == raw
    assert [l.name for l in net.layer] == ["conv1", "relu1", "bn1", "scale_d", "fc_legacy"]
    assert pb_shape(net.layer[4].blobs[0]) == (1, 1, 10, 72)  # legacy dims padded like old Caffe
    assert len(net.layer[3].blobs[0].double_data) == 8


def test_reader_agrees_with_protobuf_on_v2_model(tmp_path):
    path = tmp_path / "m.caffemodel"
    cm.write_caffemodel(path, sample_layers(), name="tiny")
    summary = assert_matches_protobuf(path)
    fc = summary.layer("fc_legacy")
    assert fc.blobs[0].legacy and fc.blobs[0].legacy_dims == (1, 1, 10, 72)
    assert summary.layer("relu1").blobs == []
    assert summary.layer("scale_d").blobs[1].shape == ()
    assert summary.params == 8 * 27 + 8 + 8 + 8 + 1 + 8 + 1 + 720 + 10


def test_reader_agrees_with_protobuf_on_v1_model(tmp_path):
    path = tmp_path / "v1.caffemodel"
    layers = [
        dict(name="conv1", type="Convolution", bottom=["data"], top=["conv1"],
             blobs=[cm.BlobSpec(f32(4, 3, 5, 5), legacy=True), cm.BlobSpec(f32(4), legacy=True)]),
        dict(name="pool1", type="Pooling", bottom=["conv1"], top=["pool1"]),
        dict(name="fc8", type="InnerProduct", blobs=[f32(3, 4), f32(3)]),
    ]
    cm.write_caffemodel(path, layers, legacy=True)
    net = parse(path)
    assert [l.type for l in net.layers] == [caffe_pb2.V1LayerParameter.CONVOLUTION,
                                            caffe_pb2.V1LayerParameter.POOLING,
                                            caffe_pb2.V1LayerParameter.INNER_PRODUCT]
    summary = assert_matches_protobuf(path)
    assert [(l.name, l.type, l.field) for l in summary.layers] == [
        ("conv1", "Convolution", "layers"), ("pool1", "Pooling", "layers"),
        ("fc8", "InnerProduct", "layers")]


def test_v1_type_table_agrees_with_schema_enum():
    """surgery/io/v1types.py, the one V1 type table: every enum value of the schema, with
    its number; the binary reader knows every value below the schema-only range."""
    enum = caffe_pb2.V1LayerParameter.LayerType
    assert [(number, name) for number, name, _ in V1_LAYER_TYPES] == \
        [(v.number, v.name) for v in enum.DESCRIPTOR.values]
    for number in enum.values():
        if number >= SCHEMA_ONLY:  # schema-only values for text forks; never in binary files
            assert number not in cm.V1_TYPE_BY_NUMBER
            continue
        assert number in cm.V1_TYPE_BY_NUMBER, enum.Name(number)
        if number not in (0, 21):  # SOFTMAX_LOSS became SoftmaxWithLoss
            assert cm.V1_TYPE_BY_NUMBER[number].lower() == \
                enum.Name(number).replace("_", "").lower()
    assert cm.v1_type_name(4) == "Convolution" and cm.v1_type_name(21) == "SoftmaxWithLoss"
    assert cm.v1_type_name(139) == "V1:139" and cm.v1_type_name(1002) == "V1:1002"
    assert V1_TYPE_BY_NAME["SOFTMAX_LOSS"] == "SoftmaxWithLoss" and V1_TYPE_BY_NAME["INTERP"] == "Interp"


def test_reader_skips_unknown_fields_and_layer_parameters(tmp_path):
    """Params, fork-numbered fields, diffs and net header fields are skipped, not decoded."""
    net = caffe_pb2.NetParameter(name="n")
    net.input.append("data")
    net.input_dim.extend([1, 3, 8, 8])
    layer = net.layer.add(name="conv", type="Convolution", bottom=["data"], top=["conv"])
    layer.convolution_param.num_output = 2
    layer.convolution_param.kernel_size.append(3)
    layer.param.add(lr_mult=1.0)
    blob = layer.blobs.add()
    blob.shape.dim.extend([2, 3, 3, 3])
    blob.data.extend(f32(54).tolist())
    blob.diff.extend(f32(54).tolist())
    raw = bytearray(net.SerializeToString())
    # A fork field (number 143, as DeepLab's interp_param) with bytes that would not
    # parse as BVLC's InputParameter, appended inside the layer: the reader must skip it.
    summary = cm.read_caffemodel(io.BytesIO(bytes(raw)))
    conv = summary.layers[0]
    fork = cm._len_header(143, 3) + b"\xff\xff\xff"
    body = raw[conv.content_start:conv.end] + fork
    patched = raw[:conv.start] + cm._len_header(100, len(body)) + body + raw[conv.end:]
    path = tmp_path / "fork.caffemodel"
    path.write_bytes(bytes(patched))
    summary = cm.read_caffemodel(path)
    conv = summary.layers[0]
    assert conv.blobs[0].shape == (2, 3, 3, 3) and conv.blobs[0].diff_count == 54
    np.testing.assert_array_equal(cm.read_blob(summary, "conv", 0).reshape(-1),
                                  np.array(blob.data, np.float32))
    assert [n for n, _, _ in summary.items] == [1, 3, 4, 4, 4, 4, 100]


def test_unpacked_float_data_is_read_like_protobuf(tmp_path):
    """Repeated floats may legally be written one tag per value; protobuf accepts it."""
    values = f32(300)
    blob = b"".join(b"\x2d" + struct.pack("<f", v) for v in values)
    blob += cm._len_header(7, 4) + cm._len_header(1, 2) + bytes([20, 15])
    layer = cm._string_field(1, "ip") + cm._string_field(2, "InnerProduct")
    layer += cm._len_header(7, len(blob)) + blob
    path = tmp_path / "unpacked.caffemodel"
    path.write_bytes(cm._len_header(100, len(layer)) + layer)
    summary = assert_matches_protobuf(path)
    assert summary.layers[0].blobs[0].shape == (20, 15)
    np.testing.assert_array_equal(cm.read_blob(summary, "ip", 0).reshape(-1), values)


layer_spec = st.builds(
    lambda name, typ, shapes, doubles, legacy, nb, nt: dict(
        name=name, type=typ,
        bottom=[f"b{i}" for i in range(nb)], top=[f"t{i}" for i in range(nt)],
        blobs=[cm.BlobSpec(RNG.standard_normal(s).astype(np.float64 if d else np.float32),
                           legacy=lg and len(s) <= 4)
               for s, d, lg in zip(shapes, doubles, legacy)]),
    st.text(min_size=0, max_size=12),
    st.sampled_from(["Convolution", "Scale", "ReLU", "InnerProduct", "BatchNorm"]),
    st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple), max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
    st.integers(0, 2), st.integers(0, 2),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(layer_spec, max_size=5), st.one_of(st.none(), st.text(max_size=5)))
def test_reader_and_writer_agree_with_protobuf_on_random_models(tmp_path, layers, name):
    path = tmp_path / "r.caffemodel"
    cm.write_caffemodel(path, layers, name=name)
    assert parse(path).SerializeToString() == path.read_bytes()
    if not path.read_bytes():      # no layers, no name: an empty file, which is refused
        with pytest.raises(SurgeryError, match="empty"):
            cm.read_caffemodel(path)
        return
    assert_matches_protobuf(path)


# ---------------------------------------------------------------- rewriting


def layer_bytes(path, summary):
    raw = path.read_bytes()
    return {l.name: raw[l.start:l.end] for l in summary.layers}


def test_rename_copies_every_other_layer_byte_for_byte(tmp_path):
    src, dst = tmp_path / "a.caffemodel", tmp_path / "b.caffemodel"
    cm.write_caffemodel(src, sample_layers(), name="tiny")
    cm.transform(src, dst, rename={"bn1": "bn1_new"})
    before, after = cm.read_caffemodel(src), cm.read_caffemodel(dst)
    old, new = layer_bytes(src, before), layer_bytes(dst, after)
    assert [l.name for l in after.layers] == ["conv1", "relu1", "bn1_new", "scale_d", "fc_legacy"]
    for name in ("conv1", "relu1", "scale_d", "fc_legacy"):
        assert new[name] == old[name]
    net_a, net_b = parse(src), parse(dst)
    net_a.layer[2].name = "bn1_new"
    assert net_a == net_b
    np.testing.assert_array_equal(cm.read_blob(after, "bn1_new", 1), cm.read_blob(before, "bn1", 1))


def test_noop_plan_reproduces_the_file(tmp_path):
    src, dst = tmp_path / "a.caffemodel", tmp_path / "b.caffemodel"
    cm.write_caffemodel(src, sample_layers(), name="tiny")
    entries = cm.transform(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert all(isinstance(e, cm.Copy) for e in entries) and len(entries) == 1


def test_replace_drop_add_and_v1_rename(tmp_path):
    src, dst = tmp_path / "a.caffemodel", tmp_path / "b.caffemodel"
    cm.write_caffemodel(src, sample_layers(), name="tiny")
    new_w = f32(8, 3, 1, 1)
    cm.transform(src, dst, replace={"conv1": [new_w]}, drop=["relu1"],
                 add=[cm.NewLayer("head", "Convolution", (f32(2, 8, 1, 1), f32(2)))])
    net_a, net_b = parse(src), parse(dst)
    assert [l.name for l in net_b.layer] == ["conv1", "bn1", "scale_d", "fc_legacy", "head"]
    conv = net_b.layer[0]
    assert conv.type == "Convolution" and list(conv.bottom) == ["data"] and len(conv.blobs) == 1
    np.testing.assert_array_equal(np.array(conv.blobs[0].data, np.float32), new_w.reshape(-1))
    assert net_b.layer[1] == net_a.layer[2]
    assert_matches_protobuf(dst)

    v1src, v1dst = tmp_path / "v1.caffemodel", tmp_path / "v1b.caffemodel"
    cm.write_caffemodel(v1src, [dict(name="fc6", type="InnerProduct", blobs=[f32(4, 6), f32(4)]),
                                dict(name="fc7", type="InnerProduct", blobs=[f32(2, 4)])],
                        legacy=True)
    cm.transform(v1src, v1dst, rename={"fc6": "fc6_conv"},
                 add=[cm.NewLayer("extra", "ReLU")])
    net = parse(v1dst)
    assert [l.name for l in net.layers] == ["fc6_conv", "fc7", "extra"] and not len(net.layer)
    assert net.layers[2].type == caffe_pb2.V1LayerParameter.RELU
    old = cm.read_caffemodel(v1src)
    assert layer_bytes(v1dst, cm.read_caffemodel(v1dst))["fc7"] == layer_bytes(v1src, old)["fc7"]
    with pytest.raises(SurgeryError, match="V1"):
        cm.transform(v1src, tmp_path / "x.caffemodel", add=[cm.NewLayer("bn", "BatchNorm")])


def test_plan_refuses_unknown_and_clashing_names(tmp_path):
    src = tmp_path / "a.caffemodel"
    cm.write_caffemodel(src, sample_layers())
    summary = cm.read_caffemodel(src)
    with pytest.raises(SurgeryError, match="nope"):
        cm.plan(summary, rename={"nope": "x"})
    with pytest.raises(SurgeryError, match="conv1"):
        cm.plan(summary, rename={"bn1": "conv1"})
    with pytest.raises(SurgeryError):
        cm.transform(src, src, rename={"bn1": "bn2"})  # output is the input without in_place


def test_read_blob_errors_name_the_layer(tmp_path):
    src = tmp_path / "a.caffemodel"
    cm.write_caffemodel(src, sample_layers())
    with pytest.raises(SurgeryError, match="layer 'missing'"):
        cm.read_blob(src, "missing", 0)
    with pytest.raises(SurgeryError, match="layer 'relu1'.*no blob 0"):
        cm.read_blob(src, "relu1", 0)


# ---------------------------------------------------------------- robustness


def reader_outcome(data):
    """'ok' or 'error' from our reader; anything other than SurgeryError fails the test."""
    try:
        cm.read_caffemodel(io.BytesIO(data))
        return "ok"
    except SurgeryError as exc:
        assert "byte " in str(exc) or (not data and "empty" in str(exc))
        return "error"


def protobuf_outcome(data):
    if not data:   # protobuf reads an empty net; we refuse an empty file (a failed download)
        return "error"
    try:
        caffe_pb2.NetParameter().ParseFromString(data)
        return "ok"
    except Exception:  # protobuf's DecodeError; any failure counts
        return "error"


def test_truncation_at_every_cut_agrees_with_protobuf(tmp_path):
    path = tmp_path / "a.caffemodel"
    layers = sample_layers()
    layers[0]["blobs"] = [f32(2, 3, 1, 1), f32(2)]
    layers[4]["blobs"] = [cm.BlobSpec(f32(3, 2), legacy=True)]
    cm.write_caffemodel(path, layers, name="tiny")
    raw = path.read_bytes()
    for cut in range(len(raw)):
        data = raw[:cut]
        assert reader_outcome(data) == protobuf_outcome(data), cut


def test_error_names_file_and_offset(tmp_path):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(cm._len_header(100, 50) + b"\x0a\x02ab")
    with pytest.raises(SurgeryError) as info:
        cm.read_caffemodel(path)
    assert str(path) in str(info.value) and "byte 2:" in str(info.value)  # after the 2-byte tag


@pytest.mark.parametrize("data", [
    cm._key(100, 2) + cm._varint(1 << 62),                    # huge length
    cm._key(100, 2) + cm._varint((1 << 64) - 1),              # length of 2^64-1
    b"\xff" * 11,                                              # varint too long
    cm._key(5, 6),                                             # invalid wire type
    cm._key(5, 4),                                             # stray end-group
    cm._key(0, 0) + b"\x00",                                   # field number 0
    cm._key(9, 3) * 100000,                                    # absurd nesting of groups
    cm._len_header(100, 2) + cm._key(1, 0) + b"\x01",          # layer name as varint
    cm._len_header(100, 4) + cm._len_header(7, 2) + cm._len_header(5, 3)[:2],  # ragged data
])
def test_malformed_inputs_raise_surgery_error(data):
    assert reader_outcome(data) == "error"


def test_flipped_wire_types_never_escape_as_other_errors(tmp_path):
    """Fixed data (its own generator, so other tests' draws do not change it): the reader
    skips parameter blocks it never decodes, so a flip that corrupts only the inside of
    one (an `include` rule, say) passes our reader and not protobuf. With the module's
    shared generator, some test orders produced exactly such a file."""
    global RNG
    saved, RNG = RNG, np.random.default_rng(1234)
    try:
        layers = sample_layers()[:3]
        layers[0]["blobs"] = [f32(2, 3, 1, 1)]
    finally:
        RNG = saved
    path = tmp_path / "a.caffemodel"
    cm.write_caffemodel(path, layers, name="tiny")
    raw = path.read_bytes()
    for i in range(len(raw)):
        for wire in range(8):
            data = bytearray(raw)
            data[i] = (data[i] & 0xF8) | wire
            if reader_outcome(bytes(data)) == "ok":
                assert protobuf_outcome(bytes(data)) == "ok", (i, wire)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_surgery_error(data):
    reader_outcome(data)


class CountingFile(io.RawIOBase):
    """A seekable file that records the size of every read() the reader makes."""

    def __init__(self, path):
        self.f = open(path, "rb")
        self.name = str(path)
        self.sizes = []

    def read(self, n=-1):
        self.sizes.append(n)
        return self.f.read(n)

    def seek(self, pos, whence=0):
        return self.f.seek(pos, whence)

    def tell(self):
        return self.f.tell()

    def close(self):
        self.f.close()


def test_reader_never_reads_blob_data(tmp_path):
    path = tmp_path / "big.caffemodel"
    big = np.zeros((1024, 1024, 4), np.float32)  # 16 MiB in one blob
    cm.write_caffemodel(path, [dict(name="fc", type="InnerProduct", blobs=[big, f32(3)]),
                               dict(name="after", type="ReLU")])
    counting = CountingFile(path)
    try:
        summary = cm.read_caffemodel(counting)
    finally:
        counting.close()
    assert [l.name for l in summary.layers] == ["fc", "after"]
    assert summary.layers[0].blobs[0].shape == (1024, 1024, 4)
    assert max(counting.sizes) <= 64
    assert 0 <= min(counting.sizes) and sum(counting.sizes) < 1024


# ---------------------------------------------------------------- streaming

@pytest.mark.parametrize("dtype,legacy", [(np.float32, False), (np.float64, False),
                                          (np.float32, True)])
def test_stream_blob_writes_the_bytes_of_the_whole_array(tmp_path, dtype, legacy):
    """A blob given in pieces (arrays or bytes, cut anywhere) is the same file as the array."""
    arr = RNG.standard_normal((5, 3, 2, 7)).astype(dtype)
    whole, streamed = tmp_path / "a.caffemodel", tmp_path / "b.caffemodel"
    cm.write_caffemodel(str(whole), [{"name": "c", "type": "Convolution",
                                      "blobs": [cm.BlobSpec(arr, legacy=legacy)]}], name="n")
    flat = arr.reshape(-1)
    pieces = [flat[:1], flat[1:40].tobytes(), flat[40:]]
    layers = (cm.NewLayer("c", "Convolution", (cm.StreamBlob(arr.shape, iter(pieces),
                                                             double=dtype == np.float64,
                                                             legacy=legacy),)) for _ in [0])
    cm.write_caffemodel(str(streamed), layers, name="n")
    assert streamed.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("count", [209, 211])
def test_stream_blob_that_breaks_its_promised_length_is_refused(tmp_path, count):
    out = tmp_path / "x.caffemodel"
    blob = cm.StreamBlob((10, 21), iter([np.zeros(count, np.float32)]))
    with pytest.raises(SurgeryError, match="streamed blob"):
        cm.write_caffemodel(str(out), [cm.NewLayer("x", "Convolution", (blob,))])
    assert not out.exists() and not list(tmp_path.iterdir())


def test_blob_reader_reads_any_range_of_packed_unpacked_and_double_data(tmp_path):
    values = f32(300)
    blob = b"".join(b"\x2d" + struct.pack("<f", v) for v in values[:120])   # unpacked
    blob += cm._len_header(5, 4 * 180) + values[120:].tobytes()               # then packed
    blob += cm._len_header(7, 4) + cm._len_header(1, 2) + bytes([20, 15])
    layer = cm._string_field(1, "ip") + cm._string_field(2, "InnerProduct")
    layer += cm._len_header(7, len(blob)) + blob
    mixed = tmp_path / "mixed.caffemodel"
    mixed.write_bytes(cm._len_header(100, len(layer)) + layer)
    double = tmp_path / "double.caffemodel"
    cm.write_caffemodel(str(double), [{"name": "ip", "type": "InnerProduct",
                                       "blobs": [values.astype(np.float64).reshape(20, 15)]}])
    for path, packed in ((mixed, False), (double, True)):
        summary = cm.read_caffemodel(path)
        whole = cm.read_blob(summary, "ip", 0).reshape(-1)
        with cm.BlobReader(summary, "ip", 0) as reader:
            assert reader.packed == packed
            for start, n in ((0, 300), (0, 1), (119, 2), (5, 200), (299, 1), (150, 0)):
                np.testing.assert_array_equal(reader.read(start, n), whole[start:start + n])
            if packed:
                assert b"".join(reader.raw_pieces()) == whole.astype("<f8").tobytes()
