"""`caffe-surgery bvlc`: fork layers rewritten to BVLC layer types, as a minimal edit,
with the weights streamed through the weight plan.

That each BVLC form computes its fork layer's arithmetic is checked against the fork's
formula in tests/test_prepare.py (OpenCV) and tests/test_caffe_forks.py (Caffe); here the
files: what changes and what does not, the weights' blobs, the refusals, and that the
result runs where the issue says (OpenCV as it is; BVLC Caffe when no fork layer is left)
and verifies against the original.
"""

import json

import numpy as np
import pytest

from surgery.builder import NetBuilder
from surgery.io import caffemodel as cm
from surgery.io.prototxt import save_prototxt
from surgery.io.netfile import load_net
from surgery.models.segmentation import pspnet

from _caffe import build  # noqa: F401 (a fixture)
from conftest import corpus_path, run_cli


@pytest.fixture
def psp(tmp_path):
    net, weights = tmp_path / "psp.prototxt", tmp_path / "psp.caffemodel"
    save_prototxt(pspnet(50, width=0.0625, input_size=233), net)
    assert run_cli("init-weights", net, "-o", weights)[0] == 0
    return net, weights


def test_pspnet_bn_becomes_batchnorm_and_scale_as_a_minimal_edit(tmp_path, psp):
    net, weights = psp
    out, model = tmp_path / "bvlc.prototxt", tmp_path / "bvlc.caffemodel"
    code, summary, err = run_cli("bvlc", net, "-o", out, "--weights", weights, "--weights-out",
                                 model)
    assert code == 0, err
    assert "BN -> BatchNorm 'conv1_1_3x3_s2/bn' + Scale 'conv1_1_3x3_s2/bn_scale'" in summary
    assert "Interp -> Deconvolution 'conv6_interp'" in summary      # the zoom by 8
    assert "kept 4 layer(s) with no BVLC form" in summary             # the pyramid's sizes
    before, after = load_net(net).net, load_net(out).net
    types = [layer.type for layer in after.layer]
    assert "BN" not in types and types.count("Scale") == types.count("BatchNorm") == \
        [layer.type for layer in before.layer].count("BN")
    # every layer block but the BN ones and the zoom is the file's own text
    blocks = net.read_text().split("\nlayer {")[1:]
    others = [b for b in blocks if 'type: "BN"' not in b and '"conv6_interp"' not in b]
    assert len(others) == len(blocks) - types.count("Scale") - 1
    assert all(b in out.read_text() for b in others)
    # weights: 1-D statistics and factor for BatchNorm, 1-D scale and shift for Scale; the
    # other layers byte for byte
    src, dst = cm.read_caffemodel(weights), cm.read_caffemodel(model)
    c = src.layer("conv1_1_3x3_s2/bn").blobs[0].shape[1]
    assert [b.shape for b in dst.layer("conv1_1_3x3_s2/bn").blobs] == [(c,), (c,), (1,)]
    assert [b.shape for b in dst.layer("conv1_1_3x3_s2/bn_scale").blobs] == [(c,), (c,)]
    assert dst.layer("conv1_1_3x3_s2/bn").type == "BatchNorm"
    old = cm.read_blob(src, "conv1_1_3x3_s2/bn", 3).reshape(-1)
    np.testing.assert_array_equal(cm.read_blob(dst, "conv1_1_3x3_s2/bn", 1), old)
    np.testing.assert_array_equal(cm.read_blob(dst, "conv1_1_3x3_s2/bn", 2), [1.0])
    raw = weights.read_bytes()
    for name in ("conv1_1_3x3_s2", "conv6"):
        a, b = src.layer(name), dst.layer(name)
        assert raw[a.start:a.end] == model.read_bytes()[b.start:b.end]


