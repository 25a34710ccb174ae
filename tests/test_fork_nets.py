"""DeepLab and PSPNet conversions proved in both engines (issue 27).

Nets of the published structures (surgery/models/segmentation.py; the corpus files where
they are there) go through init-weights, dilate and verify as a user runs them:

- PSPNet-50 and -101 at their published 473 px, taken to output stride 16 with
  `--dilation round` (the trunk stays exact), in OpenCV and in Caffe; PSPNet-50 at
  output stride 4 in OpenCV (at a smaller size: its pyramid is sized for the map);
- DeepLab v1 LargeFOV (the corpus' V1 template, filled with --define), DeepLab v2's
  VGG-16 test net and its multi-scale ResNet-101 test net, and the corpus' DeepLab v2
  train net, at output stride 16, in both engines; `auto` takes Caffe for them.

Caffe cases are marked `caffe` (skipped without a build, tests/_caffe.py).
"""

import json
import os
import re

import pytest

from surgery.io.prototxt import save_prototxt
from surgery.models.segmentation import deeplab_v2_resnet, deeplab_v2_vgg, pspnet

from _caffe import caffe_build
from conftest import corpus_path, run_cli

ENGINES = ["opencv", pytest.param("caffe", marks=pytest.mark.caffe)]


@pytest.fixture
def engine_env(request, monkeypatch):
    """Export the Caffe build for the caffe cases, as a user would."""
    pytest.importorskip("cv2")
    if request.node.get_closest_marker("caffe") is not None:
        values = caffe_build()
        monkeypatch.setenv("CAFFE_PYTHON", values["CAFFE_PYTHON"])
        monkeypatch.setenv("CAFFE_PYTHONPATH", values["CAFFE_PYTHONPATH"])
        monkeypatch.setenv("GLOG_minloglevel", "2")


def _converted(tmp_path, net, stride, *flags, shapes=()):
    """(original, converted, weights): `net` written, its random weights, dilate -s stride."""
    original, weights = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    converted = tmp_path / f"net-os{stride}.prototxt"
    if not isinstance(net, (str, os.PathLike)):
        save_prototxt(net, original)
    else:
        original = net
    given = [a for s in shapes for a in ("--input-shape", s)]
    code, _, err = run_cli("init-weights", original, "-o", weights, *given)
    assert code == 0, err
    code, _, err = run_cli("dilate", original, "-s", stride, *flags, "-o", converted, *given)
    assert code == 0, err
    return original, converted, weights


def _filled(tmp_path, rel, shapes):
    """(template, its weights): a corpus template, and random weights made from the file
    a pipeline's sed would write from it (NUM_LABELS 21, EXP voc12)."""
    template = corpus_path(rel)
    filled = tmp_path / "filled.prototxt"
    filled.write_text(template.read_text().replace("${NUM_LABELS}", "21")
                      .replace("${EXP}", "voc12"))
    weights = tmp_path / "w.caffemodel"
    code, _, err = run_cli("init-weights", filled, "-o", weights, *shapes)
    assert code == 0, err
    return template, weights


DEFINES = ("--define", "NUM_LABELS=21", "--define", "EXP=voc12")


def _verify(original, converted, weights, engine, *extra):
    code, out, err = run_cli("verify", original, converted, "--weights", weights, "--engine",
                             engine, *extra)
    assert code == 0, out + err
    assert out.splitlines()[1].startswith(f"engine {engine}, ") and "PASS" in out
    return out


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("depth", [50, 101])
def test_pspnet_at_473_to_os16_verifies(tmp_path, engine_env, engine, depth):
    net = pspnet(depth, width=0.0625)
    original, converted, weights = _converted(tmp_path, net, 16, "--dilation", "round")
    out = _verify(original, converted, weights, engine)
    assert "input data=1x3x473x473" in out and "conv5_3      1/2" in out


def test_pspnet_to_os4_verifies_in_opencv(tmp_path, engine_env):
    """At 233 px the map is 30, so the pyramid's bins 1, 2, 3, 6 still divide it (the
    benchmark runs the same at 473)."""
    net = pspnet(50, width=0.0625, input_size=233)
    original, converted, weights = _converted(tmp_path, net, 4)
    out = _verify(original, converted, weights, "opencv")
    assert "conv5_3        2" in out


@pytest.mark.parametrize("engine", ENGINES)
def test_deeplab_v1_largefov_template_verifies_with_define(tmp_path, engine_env, engine):
    """The corpus' V1 LargeFOV test net keeps its ${...} placeholders through dilate; the
    weights are made from the filled file a pipeline's sed would write."""
    shape = ("--input-shape", "data=1,3,97,97")
    template, weights = _filled(tmp_path, "deeplab_v1/DeepLab-LargeFOV_test.prototxt", shape)
    converted = tmp_path / "os16.prototxt"
    code, _, err = run_cli("dilate", template, "-s", "16", "-o", converted)
    assert code == 0, err
    assert "${NUM_LABELS}" in converted.read_text()
    out = _verify(template, converted, weights, engine, *DEFINES, *shape)
    assert "fc8_voc12      1/2" in out


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["vgg", "resnet-msc"])
def test_deeplab_v2_test_nets_to_os16_verify(tmp_path, engine_env, engine, kind):
    net = deeplab_v2_vgg(width=0.0625, crop=129) if kind == "vgg" else \
        deeplab_v2_resnet(101, width=0.0625, crop=129)
    original, converted, weights = _converted(tmp_path, net, 16)
    out = _verify(original, converted, weights, engine)
    assert re.search(r"\nfc8_voc12 +1/2 " if kind == "vgg" else r"\nfc1_voc12\S* +1/2 ", out)


