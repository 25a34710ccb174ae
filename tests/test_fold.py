"""fold without Caffe: what it folds, leaves and refuses, the minimal prototxt edit, the
streamed caffemodel (untouched layers byte for byte), fork BN against numpy's computation
of the fork's formula, and ResNet-50 in OpenCV DNN. tests/test_fold_caffe.py proves the
numbers in real Caffe."""

import json

import numpy as np
import pytest

import _fold_nets as nets
from surgery import caffe_pb2
from surgery.cli import main
from surgery.engines.engine import get_engine
from surgery.io import caffemodel as cm
from surgery.io.netfile import load_prototxt


@pytest.fixture
def zoo(tmp_path):
    proto = tmp_path / "zoo.prototxt"
    proto.write_text(nets.ZOO)
    return proto, nets.trained_weights(proto, tmp_path / "zoo.caffemodel")


def run(capsys, *argv):
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_the_zoo_folds_what_it_can_and_names_what_it_leaves(zoo, tmp_path, capsys):
    proto, weights = zoo
    out, out_w = tmp_path / "f.prototxt", tmp_path / "f.caffemodel"
    status, text, _ = run(capsys, "fold", proto, "--weights", weights, "-o", out,
                          "--weights-out", out_w, "--json")
    assert status == 0
    summary = json.loads(text)
    assert {f["into"]: tuple(f["removed"]) for f in summary["folded"]} == nets.ZOO_FOLDS
    left = {item["layer"]: item["why"] for item in summary["left"]}
    assert tuple(left) == nets.ZOO_LEFT
    assert "also feeds sum5" in left["conv5"] and "use_global_stats false" in left["bn10"]
    folded = load_prototxt(str(out))
    layers = {l.name: l for l in folded.layer}
    removed = {name for names in nets.ZOO_FOLDS.values() for name in names}
    assert not removed & set(layers)
    # bias terms where the folded layer had none; the conv writes the group's last top
    assert layers["conv2"].convolution_param.bias_term and list(layers["conv2"].top) == ["scale2"]
    assert layers["fc9"].inner_product_param.bias_term
    assert list(layers["relu2"].bottom) == ["scale2"]
    # a BN + Scale with nothing to fold into: the Scale reads the BN's bottom, with a bias
    assert list(layers["scale5"].bottom) == ["conv5"] and layers["scale5"].scale_param.bias_term
    # a lone BN became a Scale: no BatchNorm parameters or param specs left
    assert layers["bn7"].type == "Scale" and not layers["bn7"].HasField("batch_norm_param")
    assert layers["bn10"].type == "BatchNorm"


def test_the_prototxt_is_a_minimal_edit(zoo, tmp_path, capsys):
    proto, weights = zoo
    out = tmp_path / "f.prototxt"
    assert run(capsys, "fold", proto, "--weights", weights, "-o", out, "--weights-out",
               tmp_path / "f.caffemodel")[0] == 0
    before, after = proto.read_text().splitlines(), out.read_text().splitlines()
    kept = [line for line in before if line in after]
    # every line of the output is a line of the input, but for the few fields fold sets
    new = [line for line in after if line not in before]
    assert len(new) <= 12, new
    assert all("bias_term" in line or "top:" in line or "bottom:" in line or "Scale" in line
               or "layer {" in line or "}" in line for line in new), new
    assert len(kept) > len(before) - 40


def test_untouched_layers_are_copied_byte_for_byte(zoo, tmp_path, capsys):
    proto, weights = zoo
    out_w = tmp_path / "f.caffemodel"
    assert run(capsys, "fold", proto, "--weights", weights, "-o", tmp_path / "f.prototxt",
               "--weights-out", out_w)[0] == 0
    src, dst = cm.read_caffemodel(str(weights)), cm.read_caffemodel(str(out_w))
    raw_in, raw_out = open(weights, "rb").read(), open(out_w, "rb").read()
    folded = set(nets.ZOO_FOLDS) | {n for names in nets.ZOO_FOLDS.values() for n in names}
    untouched = [l.name for l in src.layers if l.name not in folded]
    assert "conv5" in untouched and "bn10" in untouched
    for name in untouched:
        a, b = src.layer(name), dst.layer(name)
        assert raw_in[a.start:a.end] == raw_out[b.start:b.end], name
    assert [l.name for l in dst.layers] == [l.name for l in src.layers if l.name not in
                                            {n for names in nets.ZOO_FOLDS.values()
                                             for n in names}]


