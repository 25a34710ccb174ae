"""The engine wrapper maps Caffe blob names to the right values (OpenCV DNN vs numpy)."""

import sys

import numpy as np
import pytest

from surgery.builder import NetBuilder
from surgery.engines.engine import get_engine
from surgery.errors import SurgeryError
from surgery.io.caffemodel import write_caffemodel
from surgery.io.prototxt import save_prototxt

pytest.importorskip("cv2")


def conv2d(x, w, b, *, stride, pad, dilation):
    """Reference Caffe convolution of one image (C, H, W), cross-correlation, floor output."""
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    n, c, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    oh = (xp.shape[1] - (dh * (kh - 1) + 1)) // sh + 1
    ow = (xp.shape[2] - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, oh, ow), dtype=np.float64)
    for p in range(kh):
        for q in range(kw):
            patch = xp[:, p * dh: p * dh + sh * (oh - 1) + 1: sh, q * dw: q * dw + sw * (ow - 1) + 1: sw]
            out += np.einsum("nc,chw->nhw", w[:, :, p, q], patch)
    return out + b[:, None, None]


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(7)
    b = NetBuilder("tiny")
    b.input("data", (1, 2, 9, 11))
    b.conv("conv1", "data", num_output=3, kernel=(3, 5), stride=(2, 1), pad=(1, 2))
    b.scale("scale1", "conv1")
    b.relu("relu1", "conv1")
    b.conv("conv2", "conv1", num_output=4, kernel=3, pad=2, dilation=2, top="out")
    weights = {
        "conv1": [rng.normal(size=(3, 2, 3, 5)), rng.normal(size=3)],
        "scale1": [np.array([1.5, -0.5, 2.0]), np.array([0.1, -0.2, 0.3])],
        "conv2": [rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)],
    }
    proto, model = tmp_path / "tiny.prototxt", tmp_path / "tiny.caffemodel"
    save_prototxt(b.net, proto)
    write_caffemodel(str(model), [
        {"name": name, "type": next(l.type for l in b.net.layer if l.name == name),
         "blobs": [np.asarray(a, dtype=np.float32) for a in arrays]}
        for name, arrays in weights.items()])
    x = rng.normal(size=(1, 2, 9, 11)).astype(np.float32)
    return proto, model, x, {k: [np.asarray(a, np.float32).astype(np.float64) for a in v]
                             for k, v in weights.items()}


def test_opencv_matches_numpy_through_an_in_place_chain(tiny):
    proto, model, x, w = tiny
    got = get_engine("opencv").run(proto, model, {"data": x}, ["conv1", "out", "data"])
    conv1 = conv2d(x[0].astype(np.float64), *w["conv1"], stride=(2, 1), pad=(1, 2), dilation=(1, 1))
    chain = np.maximum(conv1 * w["scale1"][0][:, None, None] + w["scale1"][1][:, None, None], 0)
    out = conv2d(chain, *w["conv2"], stride=(1, 1), pad=(2, 2), dilation=(2, 2))
    assert got["conv1"].shape == (1, 3, 5, 11)
    # The blob holds the value after Scale and ReLU, not the convolution's own output.
    np.testing.assert_allclose(got["conv1"][0], chain, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got["conv1"][0], conv1, atol=1e-3)
    np.testing.assert_allclose(got["out"][0], out, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(got["data"], x)


def test_inputs_of_another_size_reshape_the_net(tiny):
    proto, model, _, w = tiny
    x = np.random.default_rng(1).normal(size=(1, 2, 6, 7)).astype(np.float32)
    got = get_engine("opencv").run(proto, model, {"data": x}, ["conv1"])["conv1"]
    conv1 = conv2d(x[0].astype(np.float64), *w["conv1"], stride=(2, 1), pad=(1, 2), dilation=(1, 1))
    chain = np.maximum(conv1 * w["scale1"][0][:, None, None] + w["scale1"][1][:, None, None], 0)
    np.testing.assert_allclose(got[0], chain, rtol=1e-5, atol=1e-5)


def test_unknown_blob_input_and_engine_are_user_errors(tiny):
    proto, model, x, _ = tiny
    engine = get_engine("opencv")
    with pytest.raises(SurgeryError, match="blob 'nope'"):
        engine.run(proto, model, {"data": x}, ["nope"])
    with pytest.raises(SurgeryError, match="not an input"):
        engine.run(proto, model, {"image": x}, ["out"])
    with pytest.raises(SurgeryError, match="unknown engine"):
        get_engine("tensorrt")
    with pytest.raises(SurgeryError, match="no such file"):
        engine.run(proto, str(model) + ".missing", {"data": x}, ["out"])


def test_weights_that_do_not_fit_are_a_user_error(tiny, tmp_path):
    proto, _, x, _ = tiny
    bad = tmp_path / "bad.caffemodel"
    write_caffemodel(str(bad), [{"name": "conv1", "type": "Convolution",
                                 "blobs": [np.zeros((3, 2, 2, 2), np.float32), np.zeros(3, np.float32)]}])
    with pytest.raises(SurgeryError):
        get_engine("opencv").run(proto, bad, {"data": x}, ["out"])


def test_missing_opencv_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` fail
    with pytest.raises(SurgeryError, match=r"pip install 'caffe-surgery\[verify\]'"):
        get_engine("opencv")


def test_missing_pycaffe_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "caffe", None)
    monkeypatch.delenv("CAFFE_PYTHON", raising=False)
    with pytest.raises(SurgeryError, match="pycaffe"):
        get_engine("caffe")


def test_opencv_engine_names_the_depthwise_layers_it_miscomputes():
    from surgery.engines.engine import get_engine
    from surgery.io.prototxt import parse_prototxt

    def net(pad, dilation, group):
        return parse_prototxt(
            f'layer {{ name: "dw" type: "Convolution" bottom: "a" top: "b" convolution_param '
            f'{{ num_output: 4 group: {group} kernel_size: 3 pad: {pad} dilation: {dilation} }} }}')

    engine = get_engine("opencv")
    (line,) = engine.caveats(net(1, 2, 4))
    assert "'dw'" in line and "depthwise" in line
    assert engine.caveats(net(2, 2, 4)) == [] and engine.caveats(net(1, 2, 1)) == []


def test_an_opencv_failure_is_reported_by_its_meaning_not_its_last_line(tmp_path):
    """A failed OpenCV check ends with operand lines ("'0' is 0"); the message keeps what
    was expected and the values, without OpenCV's source path or C++ signature."""
    proto = tmp_path / "slice.prototxt"
    proto.write_text('layer { name: "data" type: "Input" top: "data"\n'
                     '  input_param { shape { dim: 1 dim: 4 dim: 8 dim: 8 } } }\n'
                     'layer { name: "x" type: "Slice" bottom: "data" top: "x" top: "y"\n'
                     '  slice_param { axis: 2 slice_point: 3 slice_point: 2 } }\n')
    model = tmp_path / "none.caffemodel"
    write_caffemodel(model, [], name="slice")
    with pytest.raises(SurgeryError) as info:
        get_engine("opencv").run(proto, model, {"data": np.zeros((1, 4, 8, 8), np.float32)},
                                 ["x"])
    message = str(info.value)
    assert "expected: 'total(os[i]) > 0'" in message and "is -32" in message
    assert "must be greater than" in message.split("failed", 1)[1]
    assert "/io/opencv" not in message and "getLayerShapesRecursively" not in message
