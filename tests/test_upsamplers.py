"""FCN-style heads follow the output stride: Deconvolution upsamplers get the stride and the
bilinear kernel of their new factor (new weights through --weights-out, every other layer
copied byte for byte) and Crop offsets follow the grid, so every join and the final crop
to the image line up again. These layers are ADAPTED, not exact; what is checked:

- numbers, in a real engine: a net that is linear on its interior (convolutions, AVE
  pooling, bilinear upsampling, no ReLU) fed a linear ramp computes a linear ramp, and
  bilinear interpolation reproduces a linear function whatever the grid it samples. So
  the converted net, run with the rewritten weights, must equal the original on the
  interior of the image, and any misplaced offset, crop or kernel shows up as a shift
  of the ramp;
- weights: untouched layers are copied byte for byte; learned (non-bilinear) weights
  are refused, as is a conversion without --weights-out;
- the corpus: FCN-32s and FCN-8s go to output stride 16 and build in Caffe's shapes.
"""

import hashlib
import json
import re

import numpy as np
import pytest

from surgery.analysis.analyse import analyse
from surgery.cli import main
from surgery.errors import SurgeryError
from surgery.io.netfile import load_net
from surgery.transform.dilate import dilate
from surgery.weights.fillers import upsampling_kernel

from conftest import corpus_path
from surgery.io.caffemodel import read_caffemodel, write_caffemodel
from surgery.io.netfile import load_prototxt

from _caffe import caffe_build

SIZE = 96
MARGIN = 32     # output pixels closer to the border see padding

# Both mini nets start alike: the input, then a strided convolution (padded by `PAD`, as
# FCN pads its first layer) and a pooling, at output stride 4. A format template.
STEM = """
name: "NAME"
input: "data"
input_shape {{ dim: 1 dim: 1 dim: {size} dim: {size} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 pad: PAD }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param {{ pool: AVE kernel_size: 2 stride: 2 }} }}"""


def _mini(name, pad):
    return STEM.replace("NAME", name).replace("PAD", str(pad))


# An FCN-8s-like net at output stride 8: two skips, each lined up by a Crop and fused by
# an Eltwise, a final Deconvolution to the image and a Crop to the data's size.
NET = _mini("fcn-mini", 20) + """
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 }} }}
layer {{ name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param {{ pool: AVE kernel_size: 2 stride: 2 }} }}
layer {{ name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3"
  convolution_param {{ num_output: 4 kernel_size: 3 }} }}
layer {{ name: "score" type: "Convolution" bottom: "conv3" top: "score"
  convolution_param {{ num_output: {classes} kernel_size: 1 }} }}
layer {{ name: "upscore2" type: "Deconvolution" bottom: "score" top: "upscore2"
  param {{ lr_mult: 0 }}
  convolution_param {{ num_output: {classes} kernel_size: 4 stride: 2 group: {group}
    bias_term: false }} }}
layer {{ name: "score_pool1" type: "Convolution" bottom: "pool1" top: "score_pool1"
  convolution_param {{ num_output: {classes} kernel_size: 1 }} }}
layer {{ name: "score_pool1c" type: "Crop" bottom: "score_pool1" bottom: "upscore2"
  top: "score_pool1c" crop_param {{ axis: 2 offset: 1 }} }}
layer {{ name: "fuse" type: "Eltwise" bottom: "upscore2" bottom: "score_pool1c" top: "fuse" }}
layer {{ name: "upscore4" type: "Deconvolution" bottom: "fuse" top: "upscore4"
  param {{ lr_mult: 0 }}
  convolution_param {{ num_output: {classes} kernel_size: 8 stride: 4 group: {group}
    bias_term: false }} }}
layer {{ name: "out" type: "Crop" bottom: "upscore4" bottom: "data" top: "out"
  crop_param {{ axis: 2 offset: 18 }} }}
"""
# A Dilation-style net at output stride 4: a dilated layer after the last stride (nominal
# stride 8 there), scores upsampled to the image by a grouped, padded Deconvolution.
DILATION = _mini("dilation-mini", 1) + """
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 2 dilation: 2 }} }}
layer {{ name: "score" type: "Convolution" bottom: "conv2" top: "score"
  convolution_param {{ num_output: {classes} kernel_size: 1 }} }}
layer {{ name: "ctx_upsample" type: "Deconvolution" bottom: "score" top: "out"
  param {{ lr_mult: 0 }}
  convolution_param {{ num_output: {classes} kernel_size: 8 stride: 4 pad: 2 group: {group}
    bias_term: false }} }}
"""
CLASSES = 3
FCN_UPSAMPLERS = ("upscore2", "upscore4")
UPSAMPLERS = FCN_UPSAMPLERS + ("ctx_upsample",)
NETS = {"fcn8s-like": NET, "dilation-like": DILATION}


