"""init-weights: streamed drawing gives the same bytes as one whole draw, the per-type rules
come from the registry, and activations stay O(1) on real deep nets in a real engine."""

import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from surgery.analysis.analyse import analyse
from surgery.builder import NetBuilder
from surgery.weights.initweights import init_weights, random_weights, stream_weights
from surgery.io.caffemodel import read_blob, read_caffemodel
from surgery.io.netfile import load_prototxt
from surgery.layers import rule_for

from conftest import CORPUS

ROOT = Path(__file__).resolve().parents[1]


def _mixed_net():
    """One of each drawn form: grouped and depthwise convs, BatchNorm/Scale/ReLU, max and
    average pooling, a residual sum, a concat, an fc on a map, a transposed fc, PReLU."""
    b = NetBuilder("mixed")
    b.input("data", (1, 6, 17, 15))
    b.conv("c1", "data", num_output=12, kernel=3, pad=1, group=3)
    b.bn_scale("c1", bn="bn1", scale="sc1", relu="r1")
    b.pool("p1", "c1", kernel=3, stride=2)
    b.conv("dw", "p1", num_output=12, kernel=3, pad=1, group=12)
    b.relu("r2", "dw")
    b.conv("c2", "dw", num_output=12, kernel=1)
    b.eltwise("sum", ["p1", "c2"])
    b.relu("r3", "sum")
    b.conv("c3", "sum", num_output=5, kernel=(1, 3), pad=(0, 1))
    b.concat("cat", ["sum", "c3"])
    b.layer("PReLU", "pr", ["cat"], ["cat"])
    b.pool("ap", "cat", kernel=2, stride=2, method="AVE")
    b.fc("fc1", "ap", num_output=37)
    b.relu("r4", "fc1")
    b.layer("InnerProduct", "fct", ["fc1"], ["fct"],
            inner_product_param={"num_output": 9, "transpose": True})
    return b.net


# ---------------------------------------------------------------- pieces = one draw

@pytest.mark.parametrize("draw", [
    lambda rng, n: rng.standard_normal(n, dtype=np.float32),
    lambda rng, n: rng.standard_normal(n),
    lambda rng, n: rng.uniform(0.8, 1.2, size=n),
])
def test_numpy_draws_the_same_stream_in_pieces_as_at_once(draw):
    """What streaming relies on: a Generator gives the same values whatever the pieces."""
    n = 100_003
    whole = draw(np.random.default_rng([3, 99]), n)
    rng = np.random.default_rng([3, 99])
    sizes, parts, done = [1, 7, 4096, 65_536, 333], [], 0
    while done < n:
        size = min(sizes[len(parts) % len(sizes)], n - done)
        parts.append(draw(rng, size))
        done += size
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("unit", [16, 50, None])
def test_streamed_file_is_byte_identical_whatever_the_piece_size(tmp_path, monkeypatch, unit):
    """Pieces of 7 values cut rows, channels and blobs anywhere; moments are summed from
    them. The file must equal one drawn with every blob in one piece. A small reduction
    unit makes rows longer than a unit (cut into segments) and several units per blob."""
    from surgery.weights import initweights

    if unit is not None:
        monkeypatch.setattr(initweights._Linear, "UNIT", unit)
    net = _mixed_net()
    files = []
    for chunk in (7, 1000, 10 ** 9):
        path = tmp_path / f"w{chunk}.caffemodel"
        init_weights(net, path, seed=5, chunk=chunk)
        files.append(path.read_bytes())
    assert files[0] == files[1] == files[2]
    summary = read_caffemodel(str(tmp_path / "w7.caffemodel"))
    assert [layer.name for layer in summary.layers] == [
        "c1", "bn1", "sc1", "dw", "c2", "c3", "pr", "fc1", "fct"]


def test_first_convolution_follows_the_rule_written_here(tmp_path):
    """On a standard-normal input (E[x^2] = 1) a convolution draws He's N(0, 2/fan_in) in
    float32 from the stream seeded by (seed, crc32(name)), then its bias N(0, 0.05)."""
    net = _mixed_net()
    path = tmp_path / "w.caffemodel"
    init_weights(net, path, seed=11, chunk=5)
    rng = np.random.default_rng([11, zlib.crc32(b"c1")])
    shape = (12, 2, 3, 3)
    want_w = rng.standard_normal(int(np.prod(shape)), dtype=np.float32)
    want_w *= np.float32(math.sqrt(2.0 / (2 * 3 * 3)))
    want_b = rng.standard_normal(12, dtype=np.float32) * np.float32(0.05)
    assert read_blob(str(path), "c1", 0).tobytes() == want_w.tobytes()
    assert read_blob(str(path), "c1", 1).tobytes() == want_b.tobytes()


def test_random_weights_are_the_streamed_ones(tmp_path):
    net = _mixed_net()
    init_weights(net, tmp_path / "w.caffemodel", seed=2)
    for layer in random_weights(net, seed=2, chunk=13):
        for i, blob in enumerate(layer["blobs"]):
            np.testing.assert_array_equal(blob, read_blob(str(tmp_path / "w.caffemodel"),
                                                          layer["name"], i))