def test_the_result_runs_in_opencv_and_verifies(tmp_path, psp):
    """OpenCV reads the BVLC form as it is (it has Interp, not the fork's BN), and verify
    proves the rewritten net with its own weights computes what the original computes."""
    pytest.importorskip("cv2")
    from surgery.engines.engine import get_engine

    net, weights = psp
    out, model = tmp_path / "bvlc.prototxt", tmp_path / "bvlc.caffemodel"
    assert run_cli("bvlc", net, "-o", out, "--weights", weights, "--weights-out", model)[0] == 0
    x = np.random.default_rng(0).standard_normal((1, 3, 233, 233)).astype(np.float32)
    assert get_engine("opencv").run(out, model, {"data": x}, ["conv6"])["conv6"].shape[2:] == (30, 30)
    code, text, err = run_cli("verify", net, out, "--weights", weights, "--weights-converted",
                              model, "--engine", "opencv", "--blob", "conv5_4")
    assert code == 0 and "conv6_interp " in text and "PASS: 2/2" in text, text + err


def test_strict_refuses_a_layer_with_no_bvlc_form(tmp_path, psp):
    net, _ = psp
    out = tmp_path / "out.prototxt"
    code, _, err = run_cli("bvlc", net, "-o", out, "--strict")
    assert code == 2 and err.count("\n") == 1 and "layer 'conv5_3_pool6_interp'" in err
    assert "Interp has no exact BVLC form" in err and "without --strict" in err
    assert not out.exists()


def test_json_and_dry_run(tmp_path, psp):
    net, weights = psp
    code, text, _ = run_cli("bvlc", net, "--dry-run", "--json", "--weights", weights)
    assert code == 0
    found = json.loads(text)
    first = found["rewritten"][0]
    assert first["type"] == "BN" and [t["type"] for t in first["into"]] == ["BatchNorm", "Scale"]
    assert {k["type"] for k in found["kept"]} == {"Interp"}
    assert list(tmp_path.iterdir()) == [net, weights]


def _mobile(tmp_path):
    """A small MobileNet of the forks: depthwise convolutions, ReLU6, a ceil_mode pool."""
    b = NetBuilder("mobile")
    x = b.input("data", (1, 3, 32, 32))
    x = b.conv("conv1", x, num_output=8, kernel=3, stride=2, pad=1)
    b.layer("ReLU6", "relu1", [x], [x])
    x = b.conv("dw2", x, num_output=8, kernel=3, pad=1, type="ConvolutionDepthwise")
    b.layer("ReLU6", "relu2", [x], [x])
    x = b.pool("pool", x, kernel=3, stride=2)
    b.net.layer[-1].pooling_param.ceil_mode = False
    x = b.conv("pw3", x, num_output=16, kernel=1)
    path = tmp_path / "mobile.prototxt"
    save_prototxt(b.net, path)
    return path


def test_depthwise_relu6_and_ceil_mode_leave_no_fork_layer(tmp_path):
    net = _mobile(tmp_path)
    weights, out, model = tmp_path / "m.caffemodel", tmp_path / "b.prototxt", tmp_path / "b.caffemodel"
    assert run_cli("init-weights", net, "-o", weights)[0] == 0
    code, text, err = run_cli("bvlc", net, "-o", out, "--weights", weights, "--weights-out", model,
                              "--strict")
    assert code == 0 and "no fork layer is left" in text, text + err
    after = load_net(out).net
    assert [l.type for l in after.layer] == ["Input", "Convolution", "Clip", "Convolution", "Clip",
                                             "Pooling", "Convolution"]
    pool = after.layer[5].pooling_param
    assert pool.round_mode == pool.FLOOR and not pool.HasField("ceil_mode")
    assert after.layer[3].convolution_param.group == 8
    dst, src = cm.read_caffemodel(model), cm.read_caffemodel(weights)
    assert dst.layer("dw2").type == "Convolution"       # retyped, its blobs byte for byte
    np.testing.assert_array_equal(cm.read_blob(dst, "dw2", 0), cm.read_blob(src, "dw2", 0))
    pytest.importorskip("cv2")
    code, text, err = run_cli("verify", net, out, "--weights", weights, "--weights-converted",
                              model, "--engine", "opencv", "--blob", "pw3")
    assert code == 0 and "PASS" in text, text + err