def _bilinear_weights(shape, diagonal):
    """Deconvolution weights that upsample each class onto itself: every slot bilinear
    (grouped), or only the (i, i) slots (FCN's one-group upscore)."""
    kernel = upsampling_kernel((shape[2] // 2,) * 2, shape[2:])
    mask = np.eye(shape[0], shape[1]) if diagonal else np.ones(shape[:2])
    return (mask[:, :, None, None] * kernel).astype(np.float32)


def make_fcn(folder, group, *, learned=False, template=NET):
    """(prototxt, caffemodel) of a mini net (the FCN one by default) with random
    convolutions and bilinear upsamplers."""
    text = template.format(size=SIZE, classes=CLASSES, group=group)
    proto = folder / "fcn.prototxt"
    proto.write_text(text)
    net = load_prototxt(proto)
    shapes = analyse(net).param_shapes
    rng = np.random.default_rng(3)
    layers = []
    for layer in net.layer:
        blobs = shapes.get(layer.name) or []
        if layer.name in UPSAMPLERS:
            arrays = [_bilinear_weights(blobs[0], diagonal=group == 1)]
            if learned:
                arrays[0] = arrays[0] + rng.normal(0, 0.1, arrays[0].shape).astype(np.float32)
        else:
            arrays = [rng.normal(0, 0.5, s).astype(np.float32) for s in blobs]
        if arrays:
            layers.append({"name": layer.name, "type": layer.type, "blobs": arrays})
    model = folder / "fcn.caffemodel"
    write_caffemodel(model, layers)
    return proto, model


def ramp():
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    return (0.3 * y - 0.2 * x + 1.0)[None, None]


@pytest.fixture(params=["caffe", "opencv"])
def engine(request):
    from surgery.engines.engine import get_engine

    if request.param == "caffe":
        values = caffe_build()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CAFFE_PYTHON", values["CAFFE_PYTHON"])
            patch.setenv("CAFFE_PYTHONPATH", values["CAFFE_PYTHONPATH"])
            patch.setenv("GLOG_minloglevel", "2")
            yield get_engine("caffe")
        return
    pytest.importorskip("cv2")
    yield get_engine("opencv")


RAMPS = [("fcn8s-like", 4), ("fcn8s-like", 2), ("dilation-like", 2), ("dilation-like", 8)]


@pytest.mark.parametrize("group", [CLASSES, 1], ids=["grouped", "fcn-diagonal"])
@pytest.mark.parametrize("net, target", RAMPS, ids=[f"{n}-os{t}" for n, t in RAMPS])
def test_upsampled_output_equals_the_original_on_a_linear_ramp(tmp_path, engine, group,
                                                               net, target, capsys):
    """Denser (the FCN at 4 and 2, the Dilation net at 2) and coarser (the Dilation net,
    its dilated layer exact at stride 8 and its upsampler taking the stride back)."""
    proto, model = make_fcn(tmp_path, group, template=NETS[net])
    out, weights = tmp_path / "conv.prototxt", tmp_path / "conv.caffemodel"
    assert main(["dilate", str(proto), "-s", str(target), "--pooling", "cover",
                 "--weights", str(model), "--weights-out", str(weights), "-o", str(out)]) == 0
    summary = capsys.readouterr().out
    assert f"output stride 4 -> {target}" in summary or f"output stride 8 -> {target}" in summary
    assert re.search(r"(upscore2|ctx_upsample) +Deconvolution +ADAPTED", summary)
    x = ramp()
    want, got = engine.run_many([(proto, model, {"data": x}, ["out"]),
                                 (out, weights, {"data": x}, ["out"])])
    want, got = want["out"], got["out"]
    # Both start at the image's first pixel; a coarser upsampler may run a few past the end.
    assert want.shape == (1, CLASSES, SIZE, SIZE) and got.shape[:2] == want.shape[:2]
    assert SIZE <= got.shape[2] <= SIZE + target and SIZE <= got.shape[3] <= SIZE + target
    got = got[:, :, :SIZE, :SIZE]
    inner = (slice(None), slice(None), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    scale = np.abs(want[inner]).max()
    assert scale > 1 and np.abs(got[inner] - want[inner]).max() <= 1e-4 * scale
    # The check can fail: the original's output shifted by one pixel is far from it.
    shifted = (slice(None), slice(None), slice(MARGIN + 1, 1 - MARGIN), slice(MARGIN, -MARGIN))
    assert np.abs(got[shifted] - want[inner]).max() > 1e-2 * scale


def test_untouched_layers_are_copied_byte_for_byte_and_the_new_kernels_are_bilinear(tmp_path):
    proto, model = make_fcn(tmp_path, CLASSES)
    out, weights = tmp_path / "dense.prototxt", tmp_path / "dense.caffemodel"
    assert main(["dilate", str(proto), "-s", "2", "--pooling", "cover", "--weights", str(model),
                 "--weights-out", str(weights), "-o", str(out)]) == 0
    before, after = read_caffemodel(model), read_caffemodel(weights)
    raw_a, raw_b = model.read_bytes(), weights.read_bytes()
    changed = set()
    for a, b in zip(before.layers, after.layers):
        assert a.name == b.name
        if raw_a[a.start:a.end] != raw_b[b.start:b.end]:
            changed.add(a.name)
    assert changed == set(FCN_UPSAMPLERS)
    net = analyse(load_prototxt(out))
    from surgery.io.caffemodel import read_blob
    for name in FCN_UPSAMPLERS:
        win = net.graph.node(name).rule.window(net.graph.node(name).layer)
        got = read_blob(after, name)
        assert got.shape == tuple(net.param_shapes[name][0])
        want = upsampling_kernel(tuple(win.stride), tuple(win.kernel))
        assert np.array_equal(got, np.broadcast_to(want, got.shape))


def test_learned_upsampling_weights_are_refused_and_nothing_is_written(tmp_path, capsys):
    proto, model = make_fcn(tmp_path, CLASSES, learned=True)
    out, weights = tmp_path / "dense.prototxt", tmp_path / "dense.caffemodel"
    assert main(["dilate", str(proto), "-s", "4", "--pooling", "cover", "--weights", str(model),
                 "--weights-out", str(weights), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "layer 'upscore2'" in err and "not the bilinear" in err and len(err.splitlines()) == 1
    assert not out.exists() and not weights.exists()


def test_new_kernels_without_weights_out_are_refused_naming_the_layer_and_the_flag(tmp_path,
                                                                                  capsys):
    proto, model = make_fcn(tmp_path, CLASSES)
    out = tmp_path / "dense.prototxt"
    assert main(["dilate", str(proto), "-s", "4", "--pooling", "cover", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "layer 'upscore2'" in err and "--weights-out" in err and not out.exists()
    assert main(["dilate", str(proto), "-s", "4", "--pooling", "cover", "-o", str(out),
                 "--weights-out", str(tmp_path / "w.caffemodel")]) == 2
    assert "--weights-out needs --weights" in capsys.readouterr().err
    # A dry run says what would change.
    assert main(["dilate", str(proto), "-s", "4", "--pooling", "cover", "--dry-run"]) == 0
    assert "new weights" in capsys.readouterr().out


def test_weights_out_without_new_kernels_is_a_byte_copy(tmp_path):
    proto, model = make_fcn(tmp_path, CLASSES)
    cut = tmp_path / "cut.prototxt"
    weights = tmp_path / "w.caffemodel"
    assert main(["dilate", str(proto), "-s", "4", "--pooling", "cover", "--cut-after", "score",
                 "--weights", str(model), "--weights-out", str(weights), "-o", str(cut)]) == 0
    assert hashlib.sha256(weights.read_bytes()).digest() == \
        hashlib.sha256(model.read_bytes()).digest()


FCN = ["fcn/voc-fcn32s_val.prototxt", "fcn/voc-fcn8s_deploy.prototxt",
       "fcn/voc-fcn32s_train.prototxt", "fcn/voc-fcn8s_train.prototxt"]


@pytest.mark.parametrize("name", FCN)
def test_corpus_fcn_nets_go_to_output_stride_16_with_their_joins_lined_up(name, capsys):
    path = corpus_path(name)
    shapes = {"data": (1, 3, 500, 500)}
    loaded = load_net(str(path))
    new, report = dilate(loaded.net, output_stride=16, pooling="cover", input_shapes=shapes,
                         unknowns=loaded.unknowns)
    assert max(report.stride_after) == 16 and report.resized
    adapted = {c.layer for c in report.changes if c.status == "ADAPTED"}
    assert set(report.resized) <= adapted
    for phase in ("TEST", "TRAIN"):
        try:
            before = analyse(loaded.net, input_shapes=shapes, phase=phase)
        except SurgeryError:
            continue
        after = analyse(new, input_shapes=shapes, phase=phase)
        assert after.warnings == [], after.warnings
        # The last Crop, to the image, has the data's size in both nets.
        crop = [n for n in after.graph.nodes if n.type == "Crop"][-1]
        assert after.shapes[crop.tops[0]][2:] == before.shapes[crop.tops[0]][2:] == (500, 500)


def test_zero_taps_at_the_same_stride_keep_any_weights(tmp_path):
    """An upsampler kept at its stride but shifted by zero taps keeps learned weights too:
    the new kernel is the old one with zeros around it."""
    from surgery.io.caffemodel import BlobReader, read_blob
    from surgery.layers import rule_for
    from surgery.pair import Pair

    proto, model = make_fcn(tmp_path, CLASSES, learned=True)
    net = load_prototxt(proto)
    old = next(layer for layer in net.layer if layer.name == "upscore4")
    rule = rule_for("Deconvolution")
    win = rule.window(old)
    new = rule.with_window(old, win._replace(kernel=Pair(12, 12)))
    summary = read_caffemodel(model)
    shape, pieces = rule.resized_weights(old, new, lambda: BlobReader(summary, "upscore4"))
    got = np.concatenate([p.reshape(-1) for p in pieces()]).reshape(shape)
    want = np.pad(read_blob(summary, "upscore4"), [(0, 0), (0, 0), (2, 2), (2, 2)])
    assert np.array_equal(got, want)
    # At another stride the learned weights have no meaning to keep.
    other = rule.with_window(old, win._replace(stride=Pair(2, 2), kernel=Pair(4, 4)))
    with pytest.raises(SurgeryError, match="not the bilinear"):
        rule.resized_weights(old, other, lambda: BlobReader(summary, "upscore4"))


def test_a_dilation_net_is_refused_past_what_its_dilations_give_back(tmp_path, capsys):
    proto, _ = make_fcn(tmp_path, CLASSES, template=DILATION)
    assert main(["dilate", str(proto), "-s", "16", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no exact coarsening goes that far" in err and err.count("\n") == 1
    assert err.rstrip().endswith("reachable output strides: exact: 4; approximate: 8; adapted: 2; "
                                 "approximate with --pooling cover: 1")


def test_verify_with_the_original_weights_compares_what_comes_before_the_upsamplers(tmp_path):
    pytest.importorskip("cv2")
    from surgery.engines.verify import verify

    proto, model = make_fcn(tmp_path, CLASSES)
    out, weights = tmp_path / "dense.prototxt", tmp_path / "dense.caffemodel"
    assert main(["dilate", str(proto), "-s", "2", "--pooling", "cover", "--weights", str(model),
                 "--weights-out", str(weights), "-o", str(out)]) == 0    # new kernel sizes
    report = verify(proto, out, model)
    assert report.passed and report.size_bound_heads["converted"] == ["upscore2", "upscore4"]
    assert {r.blob for r in report.blobs} and all(r.status == "ok" for r in report.blobs)
    assert "regridded upsampler" in report.format_text()


def test_init_weights_fills_a_fixed_upsampler_with_its_bilinear_kernel(tmp_path):
    """Issue 25: a Deconvolution never learned (lr_mult 0) and without a filler holds the
    bilinear kernel in every published model where input channel i feeds output channel
    i: FCN's square layout on the diagonal, one channel per group in every slot."""
    from surgery.io.caffemodel import read_blob, read_caffemodel

    for folder, options in (("fcn", {}), ("dil", {"template": DILATION})):
        (tmp_path / folder).mkdir()
        proto, _ = make_fcn(tmp_path / folder, CLASSES, **options)
        out = tmp_path / folder / "init.caffemodel"
        assert main(["init-weights", str(proto), "-o", str(out)]) == 0
        summary = read_caffemodel(str(out))
        ups = [l for l in load_net(proto).net.layer if l.type == "Deconvolution"]
        assert ups
        for layer in ups:
            weights = read_blob(summary, layer.name, 0)
            stride, group = layer.convolution_param.stride[0], layer.convolution_param.group
            kernel = upsampling_kernel((stride, stride), weights.shape[2:])
            per_group = weights.shape[0] // group       # input channels per group
            for i in range(weights.shape[0]):
                for j in range(weights.shape[1]):
                    fed = (i // per_group) * weights.shape[1] + j == i   # output channel i
                    assert np.array_equal(weights[i, j], kernel if fed else 0 * kernel), \
                        (layer.name, i, j)


def test_fcn8s_round_trips_from_init_weights_byte_for_byte(tmp_path):
    """Issue 25: `dilate -s 16` then `-s 32`, with the weights, gives back the original
    text and weights byte for byte (a dilation back at 1 is dropped, not left as a line)."""
    path = corpus_path("fcn/voc-fcn8s_deploy.prototxt")
    w0, w1, w2 = (tmp_path / f"w{i}.caffemodel" for i in range(3))
    p1, p2 = tmp_path / "os16.prototxt", tmp_path / "os32.prototxt"
    assert main(["init-weights", str(path), "-o", str(w0)]) == 0
    assert main(["dilate", str(path), "-s", "16", "--weights", str(w0), "--weights-out", str(w1),
                 "-o", str(p1)]) == 0
    assert main(["dilate", str(p1), "-s", "32", "--weights", str(w1), "--weights-out", str(w2),
                 "-o", str(p2)]) == 0
    assert p2.read_bytes() == path.read_bytes() and w2.read_bytes() == w0.read_bytes()


def test_verify_help_and_verdict_agree_on_blobs_after_an_adapted_upsampler(tmp_path, capsys):
    """Issue 25.6: the help says a blob computed from an ADAPTED or APPROXIMATE layer is
    approximate and fails only under --strict; `--blob out` (after the regridded
    upsamplers) must be reported that way, while the exact blob is still held to --tol."""
    pytest.importorskip("cv2")
    from surgery.commands import verify as command

    assert "fail only under --strict" in " ".join(command.__doc__.split())
    proto, model = make_fcn(tmp_path, CLASSES)
    out, weights = tmp_path / "dense.prototxt", tmp_path / "dense.caffemodel"
    assert main(["dilate", str(proto), "-s", "4", "--pooling", "cover", "--weights", str(model),
                 "--weights-out", str(weights), "-o", str(out)]) == 0
    argv = ["verify", str(proto), str(out), "--weights", str(model), "--weights-converted",
            str(weights), "--blob", "out", "--engine", "opencv", "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    blobs = {b["blob"]: b for b in json.loads(capsys.readouterr().out)["blobs"]}
    assert blobs["out"]["status"] == "approximate" and not blobs["out"]["claimed"]
    assert blobs["out"]["rel_error"] > 1e-2     # random weights: really not equal
    exact = [b for b in blobs.values() if b["claimed"]]
    assert exact and all(b["status"] == "ok" for b in exact)
    assert main(argv + ["--strict"]) == 1