def test_linear_moments_are_summed_from_the_drawn_weights():
    """Predicted channel means of a linear layer's output equal sum(w * mean_in) + bias,
    computed here from the whole weights (grouped conv, depthwise, fc on a map, transposed
    fc), although they were summed from 7-value pieces that cut rows anywhere."""
    b = NetBuilder("linear")
    b.input("data", (1, 6, 9, 9))
    b.conv("c1", "data", num_output=12, kernel=3, group=3)
    b.layer("BatchNorm", "bn", ["c1"], ["b1"])
    b.layer("ReLU", "relu", ["b1"], ["r1"])
    b.conv("dw", "r1", num_output=12, kernel=3, group=12)
    b.layer("ReLU", "relu2", ["dw"], ["r2"])
    b.fc("fc", "r2", num_output=37)
    b.layer("InnerProduct", "fct", ["fc"], ["fct"],
            inner_product_param={"num_output": 9, "transpose": True})
    predicted, blobs = {}, {}
    for name, _type, pieces in stream_weights(b.net, seed=4, chunk=7, predicted=predicted):
        blobs[name] = [np.concatenate(list(p)).reshape(s).astype(np.float64) for s, p in pieces]
    for name, bottom, groups in (("c1", "data", 3), ("dw", "r1", 12)):
        w, bias = blobs[name]
        mean_in = predicted[bottom].mean if bottom in predicted else np.zeros(6)
        n, per_group = w.shape[0] // groups, w.shape[1]
        want = np.concatenate([np.einsum("nckl,c->n", w[g * n:(g + 1) * n],
                                         mean_in[g * per_group:(g + 1) * per_group])
                               for g in range(groups)]) + bias
        np.testing.assert_allclose(predicted[name].mean, want, rtol=1e-4, atol=1e-6)
        want_var = np.concatenate([np.einsum("nckl,c->n", np.square(w[g * n:(g + 1) * n]),
                                             (predicted[bottom].var if bottom in predicted
                                              else np.ones(6))[g * per_group:(g + 1) * per_group])
                                   for g in range(groups)])
        np.testing.assert_allclose(predicted[name].var, want_var, rtol=1e-4)
    assert np.ptp(predicted["dw"].mean) > 0   # realised weights, not one expected value
    w, bias = blobs["fc"]
    mean_in = predicted["r2"].mean
    want = w.reshape(37, mean_in.size, -1).sum(axis=2) @ mean_in + bias
    np.testing.assert_allclose(predicted["fc"].mean, want, rtol=1e-4)
    w, bias = blobs["fct"]
    np.testing.assert_allclose(predicted["fct"].mean, predicted["fc"].mean @ w + bias, rtol=1e-4)


# ---------------------------------------------------------------- the registry owns the facts

def test_initialisers_and_moment_rules_come_from_the_registry():
    from surgery import caffe_pb2
    from surgery.weights.initweights import INITIALISERS, MOMENTS

    layer = caffe_pb2.LayerParameter(name="p", type="Pooling")
    layer.pooling_param.pool = caffe_pb2.PoolingParameter.MAX
    layer.pooling_param.kernel_size = 3
    assert rule_for("Pooling").moment_of(layer)[0] == "max_pool"
    layer.pooling_param.pool = caffe_pb2.PoolingParameter.AVE
    assert rule_for("Pooling").moment_of(layer)[0] == "keep"
    for type_name in ("Convolution", "InnerProduct", "BatchNorm", "BN", "Scale", "PReLU",
                      "Deconvolution", "Bias", "Embed", "Normalize", "ConvolutionDepthwise"):
        rule = rule_for(type_name)
        layer = caffe_pb2.LayerParameter(name="x", type=type_name, bottom=["a"])
        names = rule.init_of(layer)
        assert names and all(n in INITIALISERS for n in names), type_name
        assert rule.moment_of(layer)[0] in MOMENTS, type_name
    source = (ROOT / "surgery" / "weights" / "initweights.py").read_text()
    for type_name in ("Convolution", "BatchNorm", "Pooling", "Eltwise", "ReLU", "Scale"):
        assert f'"{type_name}"' not in source


# ---------------------------------------------------------------- O(1) activations, measured

NETS = [
    ("models", "resnet152/deploy.prototxt"),
    ("models", "vgg16/deploy.prototxt"),
    ("models", "mobilenet-mini/deploy.prototxt"),
    ("corpus", "mobilenet/mobilenet_deploy.prototxt"),
]


@pytest.mark.parametrize("where,rel", NETS, ids=[r.split("/")[0] for _, r in NETS])
def test_every_activation_std_stays_within_0_1_and_10(tmp_path, where, rel):
    """The help's promise, measured in OpenCV DNN on a standard-normal input: the std of
    every blob stays in [0.1, 10]. Softmax outputs are left out: a probability vector over
    1000 classes has a std below 0.032 whatever the weights."""
    pytest.importorskip("cv2")
    from surgery.engines.engine import get_engine

    path = (ROOT / "models" if where == "models" else CORPUS) / rel
    if not path.exists():
        pytest.skip(f"{path} not available")
    net = load_prototxt(path)
    analysis = analyse(net)
    weights = tmp_path / "w.caffemodel"
    init_weights(net, weights, seed=0)
    probabilities = {t for n in analysis.graph.nodes if n.type == "Softmax" for t in n.tops}
    blobs = [t for n in analysis.graph.nodes for t in n.tops if t not in probabilities]
    blobs = list(dict.fromkeys(blobs))
    x = {b: np.random.default_rng(1).standard_normal(analysis.shapes[b]).astype(np.float32)
         for b in analysis.graph.inputs}
    out = get_engine("opencv").run(path, weights, x, blobs)
    stds = {b: float(np.std(out[b])) for b in blobs}
    bad = {b: round(s, 3) for b, s in stds.items() if not 0.1 <= s <= 10}
    assert not bad, bad
    assert len(stds) > 20
