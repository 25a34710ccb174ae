"""The fork layers inside real BVLC Caffe (marked `caffe`; tests/_caffe.py).

Each net holds one fork layer, is prepared for Caffe (a Python layer of
surgery/engines/pylayers/forklayers.py, or the exact BVLC form with its weights made by
the weight plan) and runs in the pycaffe child. The values are checked against an
independent computation: OpenCV DNN's own implementation of the layer where it has one
and honours the case, else numbers worked out from the fork's formula here.
"""

import numpy as np
import pytest

from surgery.analysis.analyse import analyse
from surgery.engines.engine import get_engine
from surgery.engines.prepare import prepare
from surgery.io import caffemodel as cm
from surgery.io.prototxt import parse_prototxt
from surgery.transform.bvlc import form_weights
from surgery.weights.writer import write as write_weights

from _caffe import build  # noqa: F401 (a fixture)

pytestmark = pytest.mark.caffe
F32 = np.float32


@pytest.fixture(scope="module")
def caffe(build):
    return get_engine("caffe")


def _inputs(shapes):
    return "".join(f'layer {{ name: "{n}" type: "Input" top: "{n}" input_param {{ shape {{ '
                   + " ".join(f"dim: {d}" for d in s) + " } } }\n" for n, s in shapes.items())


def _run(engine, tmp_path, text, feeds, blobs, blobs_of=None):
    """Run `text` prepared for the engine's kind, with `blobs_of` ({layer: [arrays]}) as
    its weights (made for the prepared layers by the weight plan)."""
    net = parse_prototxt(_inputs({k: v.shape for k, v in feeds.items()}) + text)
    kind = engine.name
    p = prepare(analyse(net), kind)
    source = tmp_path / f"{kind}-source.caffemodel"
    cm.write_caffemodel(source, [dict(name=k, type="?", blobs=v) for k, v in (blobs_of or {}).items()],
                        name="weights")
    summary = cm.read_caffemodel(source)
    plan = form_weights(p.forms, summary, retype=False)
    weights = tmp_path / f"{kind}.caffemodel"
    write_weights(plan, weights, source=summary)
    return engine.run(p.net, weights, feeds, blobs), p


def _opencv():
    pytest.importorskip("cv2")
    return get_engine("opencv")


@pytest.mark.parametrize("params, size", [
    ("height: 60 width: 60", (6, 6)), ("zoom_factor: 8", (9, 7)),
    ("height: 5 width: 4", (17, 13))])
def test_interp_in_caffe_is_opencvs_interp(caffe, tmp_path, params, size):
    x = np.random.default_rng(0).standard_normal((1, 3) + size).astype(F32)
    text = f'layer {{ name: "r" type: "Interp" bottom: "x" top: "r" interp_param {{ {params} }} }}\n'
    ours, p = _run(caffe, tmp_path, text, {"x": x}, ["r"])
    assert p.net.layer[1].type == "Python"
    theirs, _ = _run(_opencv(), tmp_path, text, {"x": x}, ["r"])
    np.testing.assert_allclose(ours["r"], theirs["r"], rtol=0, atol=4e-7 * np.abs(x).max())


def test_interp_in_caffe_by_hand_with_a_crop_and_a_second_bottom(caffe, tmp_path):
    """zoom 2 of [[1, 2], [3, 4]]: [[1, 1.5, 2], [2, 2.5, 3], [3, 3.5, 4]]; the same 2x2
    cut out of a 4x4 by pad_beg = pad_end = -1; and a resize to a second bottom's size."""
    x = np.array([[1, 2], [3, 4]], F32).reshape(1, 1, 2, 2)
    want = np.array([[1, 1.5, 2], [2, 2.5, 3], [3, 3.5, 4]], F32)
    big = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)], constant_values=9)
    text = ('layer { name: "z" type: "Interp" bottom: "x" top: "z" interp_param { zoom_factor: 2 } }\n'
            'layer { name: "c" type: "Interp" bottom: "big" top: "c" '
            'interp_param { zoom_factor: 2 pad_beg: -1 pad_end: -1 } }\n'
            'layer { name: "s" type: "Interp" bottom: "x" bottom: "big" top: "s" }\n')
    out, _ = _run(caffe, tmp_path, text, {"x": x, "big": big}, ["z", "c", "s"])
    np.testing.assert_array_equal(out["z"][0, 0], want)
    np.testing.assert_array_equal(out["c"][0, 0], want)
    assert out["s"].shape == (1, 1, 4, 4) and out["s"][0, 0, 3, 3] == 4