@pytest.mark.parametrize("rel, rewritten, kept", [
    ("segnet/segnet_inference.prototxt", {"BN"}, {"DenseImageData", "Upsample"}),
    ("enet/enet_deploy_final.prototxt", {"BN"}, {"Upsample"}),
    ("shufflenet/shufflenet_1x_g3_deploy.prototxt", {"ConvolutionDepthwise"}, {"ShuffleChannel"}),
    ("densenet/DenseNet_121.prototxt", {"Pooling"}, set()),
    ("senet/SE-ResNet-50.prototxt", {"Axpy"}, set()),
    ("pspnet/pspnet101_VOC2012_473.prototxt", {"BN", "Interp"}, {"Interp"}),
])
def test_corpus_fork_nets(tmp_path, rel, rewritten, kept):
    path = corpus_path(rel)
    out = tmp_path / "out.prototxt"
    code, text, err = run_cli("bvlc", path, "-o", out, "--json")
    assert code == 0, err
    found = json.loads(text)
    assert {r["type"] for r in found["rewritten"]} == rewritten
    assert {k["type"] for k in found["kept"]} == kept
    after = load_net(out).net
    assert not rewritten - kept & {l.type for l in after.layer} - {"Pooling"}


def test_an_axpy_over_its_own_input_is_kept(tmp_path):
    """An Eltwise sum cannot write over one of its inputs (it clears its top first), so an
    Axpy in place has no BVLC form: kept and listed."""
    b = NetBuilder("se")
    b.input("data", (1, 4, 6, 6))
    x = b.conv("x", "data", num_output=4, kernel=3, pad=1)
    g = b.pool("g", x, global_pooling=True, method="AVE")
    a = b.conv("a", g, num_output=4, kernel=1)
    b.layer("Axpy", "axpy", [a, x, "data"], ["data"])
    net = tmp_path / "se.prototxt"
    save_prototxt(b.net, net)
    code, text, err = run_cli("bvlc", net, "-o", tmp_path / "out.prototxt", "--json")
    assert code == 0, err
    found = json.loads(text)
    assert found["rewritten"] == [] and [k["layer"] for k in found["kept"]] == ["axpy"]


@pytest.mark.caffe
def test_an_se_resnet_with_axpy_runs_in_bvlc_caffe_and_verifies(tmp_path, build):
    """SE-ResNet-50 (the corpus file: 16 Axpy layers) with no fork layer left: the written
    net computes the original's conv5_3 and prob in Caffe, whose original run uses the
    fork's Axpy as a Python layer."""
    path = corpus_path("senet/SE-ResNet-50.prototxt")
    weights, out, model = (tmp_path / n for n in ("se.caffemodel", "b.prototxt", "b.caffemodel"))
    assert run_cli("init-weights", path, "-o", weights)[0] == 0
    code, text, err = run_cli("bvlc", path, "-o", out, "--weights", weights, "--weights-out",
                              model)
    assert code == 0 and "no fork layer is left" in text, text + err
    code, text, err = run_cli("verify", path, out, "--weights", weights, "--weights-converted",
                              model, "--engine", "caffe", "--blob", "conv5_3", "--blob", "prob")
    assert code == 0 and "PASS: 2/2" in text, text + err


@pytest.mark.caffe
def test_a_net_left_with_no_fork_layer_loads_in_bvlc_caffe_as_it_is(tmp_path, build):
    """No preparation: BVLC Caffe reads the written prototxt and caffemodel themselves."""
    from surgery.engines.engine import get_engine

    net = _mobile(tmp_path)
    weights, out, model = (tmp_path / n for n in ("m.caffemodel", "b.prototxt", "b.caffemodel"))
    assert run_cli("init-weights", net, "-o", weights)[0] == 0
    assert run_cli("bvlc", net, "-o", out, "--weights", weights, "--weights-out", model)[0] == 0
    shapes = get_engine("caffe").blob_shapes(out, model)
    assert shapes["pw3"] == (1, 16, 7, 7)      # FLOOR: 16 -> 7 (CEIL would give 8)