@pytest.mark.parametrize("engine", ENGINES)
def test_deeplab_v2_train_net_verifies(tmp_path, engine_env, engine):
    """The corpus' train net: its data layer is TRAIN-only, its label feeds a shrink, the
    loss and SegAccuracy; the run is the TRAIN phase's net without them."""
    given = ("--input-shape", "data=1,3,97,97", "--input-shape", "label=1,1,97,97")
    template, weights = _filled(tmp_path, "deeplab_v2/vgg16_train.prototxt", given)
    converted = tmp_path / "os16.prototxt"
    code, _, err = run_cli("dilate", template, "-s", "16", "--pooling", "cover", "-o", converted,
                           *given)
    assert code == 0, err
    out = _verify(template, converted, weights, engine, *DEFINES, *given)
    assert "conv5_3      1/2" in out and "not exact by construction: pool5" in out


@pytest.mark.caffe
def test_auto_takes_caffe_for_deeplab_and_pspnet(tmp_path, engine_env):
    net = deeplab_v2_vgg(width=0.0625, crop=65)
    original, converted, weights = _converted(tmp_path, net, 16)
    code, out, err = run_cli("verify", original, converted, "--weights", weights)
    assert code == 0 and out.splitlines()[1].startswith("engine caffe, "), out + err
    psp = pspnet(50, width=0.0625, input_size=233)
    original, converted, weights = _converted(tmp_path, psp, 16, "--dilation", "round")
    code, out, err = run_cli("verify", original, converted, "--weights", weights)
    assert code == 0 and out.splitlines()[1].startswith("engine caffe, "), out + err


def _split_return_interp(net):
    """The 0.75 branch's way back as two Interps, zoom 4 then shrink 3 (how some
    generators of these nets write it), instead of one with both factors."""
    at = next(i for i, layer in enumerate(net.layer)
              if layer.name == "fc1_voc12_res075_interp")
    shrink = net.layer[at]
    zoom = type(shrink)()
    zoom.CopyFrom(shrink)
    zoom.name, zoom.top[0] = "fc1_res075_interp_tmp", "fc1_res075_interp_tmp"
    zoom.interp_param.ClearField("shrink_factor")
    shrink.bottom[0] = zoom.top[0]
    shrink.interp_param.ClearField("zoom_factor")
    layers = list(net.layer)
    layers.insert(at, zoom)
    del net.layer[:]
    net.layer.extend(layers)
    return net


@pytest.mark.caffe
@pytest.mark.parametrize("stride", [16, 4])
@pytest.mark.parametrize("way_back", ["one interp", "zoom then shrink"])
def test_deeplab_v2_msc_trunks_are_exact_at_every_scale_in_caffe(tmp_path, engine_env, stride,
                                                                  way_back):
    """Issue 25.1: each scale's trunk (it reads its own Interp-resampled copy of the
    image) converts like the main one and holds the original's values on its grid, in
    real Caffe, both ways; the fusion Interps are ADAPTED (a zoom of coarser scores is
    not the zoom of the dense ones), so the fused score is not claimed. That the train
    net's shrunk labels still fit its scores: test_coarsen's MSC test. The 0.75 branch's
    scores may come back through one Interp or through two in a row: both keep their
    factors, since the blobs around them move together."""
    net = deeplab_v2_resnet(101, width=0.0625, crop=65)
    if way_back == "zoom then shrink":
        net = _split_return_interp(net)
    original, converted, weights = _converted(tmp_path, net, stride)
    returns = [line for line in open(converted, encoding="utf-8").read().split("layer {")
               if 'type: "Interp"' in line and "res075_interp" in line]
    assert len(returns) == (2 if way_back == "zoom then shrink" else 1)
    kept = "".join(returns)       # the factors stay: 3/4 of the 0.75 map is the main map
    assert "zoom_factor: 4" in kept and "shrink_factor: 3" in kept, kept
    trunks = ["res5c", "res5c_res075", "res5c_res05"]
    heads = ["fc1_voc12", "fc1_voc12_res075", "fc1_voc12_res05"]
    code, out, err = run_cli("verify", original, converted, "--weights", weights,
                             "--engine", "caffe", "--json",
                             *[a for b in trunks + heads + ["fc_fusion"] for a in ("--blob", b)])
    assert code == 0, out + err
    blobs = {b["blob"]: b for b in json.loads(out)["blobs"]}
    for name in trunks + heads:
        assert blobs[name]["status"] == "ok" and blobs[name]["claimed"], blobs[name]
        assert blobs[name]["rel_error"] < 1e-4 and min(blobs[name]["compared"]) >= 3
    assert blobs["fc_fusion"]["approximate"] and not blobs["fc_fusion"]["claimed"]