def test_dry_run_writes_nothing_and_weights_out_is_needed(zoo, tmp_path, capsys):
    proto, weights = zoo
    out = tmp_path / "f.prototxt"
    status, text, _ = run(capsys, "fold", proto, "--weights", weights, "--dry-run")
    assert status == 0 and text.startswith("fold (TEST): 6 group(s) folded")
    assert "left: conv5: its output also feeds sum5" in text
    status, _, err = run(capsys, "fold", proto, "--weights", weights, "-o", out)
    assert status == 2 and "--weights-out" in err and not out.exists()


TRAIN_VAL = """name: "tv"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }
layer { name: "label" type: "Input" top: "label" include { phase: TRAIN }
  input_param { shape { dim: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" %s }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } %s }
"""


@pytest.mark.parametrize("bn, scale, blocker", [
    ("", "param { lr_mult: 0 } param { lr_mult: 0 }", "TRAIN updates its mean and variance"),
    ("batch_norm_param { use_global_stats: true }", "", "TRAIN learns its blob(s) 0, 1"),
])
def test_a_net_training_still_updates_is_refused_unless_phase_test(tmp_path, capsys, bn,
                                                                  scale, blocker):
    proto = tmp_path / "tv.prototxt"
    proto.write_text(TRAIN_VAL % (bn, scale))
    weights = nets.trained_weights(proto, tmp_path / "tv.caffemodel")
    out, out_w = tmp_path / "f.prototxt", tmp_path / "f.caffemodel"
    status, _, err = run(capsys, "fold", proto, "--weights", weights, "-o", out,
                         "--weights-out", out_w)
    assert status == 2 and blocker in err and "--phase TEST" in err
    assert not out.exists() and not out_w.exists()
    assert run(capsys, "fold", proto, "--weights", weights, "-o", out, "--weights-out", out_w,
               "--phase", "TEST")[0] == 0
    assert [l.name for l in load_prototxt(str(out)).layer] == ["data", "label", "conv"]


def test_frozen_train_val_folds_without_phase(tmp_path, capsys):
    proto = tmp_path / "tv.prototxt"
    proto.write_text(TRAIN_VAL % ("batch_norm_param { use_global_stats: true }",
                                  "param { lr_mult: 0 } param { lr_mult: 0 }"))
    weights = nets.trained_weights(proto, tmp_path / "tv.caffemodel")
    assert run(capsys, "fold", proto, "--weights", weights, "--dry-run")[0] == 0


def test_weights_without_the_bn_layer_are_refused_naming_it(zoo, tmp_path, capsys):
    proto, weights = zoo
    partial = tmp_path / "partial.caffemodel"
    cm.transform(str(weights), str(partial), drop=["bn3"])
    out_w = tmp_path / "f.caffemodel"
    status, _, err = run(capsys, "fold", proto, "--weights", partial, "-o",
                         tmp_path / "f.prototxt", "--weights-out", out_w)
    assert status == 2 and "layer 'bn3'" in err and "no layer of this name" in err
    assert not out_w.exists()


def _conv_fork_net(bn_param):
    return f"""name: "fork"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: 5 dim: 5 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 4 kernel_size: 1 bias_term: false }} }}
layer {{ name: "bn" type: "BN" bottom: "conv" top: "bn" bn_param {{ {bn_param} }} }}
"""