def test_unpooling_in_caffe_puts_each_max_back(caffe, tmp_path):
    """BVLC's MAX pooling records where each maximum was; SegNet's Upsample writes it back
    there, zeros elsewhere: distinct values make that the window maxima in place."""
    rng = np.random.default_rng(1)
    x = rng.permutation(2 * 3 * 8 * 8).astype(F32).reshape(2, 3, 8, 8)
    text = ('layer { name: "pool" type: "Pooling" bottom: "x" top: "p" top: "mask" '
            'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
            'layer { name: "up" type: "Upsample" bottom: "p" bottom: "mask" top: "up" '
            'upsample_param { scale: 2 } }\n')
    out, _ = _run(caffe, tmp_path, text, {"x": x}, ["up"])
    windows = x.reshape(2, 3, 4, 2, 4, 2)
    is_max = windows == windows.max(axis=(3, 5), keepdims=True)
    want = np.where(is_max, windows, 0).reshape(x.shape)
    np.testing.assert_array_equal(out["up"], want)


def test_axpy_shuffle_permute_normalize_in_caffe(caffe, tmp_path):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 6, 1, 1)).astype(F32)
    x, y = (rng.standard_normal((2, 6, 3, 4)).astype(F32) for _ in range(2))
    scale = np.arange(1, 7, dtype=F32)
    text = ('layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "axpy" }\n'
            'layer { name: "shuffle" type: "ShuffleChannel" bottom: "x" top: "shuffle" '
            'shuffle_channel_param { group: 3 } }\n'
            'layer { name: "perm" type: "Permute" bottom: "x" top: "perm" '
            'permute_param { order: 0 order: 2 order: 3 order: 1 } }\n'
            'layer { name: "norm" type: "Normalize" bottom: "x" top: "norm" '
            'norm_param { across_spatial: false channel_shared: false } }\n')
    feeds = {"a": a, "x": x, "y": y}
    out, p = _run(caffe, tmp_path, text, feeds, ["axpy", "shuffle", "perm", "norm"],
                  {"norm": [scale]})
    assert all(layer.type in ("Input", "Python") for layer in p.net.layer)
    np.testing.assert_allclose(out["axpy"], a * x + y, rtol=1e-6, atol=1e-6)
    natives = text[text.index('layer { name: "shuffle"'):]      # OpenCV has these three
    cv, _ = _run(_opencv(), tmp_path, natives, {"x": x}, ["shuffle", "perm", "norm"],
                 {"norm": [scale]})
    np.testing.assert_array_equal(out["shuffle"], cv["shuffle"])
    np.testing.assert_array_equal(out["perm"], cv["perm"])
    np.testing.assert_allclose(out["norm"], cv["norm"], rtol=1e-5)
    assert abs(out["norm"][0, 5, 0, 0] / out["norm"][0, 0, 0, 0]
               - 6 * x[0, 5, 0, 0] / x[0, 0, 0, 0]) < 1e-4


