"""fcn: InnerProduct -> Convolution with weight transplant, checked numerically on OpenCV DNN.

Small VGG-16s (1/16 width, 64 fc channels) keep every forward pass well under a second.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from surgery.analysis.analyse import analyse
from surgery.analysis.check import compare
from surgery.cli import main
from surgery.errors import SurgeryError
from surgery.weights.initweights import init_weights, random_weights
from surgery.io.caffemodel import read_blob, read_caffemodel, write_caffemodel
from surgery.io.prototxt import save_prototxt
from surgery.io.netfile import load_prototxt
from surgery.layers import rule_for
from surgery.models.vgg import vgg16
from surgery.pair import Pair
from surgery.transform.dilate import dilate
from surgery.transform.fcn import convolutionalize, parse_decimate, transplant

from conftest import corpus_net, corpus_path, run_cli
TOL = 1e-4


def _close(got, want, tol=TOL):
    scale = max(float(np.abs(want).max()), 1e-6)
    assert float(np.abs(got - want).max()) <= tol * scale


def _engine():
    pytest.importorskip("cv2")
    from surgery.engines.engine import get_engine

    return get_engine("opencv")


def _vgg(tmp, size, *, fc_width=64, seed=1):
    net = vgg16(width=1 / 16, fc_width=fc_width, input_size=size, num_classes=10)
    proto, model = tmp / f"vgg{size}.prototxt", tmp / f"vgg{size}.caffemodel"
    save_prototxt(net, proto)
    init_weights(net, model, seed=seed)
    return proto, model


def _fcn(tmp, proto, model, tag, *extra):
    out, weights = tmp / f"{tag}.prototxt", tmp / f"{tag}.caffemodel"
    assert main(["fcn", str(proto), "--weights", str(model), "-o", str(out),
                 "--weights-out", str(weights), *extra]) == 0
    return out, weights


def _resized(tmp, proto, size, tag):
    """The same net with a size x size input (OpenCV takes its shapes from the prototxt)."""
    net = load_prototxt(proto)
    dims = net.layer[0].input_param.shape[0].dim
    dims[2] = dims[3] = size
    path = tmp / f"{tag}.prototxt"
    save_prototxt(net, path)
    return path


def _image(size, seed=0):
    return np.random.default_rng(seed).normal(size=(1, 3, size, size)).astype(np.float32)


@pytest.fixture(scope="module")
def vgg96(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vgg96")
    return (tmp,) + _vgg(tmp, 96)


# ---------------------------------------------------------------- the rewrite itself

def test_vgg_layers_become_convolutions(vgg96):
    tmp, proto, _ = vgg96
    net = load_prototxt(proto)
    before = net.SerializeToString()
    new, plan = convolutionalize(net)
    assert net.SerializeToString() == before            # the input is not mutated
    convs = {l.name: l for l in new.layer if l.name.endswith("-conv")}
    assert sorted(convs) == ["fc6-conv", "fc7-conv", "fc8-conv"]
    assert not any(rule_for(l.type).collapses(l) for l in new.layer)
    window = rule_for("Convolution").window
    assert window(convs["fc6-conv"]) == ((3, 3), (1, 1), (1, 1), (1, 1))   # pool5 is 3x3
    assert window(convs["fc7-conv"]).kernel == (1, 1)
    assert [tuple(l.top) for l in convs.values()] == [("fc6",), ("fc7",), ("fc8",)]
    assert convs["fc8-conv"].convolution_param.num_output == 10
    assert [c.get("position") for c in plan.changes] == [Pair(1, 1)] * 3
    assert plan.exact and [p.source for p in plan.layers] == ["fc6", "fc7", "fc8"]
    # Weight shapes of the result are exactly what the plan writes.
    shapes = analyse(new).param_shapes
    assert shapes["fc6-conv"][0] == plan.layers[0].weight_shape == (64, 32, 3, 3)


def test_same_padding_puts_the_fc_output_at_the_centre(vgg96):
    tmp, proto, model = vgg96
    out, weights = _fcn(tmp, proto, model, "same")
    engine, x = _engine(), _image(96)
    want = engine.run(proto, model, {"data": x}, ["fc8"])["fc8"]
    got = engine.run(out, weights, {"data": x}, ["fc8"])["fc8"]
    assert want.shape == (1, 10) and got.shape == (1, 10, 3, 3)
    _close(got[:, :, 1, 1], want)
    assert not np.allclose(got[:, :, 0, 0], want, rtol=1e-2)   # the test can fail
    # Fully convolutional: a larger input runs and keeps its size on the fc grid.
    bigger = engine.run(_resized(tmp, out, 160, "same160"), weights, {"data": _image(160)},
                        ["fc8"])["fc8"]
    assert bigger.shape == (1, 10, 5, 5)


def test_valid_padding_gives_a_1x1_output_equal_to_the_fc(vgg96):
    tmp, proto, model = vgg96
    out, weights = _fcn(tmp, proto, model, "valid", "--pad", "valid")
    engine, x = _engine(), _image(96, seed=5)
    want = engine.run(proto, model, {"data": x}, ["fc8"])["fc8"]
    got = engine.run(out, weights, {"data": x}, ["fc8"])["fc8"]
    assert got.shape == (1, 10, 1, 1)
    _close(got[:, :, 0, 0], want)
    bigger = engine.run(_resized(tmp, out, 160, "valid160"), weights, {"data": _image(160)},
                        ["fc8"])["fc8"]
    assert bigger.shape == (1, 10, 3, 3)


def test_weights_are_reshaped_and_the_rest_copied_byte_for_byte(vgg96):
    tmp, proto, model = vgg96
    out, weights = _fcn(tmp, proto, model, "bytes", "--rename", "{name}_conv")
    src, dst = read_caffemodel(str(model)), read_caffemodel(str(weights))
    assert [l.name for l in dst.layers] == [
        l.name + "_conv" if l.name.startswith("fc") else l.name for l in src.layers]
    raw_src, raw_dst = model.read_bytes(), weights.read_bytes()
    for a, b in zip(src.layers, dst.layers):
        if a.name.startswith("conv"):
            assert raw_src[a.start:a.end] == raw_dst[b.start:b.end]
        else:
            assert b.type == "Convolution" and a.type == "InnerProduct"
    fc6 = read_blob(str(model), "fc6", 0)
    np.testing.assert_array_equal(read_blob(str(weights), "fc6_conv", 0), fc6.reshape(64, 32, 3, 3))
    np.testing.assert_array_equal(read_blob(str(weights), "fc8_conv", 1), read_blob(str(model), "fc8", 1))
    assert compare(analyse(load_prototxt(out)).param_shapes, dst).ok


def test_even_kernel_same_padding_floors_and_says_where(tmp_path):
    proto, model = _vgg(tmp_path, 64)                        # pool5 is 2x2
    out, weights = _fcn(tmp_path, proto, model, "even")
    new, plan = convolutionalize(load_prototxt(proto))
    assert plan.changes[0].after.pad == (0, 0) and plan.changes[0].get("position") == (0, 0)
    assert "one pixel smaller" in plan.changes[0].note
    engine, x = _engine(), _image(64, seed=2)
    want = engine.run(proto, model, {"data": x}, ["fc8"])["fc8"]
    got = engine.run(out, weights, {"data": x}, ["fc8"])["fc8"]
    _close(got[:, :, 0, 0], want)
    bigger = engine.run(_resized(tmp_path, out, 96, "even96"), weights, {"data": _image(96)},
                        ["fc8"])["fc8"]
    assert bigger.shape == (1, 10, 2, 2)                     # pool5 3x3 -> one smaller


FLAT = """name: "flat"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 20 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "flat" type: "Flatten" bottom: "conv1" top: "flat" }
layer { name: "ip1" type: "InnerProduct" bottom: "flat" top: "ip1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 12 transpose: true weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 5 bias_term: false } }
"""


def test_flatten_is_bypassed_and_transposed_weights_are_respected(tmp_path):
    proto = tmp_path / "flat.prototxt"
    proto.write_text(FLAT)
    model = tmp_path / "flat.caffemodel"
    init_weights(load_prototxt(proto), model, seed=3)
    out, weights = _fcn(tmp_path, proto, model, "flatf", "--pad", "valid")
    new = load_prototxt(out)
    assert "flat" not in [l.name for l in new.layer]
    ip1 = next(l for l in new.layer if l.name == "ip1-conv")
    cp = ip1.convolution_param
    assert list(ip1.bottom) == ["conv1"] and (cp.kernel_h, cp.kernel_w) == (9, 7)
    assert [p.lr_mult for p in ip1.param] == [1, 2] and cp.weight_filler.type == "xavier"
    assert next(l for l in new.layer if l.name == "ip2-conv").convolution_param.bias_term is False
    # OpenCV ignores `transpose`, so the reference is computed from Caffe's definition.
    engine, x = _engine(), np.random.default_rng(4).normal(size=(1, 3, 20, 16)).astype(np.float32)
    feat = engine.run(proto, model, {"data": x}, ["conv1"])["conv1"].reshape(-1)
    w1, b1 = read_blob(str(model), "ip1", 0), read_blob(str(model), "ip1", 1)
    assert w1.shape == (6 * 9 * 7, 12)
    want = np.maximum(feat @ w1 + b1, 0) @ read_blob(str(model), "ip2", 0).T
    got = engine.run(out, weights, {"data": x}, ["ip2"])["ip2"]
    assert got.shape == (1, 5, 1, 1)
    _close(got.reshape(-1), want)


def test_a_flatten_that_others_read_stays(tmp_path):
    proto = tmp_path / "flat2.prototxt"
    proto.write_text(FLAT + 'layer { name: "sil" type: "Silence" bottom: "flat" }\n')
    new, plan = convolutionalize(load_prototxt(proto))
    names = [l.name for l in new.layer]
    assert "flat" in names and [c.action for c in plan.changes] == ["convert", "convert"]
    assert list(new.layer[names.index("ip1-conv")].bottom) == ["conv1"]


def test_train_val_net_converts_in_both_phases():
    net = corpus_net("bvlc_alexnet", "train_val.prototxt")
    with pytest.raises(SurgeryError, match="--input-shape"):
        convolutionalize(net)
    shapes = {"data": (10, 3, 227, 227)}
    new, plan = convolutionalize(net, input_shapes=shapes, pad="valid")
    assert [p.kernel for p in plan.layers] == [(6, 6), (1, 1), (1, 1)]
    for phase in ("TRAIN", "TEST"):
        assert analyse(new, input_shapes=shapes, phase=phase).shapes["fc8"] == (10, 1000, 1, 1)


def test_v1_caffemodel_gets_v1_convolution_layers(tmp_path):
    proto, _ = _vgg(tmp_path, 96)
    net = load_prototxt(proto)
    model = tmp_path / "v1.caffemodel"
    write_caffemodel(str(model), random_weights(net, seed=2), legacy=True)
    new, plan = convolutionalize(net)
    transplant(plan, model, tmp_path / "v1f.caffemodel")
    summary = read_caffemodel(str(tmp_path / "v1f.caffemodel"))
    assert summary.legacy and summary.find("fc6-conv").type == "Convolution"
    assert compare(analyse(new).param_shapes, summary).ok


# ---------------------------------------------------------------- with dilate

def test_dilate_to_16_after_fcn_is_exact_to_fc8(vgg96):
    tmp, proto, model = vgg96
    out, weights = _fcn(tmp, proto, model, "os32")
    dense, report = dilate(load_prototxt(out), output_stride=16, head="error")
    assert report.exact and "fc8" in report.exact_blobs
    assert {c.layer for c in report.changes} >= {"pool5", "fc6-conv"}
    os16 = tmp / "os16.prototxt"
    save_prototxt(dense, os16)
    engine, x = _engine(), _image(96, seed=7)
    coarse = engine.run(out, weights, {"data": x}, ["fc8"])["fc8"]
    fine = engine.run(os16, weights, {"data": x}, ["fc8"])["fc8"]
    grid = report.grids["fc8"]
    assert grid.factor == (2, 2)
    h, w = coarse.shape[2:]
    (oh, ow), (fh, fw) = (int(o) for o in grid.offset), (int(f) for f in grid.factor)
    sampled = fine[:, :, oh::fh, ow::fw][:, :, :h, :w]
    assert sampled.shape == coarse.shape
    _close(sampled, coarse)


def test_dilate_to_8_after_fcn_needs_cover_pooling(vgg96):
    tmp, proto, _ = vgg96
    fcn_net, _ = convolutionalize(load_prototxt(proto))
    with pytest.raises(SurgeryError, match="pool5"):
        dilate(fcn_net, output_stride=8, head="error")
    _, report = dilate(fcn_net, output_stride=8, head="error", pooling="cover")
    exact = {c.layer: c.exact for c in report.changes}
    assert exact["pool5"] is False and exact["pool4"] is True and not report.exact


# ---------------------------------------------------------------- decimation

def test_decimated_fc6_keeps_every_third_tap_and_fourth_channel(tmp_path):
    proto, model = _vgg(tmp_path, 224)                       # pool5 is 7x7
    out, weights = _fcn(tmp_path, proto, model, "large", "--decimate", "fc6=3x3:16")
    new = load_prototxt(out)
    fc6 = next(l for l in new.layer if l.name == "fc6-conv")
    assert rule_for("Convolution").window(fc6) == ((3, 3), (1, 1), (3, 3), (3, 3))
    assert fc6.convolution_param.num_output == 16
    assert compare(analyse(new).param_shapes, read_caffemodel(str(weights))).ok
    w6 = read_blob(str(model), "fc6", 0).reshape(64, 32, 7, 7)
    got6 = read_blob(str(weights), "fc6-conv", 0)
    np.testing.assert_array_equal(got6, w6[[0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52,
                                             56, 60]][:, :, [0, 3, 6]][:, :, :, [0, 3, 6]])
    np.testing.assert_array_equal(read_blob(str(weights), "fc6-conv", 1),
                                  read_blob(str(model), "fc6", 1)[::4])
    np.testing.assert_array_equal(read_blob(str(weights), "fc7-conv", 0),
                                  read_blob(str(model), "fc7", 0).reshape(64, 64, 1, 1)[:, ::4])
    # Numerically: the decimated fc6 at the centre is the kept taps' sum (then ReLU).
    engine, x = _engine(), _image(224, seed=9)
    pool5 = engine.run(proto, model, {"data": x}, ["pool5"])["pool5"][0]
    want = np.einsum("ochw,chw->o", got6, pool5[:, ::3, ::3]) + read_blob(str(weights), "fc6-conv", 1)
    got = engine.run(out, weights, {"data": x}, ["fc6"])["fc6"]
    assert got.shape == (1, 16, 7, 7)
    _close(got[0, :, 3, 3], np.maximum(want, 0))
    assert not np.allclose(got[0, :, 2, 3], np.maximum(want, 0), rtol=1e-2)


def test_decimate_then_dilate_gives_deeplab_largefov_fc6():
    path = corpus_path("deeplab_v1", "DeepLab-LargeFOV_test.prototxt")
    import tempfile

    text = re.sub(r"\$\{[^}]*\}", "1", path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "largefov.prototxt"
        sub.write_text(text)
        deeplab = load_prototxt(sub)
    ref = next(l for l in deeplab.layer if l.name == "fc6")
    net = vgg16(width=1 / 16, fc_width=4096, input_size=224)
    fcn_net, _ = convolutionalize(net, decimate=parse_decimate(["fc6=3x3:1024"]))
    dense, report = dilate(fcn_net, output_stride=8, head="error", pooling="cover")
    ours = next(l for l in dense.layer if l.name == "fc6-conv")
    window = rule_for("Convolution").window
    assert window(ours) == window(ref) == ((3, 3), (1, 1), (12, 12), (12, 12))
    assert ours.convolution_param.num_output == ref.convolution_param.num_output == 1024


@pytest.mark.parametrize("spec, parsed", [
    ("fc6=3x3:1024", {"fc6": (Pair(3, 3), 1024)}),
    ("fc6 = 3 : 1024", {"fc6": (Pair(3, 3), 1024)}),
    ("fc7=:1024", {"fc7": (None, 1024)}),
    ("fc6=3x1", {"fc6": (Pair(3, 1), None)}),
])
def test_decimate_syntax(spec, parsed):
    assert parse_decimate([spec]) == parsed


# ---------------------------------------------------------------- errors

def _fails(argv, tmp, needle):
    before = sorted(p.name for p in tmp.iterdir())
    code, _, err = run_cli(*argv)
    assert code == 2
    err = err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("caffe-surgery: error:")
    assert needle in err, err
    assert sorted(p.name for p in tmp.iterdir()) == before          # nothing written
    return err


@pytest.mark.parametrize("extra, needle", [
    (["--decimate", "fc6=3x3:48"], "must divide 64"),
    (["--decimate", "fc6=5x5"], "cannot decimate a 3-tap"),
    (["--decimate", "fc9=3x3"], "'fc9'"),
    (["--decimate", "fc6=3y3"], "bad --decimate"),
    (["--rename", "{nom}-conv"], "--rename"),
    (["--rename", "conv5_3"], "the same name"),
])
def test_bad_options_exit_2_and_write_nothing(vgg96, tmp_path, extra, needle):
    _, proto, model = vgg96
    _fails(["fcn", str(proto), "--weights", str(model), "-o", str(tmp_path / "o.prototxt"),
            "--weights-out", str(tmp_path / "o.caffemodel"), *extra], tmp_path, needle)


def test_net_without_innerproduct_is_refused(vgg96, tmp_path):
    tmp, proto, model = vgg96
    out, weights = _fcn(tmp, proto, model, "twice")
    _fails(["fcn", str(out), "--weights", str(weights), "-o", str(tmp_path / "o.prototxt"),
            "--weights-out", str(tmp_path / "o.caffemodel")], tmp_path, "no InnerProduct")


def test_weights_missing_a_layer_are_refused(vgg96, tmp_path):
    _, proto, _ = vgg96
    layers = [l for l in random_weights(load_prototxt(proto)) if l["name"] != "fc7"]
    partial = tmp_path / "partial.caffemodel"
    write_caffemodel(str(partial), layers)
    err = _fails(["fcn", str(proto), "--weights", str(partial), "-o",
                  str(tmp_path / "o.prototxt"), "--weights-out", str(tmp_path / "o.caffemodel")],
                 tmp_path, "no layer of this name")
    assert "fc7" in err


def test_weights_of_another_net_are_refused(vgg96, tmp_path):
    _, proto, _ = vgg96
    other = tmp_path / "other.caffemodel"
    init_weights(vgg16(width=1 / 16, fc_width=32, input_size=96, num_classes=10), other)
    _fails(["fcn", str(proto), "--weights", str(other), "-o", str(tmp_path / "o.prototxt"),
            "--weights-out", str(tmp_path / "o.caffemodel")], tmp_path, "belong to another net")


def test_unknown_input_size_is_refused(tmp_path):
    proto = tmp_path / "data.prototxt"
    proto.write_text(FLAT.replace('type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 '
                                  'dim: 20 dim: 16 } }', 'type: "Data" top: "data" top: "label"'))
    _fails(["fcn", str(proto), "-o", str(tmp_path / "o.prototxt")], tmp_path,
           "--input-shape")
    # ...and the size given on the command line is enough.
    assert main(["fcn", str(proto), "--input-shape", "data=1,3,20,16", "--dry-run"]) == 0


def test_json_summary(vgg96, capsys):
    _, proto, _ = vgg96
    assert main(["fcn", str(proto), "--dry-run", "--json", "--decimate", "fc7=:16"]) == 0
    data = json.loads(capsys.readouterr().out)
    fc7 = data["changes"][1]
    assert fc7["num_output"] == [64, 16] and not fc7["exact"]
    assert data["weights"][2]["in_channel_step"] == 4 and data["weights"][2]["weight"]["to"] == [10, 16, 1, 1]


def test_corpus_vgg16_fc6_is_a_7x7_conv():
    new, plan = convolutionalize(corpus_net("vgg", "VGG_ILSVRC_16_layers_deploy.prototxt"),
                                 pad="valid")
    assert plan.layers[0].weight_shape == (4096, 512, 7, 7)
    assert analyse(new).shapes["fc8"] == (1, 1000, 1, 1)


# ---------------------------------------------------------------- streamed transplant

def _source(tmp_path, shape, dtype):
    path = tmp_path / f"src{np.dtype(dtype).itemsize}.caffemodel"
    values = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    write_caffemodel(str(path), [{"name": "fc", "type": "InnerProduct", "blobs": [values]}])
    return read_caffemodel(str(path))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [
    {},                                                        # reshape: bytes copied
    {"out_step": 3},
    {"in_step": 2},
    {"out_step": 2, "in_step": 4, "tap_step": Pair(2, 3), "kernel_out": Pair(3, 2)},
    {"tap_start": Pair(2, 1), "tap_step": Pair(1, 1), "kernel_out": Pair(1, 1)},
    {"transpose": True},
    {"transpose": True, "out_step": 2, "in_step": 2, "tap_step": Pair(2, 3),
     "kernel_out": Pair(3, 2)},
])
@pytest.mark.parametrize("budget", [1, 700, 1 << 30])
def test_streamed_weight_is_the_whole_array_rule(tmp_path, dtype, options, budget):
    """The pieces, read in bands of any size, are the converted weight that LayerPlan.weight
    (the rule on the whole array) gives."""
    from surgery.io.caffemodel import BlobReader
    from surgery.transform.fcn import LayerPlan

    n, c, kernel = 12, 8, Pair(5, 4)
    plan = LayerPlan(source="fc", target="fc-conv", num_output=n, channels=c, kernel=kernel,
                     transpose=False, bias=False)._replace(**options)
    shape = (c * 20, n) if plan.transpose else (n, c * 20)
    summary = _source(tmp_path, shape, dtype)
    whole = plan.weight(read_blob(summary, "fc", 0))
    with BlobReader(summary, "fc", 0) as reader:
        pieces = list(plan.weight_pieces(reader, budget=budget))
    raw = b"".join(p if isinstance(p, bytes) else np.ascontiguousarray(p, whole.dtype).tobytes()
                   for p in pieces)
    assert raw == np.ascontiguousarray(whole).tobytes()
    assert all(isinstance(p, bytes) for p in pieces) == (not options)