@pytest.mark.caffe
def test_the_result_verifies_in_caffe(tmp_path, psp, build):
    """The original's Interps run as the fork's Python layers, the rewritten net's too;
    its BatchNorm + Scale read the weights bvlc wrote."""
    net, weights = psp
    out, model = tmp_path / "bvlc.prototxt", tmp_path / "bvlc.caffemodel"
    assert run_cli("bvlc", net, "-o", out, "--weights", weights, "--weights-out", model)[0] == 0
    code, text, err = run_cli("verify", net, out, "--weights", weights, "--weights-converted",
                              model, "--blob", "conv5_4")
    assert code == 0 and text.splitlines()[1].startswith("engine caffe, "), text + err
    assert "PASS: 2/2" in text


DEEPLAB_HEAD = """name: "deeplab-mini"
input: "data"
input_shape { dim: 1 dim: 3 dim: 41 dim: 41 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 5 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "up" type: "Interp" bottom: "conv2" top: "up" interp_param { zoom_factor: ZOOM } }
layer { name: "half" type: "Interp" bottom: "conv2" top: "half" interp_param { shrink_factor: 2 } }
"""


@pytest.mark.parametrize("zoom", [2, 3, 8])
def test_a_zoom_interp_becomes_a_fixed_deconvolution(tmp_path, zoom):
    """A zoom by a whole factor has a BVLC form: a per-channel Deconvolution with the
    bilinear kernel, made for it in the weights even where the file has no entry for the
    Interp (init-weights writes none); a shrink has none and stays."""
    from surgery.weights.fillers import upsampling_kernel

    net = tmp_path / "dl.prototxt"
    net.write_text(DEEPLAB_HEAD.replace("ZOOM", str(zoom)))
    weights, out, model = (tmp_path / n for n in ("w.caffemodel", "b.prototxt", "b.caffemodel"))
    assert run_cli("init-weights", net, "-o", weights)[0] == 0
    assert cm.read_caffemodel(weights).find("up") is None
    code, text, err = run_cli("bvlc", net, "-o", out, "--weights", weights, "--weights-out", model,
                              "--json")
    assert code == 0, err
    found = json.loads(text)
    assert [(r["layer"], r["into"][0]["type"]) for r in found["rewritten"]] == [
        ("up", "Deconvolution")]
    assert [k["layer"] for k in found["kept"]] == ["half"]
    cp = next(l for l in load_net(out).net.layer if l.name == "up").convolution_param
    k = 2 * zoom - 1
    assert (cp.num_output, cp.group, list(cp.kernel_size), list(cp.stride), list(cp.pad),
            cp.bias_term) == (5, 5, [k], [zoom], [zoom - 1], False)
    blob = cm.read_blob(cm.read_caffemodel(model), "up", 0)
    assert blob.shape == (5, 1, k, k)
    np.testing.assert_array_equal(blob, np.broadcast_to(upsampling_kernel((zoom, zoom), (k, k)),
                                                         (5, 1, k, k)))


@pytest.mark.caffe
@pytest.mark.parametrize("zoom", [3, 8])
def test_the_zoom_deconvolution_computes_the_interp_in_caffe(tmp_path, build, zoom):
    """The original's Interp runs as the fork's Python layer (its own arithmetic), the
    rewritten net's Deconvolution as BVLC's: the same upsampled scores."""
    net = tmp_path / "dl.prototxt"
    net.write_text(DEEPLAB_HEAD.replace("ZOOM", str(zoom)).split('layer { name: "half"')[0])
    weights, out, model = (tmp_path / n for n in ("w.caffemodel", "b.prototxt", "b.caffemodel"))
    assert run_cli("init-weights", net, "-o", weights)[0] == 0
    code, text, err = run_cli("bvlc", net, "-o", out, "--weights", weights, "--weights-out", model)
    assert code == 0 and "no fork layer is left" in text, text + err
    code, text, err = run_cli("verify", net, out, "--weights", weights, "--weights-converted",
                              model, "--engine", "caffe", "--blob", "up")
    assert code == 0 and "PASS: 1/1" in text, text + err


