"""fold, proved in real BVLC Caffe (marked `caffe`; skipped without a build, tests/_caffe.py).

Every net gets trained-looking weights (tests/_fold_nets.py: moving-average factor
999.98, and 0 for one layer; eps 1e-3, 9.999e-6 and 1e-5; γ, β, mean and variance far from
1 and 0), is folded by the CLI, and the folded net with the folded weights must give the
original's blobs to 1e-4 relative in Caffe: `verify --engine caffe --weights-converted` for
the ResNets, MobileNets and the DenseNet-style net, a direct pycaffe run of both nets for
the net of every case (whose Deconvolution has no geometry for verify to compare on) and
for fork BN, which Caffe runs only as a Python layer computing the fork's formula.
"""

import json
import os
import subprocess

import pytest

import _fold_nets as nets
from _caffe import build  # noqa: F401 (a fixture)
from conftest import run_cli

pytestmark = pytest.mark.caffe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
TESTS = os.path.join(ROOT, "tests")
TOL = 1e-4


def compare(build, original, weights, folded, folded_weights, blobs):
    """{blob: relative error} of the folded net against the original, both run in Caffe."""
    env = {**os.environ, "GLOG_minloglevel": "2",
           "PYTHONPATH": os.pathsep.join([build["CAFFE_PYTHONPATH"], TESTS])}
    proc = subprocess.run([build["CAFFE_PYTHON"], "-c", nets.COMPARE, str(original),
                           str(weights), str(folded), str(folded_weights), *blobs],
                          capture_output=True, text=True, env=env, cwd="/", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def fold(tmp_path, proto, weights, *extra):
    out, out_w = tmp_path / "folded.prototxt", tmp_path / "folded.caffemodel"
    status, text, err = run_cli("fold", proto, "--weights", weights, "-o", out,
                                "--weights-out", out_w, "--json", *extra)
    assert status == 0, err
    return out, out_w, json.loads(text)


def prepare(tmp_path, net):
    proto = nets.write_net(nets.with_eps(net), tmp_path / "net.prototxt")
    return proto, nets.trained_weights(proto, tmp_path / "net.caffemodel")


def verify(proto, weights, out, out_w, *blobs):
    status, text, _ = run_cli("verify", proto, out, "--weights", weights, "--weights-converted",
                              out_w, "--engine", "caffe", "--json",
                              *[a for b in blobs for a in ("--blob", b)])
    report = json.loads(text)
    assert report["engine"] == "caffe"
    assert status == 0, report
    assert all(b["status"] == "ok" and b["factor"] == [1, 1] for b in report["blobs"]
               if len(b.get("compared") or ()) == 2), report
    return report


def test_every_case_of_the_zoo_gives_the_original_blobs(build, tmp_path):
    proto = tmp_path / "zoo.prototxt"
    proto.write_text(nets.ZOO)
    weights = nets.trained_weights(proto, tmp_path / "zoo.caffemodel")
    out, out_w, summary = fold(tmp_path, proto, weights)
    assert {f["into"]: tuple(f["removed"]) for f in summary["folded"]} == nets.ZOO_FOLDS
    assert tuple(item["layer"] for item in summary["left"]) == nets.ZOO_LEFT
    errors = compare(build, proto, weights, out, out_w, nets.ZOO_BLOBS)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_resnets_fold_exactly(build, tmp_path, depth):
    from surgery.io.netfile import load_prototxt

    net = load_prototxt(os.path.join(MODELS, f"resnet{depth}", "deploy.prototxt"))
    proto, weights = prepare(tmp_path, net)
    out, out_w, summary = fold(tmp_path, proto, weights)
    folded = [f for f in summary["folded"] if f["kind"] == "weights"]
    assert len(folded) == sum(l.type == "BatchNorm" for l in net.layer) and not summary["left"]
    verify(proto, weights, out, out_w, "conv1", "res2c", "res5c", "prob")


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_mobilenets_fold_their_depthwise_convolutions(build, tmp_path, which):
    from surgery.io.netfile import load_prototxt

    net = load_prototxt(os.path.join(MODELS, "mobilenet-mini", "deploy.prototxt")) \
        if which == "v1" else nets.mobilenet_v2()
    proto, weights = prepare(tmp_path, net)
    out, out_w, summary = fold(tmp_path, proto, weights)
    groups = {l.name: l.convolution_param.group for l in net.layer if l.type == "Convolution"}
    depthwise = [f["into"] for f in summary["folded"] if groups.get(f["into"], 1) > 1]
    assert depthwise and not summary["left"]
    report = verify(proto, weights, out, out_w)
    assert report["blobs"][0]["status"] == "ok"
    blobs = [l.top[0] for l in net.layer if l.type == "Convolution"]
    errors = compare(build, proto, weights, out, out_w, blobs)
    assert max(errors.values()) < TOL, errors


def test_densenet_bn_before_the_convolution_becomes_one_scale(build, tmp_path):
    proto, weights = prepare(tmp_path, nets.densenet())
    out, out_w, summary = fold(tmp_path, proto, weights)
    kinds = {f["into"]: f["kind"] for f in summary["folded"]}
    assert kinds["block_0_scale"] == kinds["trans_scale"] == "scale"
    assert kinds["conv0"] == "weights" if "conv0" in kinds else True
    verify(proto, weights, out, out_w, "block_2_concat", "trans_pool")


def test_pspnet_fork_bn_folds_into_pure_bvlc(build, tmp_path):
    """The original runs in Caffe with each fork BN as a Python layer computing the fork's
    formula (tests/_fold_forkbn.py); the folded net is BVLC alone."""
    net = nets.pspnet_like()
    proto = nets.write_net(net, tmp_path / "psp.prototxt")
    weights = nets.trained_weights(proto, tmp_path / "psp.caffemodel")
    out, out_w, summary = fold(tmp_path, proto, weights)
    assert len(summary["folded"]) == sum(l.type == "BN" for l in net.layer)
    assert "BN" not in out.read_text() and not summary["left"]
    python = nets.write_net(nets.as_python_bn(net), tmp_path / "psp-python.prototxt")
    errors = compare(build, python, weights, out, out_w, ["conv1", "res5c", "psp_up", "conv6"])
    assert max(errors.values()) < TOL, errors


def test_segnet_inference_bn_folds(build, tmp_path):
    net = nets.segnet_bn_net()
    proto = nets.write_net(net, tmp_path / "segnet.prototxt")
    weights = nets.trained_weights(proto, tmp_path / "segnet.caffemodel")
    out, out_w, summary = fold(tmp_path, proto, weights)
    assert [f["into"] for f in summary["folded"]] == ["conv1", "conv2"]
    python = nets.write_net(nets.as_python_bn(net), tmp_path / "segnet-python.prototxt")
    errors = compare(build, python, weights, out, out_w, ["conv1", "conv2"])
    assert max(errors.values()) < TOL, errors


BATCH_STATS = r"""
import sys
import numpy as np
import caffe
net = caffe.Net(sys.argv[1], caffe.TEST)
for blob, value in zip(net.params["bn"], (5.0, 4.0, 1.0)):
    blob.data[...] = value
x = np.random.default_rng(0).standard_normal(net.blobs["data"].data.shape).astype(np.float32)
net.blobs["data"].data[...] = x
net.forward()
y = net.blobs["y"].data
batch = (x - x.mean((0, 2, 3), keepdims=True)) / np.sqrt(x.var((0, 2, 3), keepdims=True) + 1e-5)
print(float(np.abs(y - batch).max()), float(np.abs(y - (x - 5) / np.sqrt(4 + 1e-5)).max()))
"""


def test_caffe_normalises_with_the_batch_at_test_when_use_global_stats_is_false(build, tmp_path):
    """Why fold leaves such a layer: an explicit use_global_stats: false wins over the
    phase (BatchNormLayer::LayerSetUp), so no fixed weights reproduce it."""
    proto = tmp_path / "bn.prototxt"
    proto.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { '
                     'dim: 2 dim: 3 dim: 4 dim: 4 } } }\nlayer { name: "bn" type: "BatchNorm" '
                     'bottom: "data" top: "y" batch_norm_param { use_global_stats: false } }\n')
    env = {**os.environ, "PYTHONPATH": build["CAFFE_PYTHONPATH"], "GLOG_minloglevel": "2"}
    proc = subprocess.run([build["CAFFE_PYTHON"], "-c", BATCH_STATS, str(proto)],
                          capture_output=True, text=True, env=env, cwd="/", timeout=300)
    batch, stored = map(float, proc.stdout.split())
    assert batch < 1e-5 < 1 < stored