@pytest.mark.parametrize("bn_param", ["frozen: true eps: 0.001", "bn_mode: INFERENCE"],
                         ids=["pspnet", "segnet"])
def test_fork_bn_fold_equals_numpy_on_the_forks_formula(tmp_path, capsys, bn_param):
    """A 1x1 conv and a fork BN, computed in numpy from the fork's own formula, against the
    folded net (pure BVLC) run in OpenCV DNN."""
    proto = tmp_path / "fork.prototxt"
    proto.write_text(_conv_fork_net(bn_param))
    weights = nets.trained_weights(proto, tmp_path / "fork.caffemodel")
    out, out_w = tmp_path / "f.prototxt", tmp_path / "f.caffemodel"
    assert run(capsys, "fold", proto, "--weights", weights, "-o", out,
               "--weights-out", out_w)[0] == 0
    assert "BN" not in out.read_text()
    w = cm.read_blob(str(weights), "conv", 0).reshape(4, 3)
    blobs = [cm.read_blob(str(weights), "bn", i).reshape(1, 4, 1, 1) for i in range(4 if
                                                                                 "frozen" in bn_param else 2)]
    x = np.random.default_rng(2).standard_normal((1, 3, 5, 5)).astype(np.float32)
    conv = np.einsum("oc,nchw->nohw", w, x)
    if len(blobs) == 4:
        scale, shift, mean, var = blobs
        want = ((conv - mean) * (var + np.float32(0.001)) ** -0.5) * scale + shift
    else:
        scale, shift = blobs
        want = conv * scale + shift
    got = get_engine("opencv").run(str(out), str(out_w), {"data": x}, ["bn"])["bn"]
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


def test_resnet50_folds_exactly_in_opencv(tmp_path, capsys):
    net = load_prototxt("models/resnet50/deploy.prototxt")
    proto = nets.write_net(nets.with_eps(net), tmp_path / "r50.prototxt")
    weights = nets.trained_weights(proto, tmp_path / "r50.caffemodel")
    out, out_w = tmp_path / "f.prototxt", tmp_path / "f.caffemodel"
    assert run(capsys, "fold", proto, "--weights", weights, "-o", out, "--weights-out",
               out_w)[0] == 0
    status, text, _ = run(capsys, "verify", proto, out, "--weights", weights,
                          "--weights-converted", out_w, "--engine", "opencv", "--blob",
                          "res3d", "--json")
    report = json.loads(text)
    assert status == 0 and all(b["status"] == "ok" for b in report["blobs"]), report
    # the test can fail: the original weights do not fit the folded net's numbers
    status, _, _ = run(capsys, "verify", proto, out, "--weights", weights, "--engine", "opencv")
    assert status != 0


def test_the_plan_names_what_each_folded_layer_holds(zoo):
    from surgery.transform.fold import fold

    proto, weights = zoo
    result = fold(load_prototxt(str(proto)), cm.read_caffemodel(str(weights)))
    described = result.plan.describe()
    assert described["conv1"] == ["replaced", "replaced"] and described["bn7"] == ["replaced"] * 2
    assert result.plan.drop == {n for names in nets.ZOO_FOLDS.values() for n in names}
    fresh = {l.name: l.type for l in result.plan.edit if l.type is not None}
    assert fresh == {"bn7": "Scale"}
    assert caffe_pb2  # the schema the folded net is read with


def test_a_convolution_sharing_its_weights_is_not_folded_into(tmp_path, capsys):
    proto = tmp_path / "shared.prototxt"
    proto.write_text(TRAIN_VAL.replace(' include { phase: TRAIN }', '').replace(
        'convolution_param', 'param { name: "w" } convolution_param') % ("", ""))
    weights = nets.trained_weights(proto, tmp_path / "shared.caffemodel")
    status, text, _ = run(capsys, "fold", proto, "--weights", weights, "--dry-run",
                          "--phase", "TEST")
    assert status == 0 and "left: conv: its weights are shared" in text
    assert "scale <- bn (one Scale)" in text