@pytest.mark.parametrize("a_shape", [(2, 6, 1, 1), (2, 6)])
def test_axpys_bvlc_form_computes_it_in_caffe(caffe, tmp_path, a_shape):
    """What `bvlc` writes for SENet's Axpy (Reshape + two-bottom Scale + Eltwise, all BVLC
    layers) computes a*x + y in Caffe, for weights (N, C, 1, 1) and (N, C)."""
    from surgery.io.prototxt import format_prototxt
    from surgery.layers import rule_for

    rng = np.random.default_rng(4)
    a = rng.standard_normal(a_shape).astype(F32)
    x, y = (rng.standard_normal((2, 6, 3, 4)).astype(F32) for _ in range(2))
    axpy = parse_prototxt('layer { name: "se" type: "Axpy" bottom: "a" bottom: "x" '
                          'bottom: "y" top: "out" }').layer[0]
    net = parse_prototxt('name: "form"')
    net.layer.extend(rule_for("Axpy").bvlc_form(axpy))
    assert [layer.type for layer in net.layer] == ["Reshape", "Scale", "Eltwise"]
    out, p = _run(caffe, tmp_path, format_prototxt(net), {"a": a, "x": x, "y": y}, ["out"])
    assert "Python" not in [layer.type for layer in p.net.layer]
    want = a.reshape(2, 6, 1, 1) * x + y
    np.testing.assert_allclose(out["out"], want, rtol=1e-6, atol=1e-6)


def test_pspnet_bn_as_batchnorm_and_scale_in_caffe(caffe, tmp_path):
    """The fork at TEST: ((x - mean) * (var + eps)^-0.5) * slope + bias from its blobs
    slope, bias, mean, variance (1, C, 1, 1); Caffe runs BatchNorm + Scale made from them."""
    rng = np.random.default_rng(3)
    blobs = [rng.uniform(0.5, 2, (1, 4, 1, 1)), rng.standard_normal((1, 4, 1, 1)),
             rng.standard_normal((1, 4, 1, 1)), rng.uniform(0.5, 2, (1, 4, 1, 1))]
    blobs = [b.astype(F32) for b in blobs]
    x = rng.standard_normal((2, 4, 5, 5)).astype(F32)
    text = ('layer { name: "bn" type: "BN" bottom: "x" top: "y" '
            'bn_param { frozen: true eps: 0.0001 } }\n')
    out, p = _run(caffe, tmp_path, text, {"x": x}, ["y"], {"bn": blobs})
    assert [layer.type for layer in p.net.layer] == ["Input", "BatchNorm", "Scale"]
    slope, bias, mean, var = (b.astype(np.float64) for b in blobs)
    want = (x - mean) * (var + np.float64(F32(1e-4))) ** -0.5 * slope + bias
    np.testing.assert_allclose(out["y"], want, rtol=1e-5, atol=1e-6)


def test_segnet_bn_in_caffe(caffe, tmp_path):
    """INFERENCE: x * scale + shift, bit for bit (a BVLC Scale with a bias multiplies, then
    adds, as the fork does). LEARN: the batch's own statistics (a Python layer)."""
    rng = np.random.default_rng(4)
    scale = rng.uniform(0.5, 2, (1, 3, 1, 1)).astype(F32)
    shift = rng.standard_normal((1, 3, 1, 1)).astype(F32)
    x = rng.standard_normal((2, 3, 4, 4)).astype(F32)
    text = ('layer { name: "inf" type: "BN" bottom: "x" top: "inf" bn_param { bn_mode: INFERENCE } }\n'
            'layer { name: "learn" type: "BN" bottom: "x" top: "learn" bn_param { bn_mode: LEARN } }\n')
    out, p = _run(caffe, tmp_path, text, {"x": x}, ["inf", "learn"],
                  {"inf": [scale, shift], "learn": [scale, shift]})
    assert [layer.type for layer in p.net.layer] == ["Input", "Scale", "Python"]
    np.testing.assert_array_equal(out["inf"], x * scale + shift)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3), keepdims=True)
    var = (x64 ** 2).mean(axis=(0, 2, 3), keepdims=True) - mean ** 2
    want = (x64 - mean) / np.sqrt(var + 1e-9) * scale + shift
    np.testing.assert_allclose(out["learn"], want, rtol=1e-4, atol=1e-5)