YOLO3_NECK = """name: "yolo3-mini"
input: "data"
input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "conv2" top: "up" upsample_param { scale: 2 } }
layer { name: "route" type: "Concat" bottom: "up" bottom: "conv1" top: "route" }
layer { name: "conv3" type: "Convolution" bottom: "route" top: "conv3"
  convolution_param { num_output: 3 kernel_size: 1 } }
"""


def test_a_nearest_upsample_becomes_a_deconvolution_of_ones(tmp_path):
    """YOLO v3's one-bottom Upsample repeats each pixel: a per-channel Deconvolution with
    kernel and stride s and every weight 1 does exactly that."""
    net = tmp_path / "y3.prototxt"
    net.write_text(YOLO3_NECK)
    weights, out, model = (tmp_path / n for n in ("w.caffemodel", "b.prototxt", "b.caffemodel"))
    assert run_cli("init-weights", net, "-o", weights)[0] == 0
    code, text, err = run_cli("bvlc", net, "-o", out, "--weights", weights, "--weights-out", model)
    assert code == 0 and "Upsample -> Deconvolution 'up'" in text, text + err
    assert "no fork layer is left" in text
    cp = next(l for l in load_net(out).net.layer if l.name == "up").convolution_param
    assert (cp.num_output, cp.group, list(cp.kernel_size), list(cp.stride), list(cp.pad),
            cp.bias_term) == (6, 6, [2], [2], [], False)
    np.testing.assert_array_equal(cm.read_blob(cm.read_caffemodel(model), "up", 0),
                                  np.ones((6, 1, 2, 2), np.float32))
    # SegNet's unpooling (a second bottom, the mask) has no such form
    segnet = tmp_path / "segnet.prototxt"
    segnet.write_text(YOLO3_NECK.replace(
        'layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"\n'
        '  convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 } }',
        'layer { name: "conv2" type: "Pooling" bottom: "conv1" top: "conv2" top: "mask"\n'
        '  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }').replace(
        'bottom: "conv2" top: "up"', 'bottom: "conv2" bottom: "mask" top: "up"'))
    code, text, err = run_cli("bvlc", segnet, "--dry-run", "--json")
    assert code == 0, err
    assert [k["layer"] for k in json.loads(text)["kept"]] == ["up"]


@pytest.mark.caffe
def test_the_nearest_upsample_deconvolution_computes_it_in_caffe(tmp_path, build):
    net = tmp_path / "y3.prototxt"
    net.write_text(YOLO3_NECK)
    weights, out, model = (tmp_path / n for n in ("w.caffemodel", "b.prototxt", "b.caffemodel"))
    assert run_cli("init-weights", net, "-o", weights)[0] == 0
    assert run_cli("bvlc", net, "-o", out, "--weights", weights, "--weights-out", model)[0] == 0
    code, text, err = run_cli("verify", net, out, "--weights", weights, "--weights-converted",
                              model, "--engine", "caffe", "--blob", "up", "--blob", "conv3")
    assert code == 0 and "PASS: 2/2" in text, text + err


def test_a_zoom_after_an_unsized_data_layer_needs_its_input_shape(tmp_path):
    """A data layer whose images decide the size leaves the Interp's channel count unknown:
    kept, and the line says why and what gets it through; --input-shape does."""
    net = tmp_path / "dl.prototxt"
    net.write_text(DEEPLAB_HEAD.replace("ZOOM", "8").replace(
        'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 41 dim: 41 }\n',
        'layer { name: "data" type: "ImageData" top: "data" top: "label"\n'
        '  image_data_param { source: "list.txt" batch_size: 1 } }\n'))
    code, text, err = run_cli("bvlc", net, "--dry-run", "--json")
    assert code == 0, err
    kept = {k["layer"]: k["why"] for k in json.loads(text)["kept"]}
    assert "needs its input's channel count" in kept["up"] and "--input-shape" in kept["up"]
    code, text, err = run_cli("bvlc", net, "--dry-run", "--json", "--input-shape",
                              "data=1,3,41,41", "--input-shape", "label=1,1")
    assert code == 0, err
    assert [r["layer"] for r in json.loads(text)["rewritten"]] == ["up"]
