"""`segment`: from a backbone to train and deploy segmentation nets (issue 16).

Geometry tests run on the shipped models/resnet101 (prototxt only, cheap); numeric ones on
a narrow ResNet-50 and VGG-16 at small crops, with weights from init-weights. Real Caffe
runs in a child process under its own interpreter (tests/_caffe.py); those tests are
marked `caffe` and skip without a build.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from surgery.analysis.analyse import analyse
from surgery.analysis.check import compare, merge, whole_shapes
from surgery.cli import main
from surgery.io.caffemodel import read_caffemodel
from surgery.io.prototxt import save_prototxt
from surgery.io.netfile import load_prototxt
from surgery.layers import rule_for
from surgery.models import build
from surgery.transform.segment import segment
from surgery.engines.verify import verify

from _caffe import caffe_build
from _corpus import CORPUS

ROOT = Path(__file__).resolve().parents[1]
RESNET101 = ROOT / "models" / "resnet101" / "deploy.prototxt"
# DeepLab v2's published ResNet-101 single-scale nets, when the corpus holds them.
DEEPLAB_V2_RESNET = ["deeplab_v2/resnet101_train.prototxt", "deeplab_v2/resnet101_test.prototxt"]


def _seg(path=RESNET101, **kw):
    return segment(load_prototxt(path), **kw)


def _windows(net, names=None):
    """(type, kernel, stride, pad, dilation, num_output) of every layer with a window or
    num_output, in order; names aside."""
    rows = []
    for layer in net.layer:
        if names is not None and layer.name not in names:
            continue
        rule = rule_for(layer.type)
        window = rule.window(layer) if rule.reads_window(layer) else None
        num = layer.convolution_param.num_output if layer.HasField("convolution_param") else None
        if window is None and num is None:
            continue
        rows.append((layer.type, tuple(window) if window else None, num))
    return rows


def _layer(net, name):
    return next(layer for layer in net.layer if layer.name == name)


# ---------------------------------------------------------------------------
# Geometry on models/resnet101 (prototxt only)
# ---------------------------------------------------------------------------

def test_aspp_os8_is_deeplab_v2_layout():
    """ASPP at OS 8: four 3x3 convs fc1_c0..c3 to 21 classes with dilation = pad = 6, 12,
    18, 24, summed into fc1; the backbone is dilate's exact OS-8 rewrite (res4 dilation 2,
    res5 4) with the classifier cut and pool1 padded as DeepLab's ResNet-101 has it; the
    label is shrunk by 8 with no crop."""
    result = _seg(head="aspp", classes=21, output_stride=8)
    deploy, train = result.deploy, result.train
    aspp = [layer for layer in deploy.layer if layer.name.startswith("fc1_c")]
    assert [l.name for l in aspp] == ["fc1_c0", "fc1_c1", "fc1_c2", "fc1_c3"]
    assert [(tuple(l.convolution_param.kernel_size), tuple(l.convolution_param.dilation),
             tuple(l.convolution_param.pad), l.convolution_param.num_output) for l in aspp] == \
        [((3,), (r,), (r,), 21) for r in (6, 12, 18, 24)]
    assert all(l.bottom == ["res5c"] for l in aspp)
    score = _layer(deploy, "fc1")
    assert score.type == "Eltwise" and list(score.bottom) == [l.name for l in aspp]
    assert score.eltwise_param.operation == score.eltwise_param.SUM
    assert tuple(_layer(deploy, "res4b22_branch2b").convolution_param.dilation) == (2,)
    assert tuple(_layer(deploy, "res5c_branch2b").convolution_param.dilation) == (4,)
    assert tuple(_layer(deploy, "res5a_branch2a").convolution_param.stride) in ((), (1,))
    # The body is exactly what `dilate -s 8 --head cut` made for models/ (deploy-os8), but
    # for pool1's pad (DeepLab's 1, MSRA's 0), which centres score pixel j on image 8j.
    os8 = load_prototxt(ROOT / "models" / "resnet101" / "deploy-os8.prototxt")
    body = {l.name for l in os8.layer if l.type not in ("Input",)} - {"pool1"}
    assert _windows(deploy, body) == _windows(os8, body)
    assert [l.name for l in deploy.layer if l.name in body] == [l.name for l in os8.layer
                                                               if l.name in body]
    assert _layer(deploy, "pool1").pooling_param.pad == 1
    assert not {"pool5", "fc1000", "prob"} & {l.name for l in train.layer}
    shrink = _layer(train, "label_shrink")
    assert shrink.type == "Interp" and shrink.interp_param.shrink_factor == 8
    assert not shrink.interp_param.pad_beg and not shrink.interp_param.pad_end
    loss = _layer(train, "loss")
    assert loss.type == "SoftmaxWithLoss" and loss.loss_param.ignore_label == 255
    assert list(loss.bottom) == ["fc1", "label_shrink"]
    for layer in aspp:
        cp = layer.convolution_param
        assert (cp.weight_filler.type, cp.weight_filler.std) == ("gaussian", pytest.approx(0.01))
        assert [p.lr_mult for p in layer.param] == [10, 20]
        assert [p.name for p in layer.param] == [f"{layer.name}_w", f"{layer.name}_b"]


def test_backbone_batchnorm_is_frozen_unless_train_bn():
    """DeepLab freezes the backbone's BatchNorm (small batches): use_global_stats and lr_mult
    0 on every BatchNorm and Scale blob of the trunk; --train-bn learns them again (batch
    statistics in TRAIN, Scale at the base rate). The head's BatchNorm stays trainable, and
    the deploy net is frozen either way."""
    msra = load_prototxt(RESNET101)
    kinds = {l.name: l.type for l in msra.layer}
    norms = [n for n, t in kinds.items() if t in ("BatchNorm", "Scale")]
    assert len(norms) == 2 * 104
    for train_bn in (False, True):
        result = segment(msra, head="deeplabv3", classes=21, train_bn=train_bn)
        for net, frozen in ((result.train, not train_bn), (result.deploy, True)):
            for name in norms:
                layer = _layer(net, name)
                want = len(layer.param) == (3 if layer.type == "BatchNorm" else 2)
                assert want, name
                lr = 0 if frozen or layer.type == "BatchNorm" else 1
                assert all((p.lr_mult, p.decay_mult) == (lr, 0) for p in layer.param), name
                if layer.type == "BatchNorm":
                    assert layer.batch_norm_param.use_global_stats == frozen, name
            head_bn = _layer(net, "aspp_c1_bn")
            assert not head_bn.batch_norm_param.HasField("use_global_stats")
            assert [p.lr_mult for p in _layer(net, "aspp_c1_scale").param] == [10, 10]


@pytest.mark.parametrize("rel", DEEPLAB_V2_RESNET)
def test_aspp_matches_published_deeplab_v2_resnet101(rel):
    """Layer by layer (names aside, multi-scale branches skipped): types, kernels, strides,
    pads, dilations and num_outputs of DeepLab v2's single-scale ResNet-101 nets."""
    path = CORPUS / rel
    if not path.exists():
        pytest.skip(f"corpus file {rel} not available")
    published = load_prototxt(path)
    single = [l for l in published.layer
              if not any("res075" in b or "res05" in b for b in list(l.bottom) + list(l.top))]
    ours = _seg(head="aspp", classes=21, output_stride=8)
    mine = ours.train if "train" in rel else ours.deploy
    pub = type(published)()
    pub.layer.extend(single)
    assert _windows(mine) == _windows(pub)


def test_train_tail_is_deeplab_v2s():
    """Data layer, label shrink and loss as DeepLab v2's published train net has them
    (its VGG-16 ASPP net in the corpus: ImageSegData with crop 321, mirror and DeepLab's
    mean values, label_type PIXEL, shrink_factor 8, SoftmaxWithLoss ignoring 255)."""
    path = CORPUS / "deeplab_v2" / "vgg16_train.prototxt"
    if not path.exists():
        pytest.skip("corpus DeepLab v2 train net not available")
    from surgery.io.netfile import load_net
    published = load_net(path).net
    ours = _seg(head="aspp", classes=21, output_stride=8).train
    for name in ("data", "label_shrink", "loss"):
        theirs, mine = _layer(published, name), _layer(ours, name)
        assert mine.type == theirs.type, name
    t, m = _layer(published, "data"), _layer(ours, "data")
    assert len(m.top) == len(t.top)           # data, label, data_dim
    assert m.transform_param == t.transform_param
    for field in ("batch_size", "shuffle", "label_type"):
        assert getattr(m.image_data_param, field) == getattr(t.image_data_param, field)
    assert _layer(ours, "label_shrink").interp_param.shrink_factor == \
        _layer(published, "label_shrink").interp_param.shrink_factor
    assert _layer(ours, "loss").loss_param.ignore_label == \
        _layer(published, "loss").loss_param.ignore_label


def test_aspp_os16_rates_and_label_shrink():
    result = _seg(head="aspp", classes=21, output_stride=16)
    rates = [tuple(l.convolution_param.dilation)[0] for l in result.deploy.layer
             if l.name.startswith("fc1_c")]
    assert rates == [3, 6, 9, 12]
    assert _layer(result.train, "label_shrink").interp_param.shrink_factor == 16
    assert _layer(result.deploy, "upscore").interp_param.zoom_factor == 16
    # Each branch keeps its field of view in image pixels: the same RFs as at OS 8.
    os8 = _seg(head="aspp", classes=21, output_stride=8)
    assert [rf for _, _, rf in result.report.branches] == [rf for _, _, rf in os8.report.branches]
    # --rates overrides, as dilations at the chosen stride.
    custom = _seg(head="aspp", classes=21, output_stride=16, rates=[2, 4])
    assert [tuple(l.convolution_param.dilation)[0] for l in custom.deploy.layer
            if l.name.startswith("fc1_c")] == [2, 4]
    # The names hold at any stride: the OS-16 net's weights load into the OS-8 net.
    assert [l.name for l in custom.deploy.layer if l.name.startswith("fc1")] == \
        ["fc1_c0", "fc1_c1", "fc1"]


def test_label_and_score_sizes_agree_from_the_registry():
    """The label shrink's crops come from the geometry; the registry then says the label
    equals the score the loss reads, and label sample j lands on the centre of score pixel
    j. At 320 the last score pixel is centred past the image (pool1's CEIL window): it is
    cropped from the loss. With --upsample deconv the grid keeps MSRA's centre 2."""
    for stride, crop, upsample in ((8, 321, "interp"), (16, 321, "interp"),
                                   (8, 320, "interp"), (8, 513, "interp"), (8, 97, "deconv")):
        result = _seg(head="aspp", classes=21, output_stride=stride, crop=crop,
                      upsample=upsample, data="input")
        a = analyse(result.train)
        score, label = _layer(result.train, "loss").bottom
        assert a.shapes[score][2:] == a.shapes[label][2:]
        if upsample == "deconv":
            assert label == "label" and a.shapes[score][2:] == (crop, crop)
            assert a.geometry["fc1"].offset[0] == 2
            continue
        assert score == ("fc1_crop" if crop == 320 else "fc1")
        ip = _layer(result.train, "label_shrink").interp_param
        centre = a.geometry["fc1"].offset[0]
        eff = crop + ip.pad_beg + ip.pad_end
        assert centre == 0 and -ip.pad_beg == centre      # sample 0 on score pixel 0's centre
        assert eff - 1 == stride * (a.shapes[label][2] - 1)   # sample j at centre + stride*j


def test_psp_bins_on_the_60x60_map():
    """PSPNet's 473 nets pool the 60x60 map with kernels = strides 60, 30, 20, 10. With
    pool1 padded (the centred grid) MSRA's ResNet-101 has that map at 473 too; at 465 the
    map is 59x59, so the tool refuses it and names crops that give 60."""
    with pytest.raises(Exception) as info:
        _seg(head="psp", classes=21, crop=465)
    assert "59x59" in str(info.value) and "map 60x60" in str(info.value)
    result = _seg(head="psp", classes=21, crop=473)
    a = analyse(result.deploy)
    assert a.shapes["res5c"][2:] == (60, 60)
    pools = [l for l in result.deploy.layer if l.type == "Pooling" and l.name.startswith("psp")]
    assert [(l.pooling_param.kernel_size, l.pooling_param.stride) for l in pools] == \
        [(60, 60), (30, 30), (20, 20), (10, 10)]
    assert [a.shapes[l.top[0]][2:] for l in pools] == [(1, 1), (2, 2), (3, 3), (6, 6)]
    assert all(l.pooling_param.pool == l.pooling_param.AVE for l in pools)
    assert a.shapes["psp_concat"][1] == 2048 + 4 * 512


def test_psp_head_matches_published_pspnet_473():
    """The head after the trunk, as PSPNet's published 473 net has it: per bin a pool,
    a 1x1 conv to 512 and an Interp back; Concat; 3x3 conv 512; a 1x1 classifier and a
    zoom-8 Interp (their BN layers are the fork's `BN`, ours BatchNorm + Scale)."""
    path = CORPUS / "pspnet" / "pspnet101_VOC2012_473.prototxt"
    if not path.exists():
        pytest.skip("corpus PSPNet file not available")
    published = load_prototxt(path)
    start = next(i for i, l in enumerate(published.layer) if l.name == "conv5_3_pool1")
    theirs = [l for l in published.layer[start:] if l.type in ("Pooling", "Convolution", "Concat",
                                                               "Interp")]
    result = _seg(head="psp", classes=21, crop=473)
    mine = [l for l in result.deploy.layer if l.name.startswith(("psp", "score", "upscore"))
            and l.type in ("Pooling", "Convolution", "Concat", "Interp")]

    def row(layer):
        rule = rule_for(layer.type)
        w = rule.window(layer) if rule.reads_window(layer) else None
        num = layer.convolution_param.num_output if layer.type == "Convolution" else None
        return layer.type, tuple(w) if w else None, num, \
            (layer.interp_param.height, layer.interp_param.zoom_factor) \
            if layer.type == "Interp" else None

    assert [row(l) for l in mine] == [row(l) for l in theirs]


def test_inspect_prints_no_warning(tmp_path, capsys):
    for kw in (["--head", "aspp"], ["--head", "psp"], ["--head", "deeplabv3plus"],
               ["--head", "aspp", "--scales", "1,0.75,0.5"],
               ["--head", "aspp", "--data", "input", "--upsample", "deconv", "--crop", "97"]):
        train, deploy = tmp_path / "train.prototxt", tmp_path / "deploy.prototxt"
        assert main(["segment", str(RESNET101), *kw, "--classes", "21", "-o", str(train),
                     "--deploy", str(deploy)]) == 0
        capsys.readouterr()
        for path in (train, deploy):
            assert main(["inspect", str(path)]) == 0
            err = capsys.readouterr().err
            assert "warning" not in err, err


def test_summary_names_branch_fields_of_view(tmp_path, capsys):
    out = tmp_path / "t.prototxt"
    assert main(["segment", str(RESNET101), "--head", "aspp", "--classes", "21",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    # res5c's RF is 1027 at OS 8 (NOTES); a rate-r 3x3 adds 2*r*8.
    for rate in (6, 12, 18, 24):
        assert f"rate {rate}" in text and str(1027 + 2 * rate * 8) in text


@pytest.mark.parametrize("argv", [
    ["--classes", "0"], ["--classes", "21", "--crop", "0"], ["--classes", "21", "--rates", "6,,12"],
    ["--classes", "21", "--head", "psp", "--crop", "465"], ["--classes", "21", "--bins", "1,2"],
    ["--classes", "21", "--upsample", "deconv"], ["--classes", "21", "--ignore-label", "x"],
    ["--classes", "21", "--output-stride", "4", "--rates", "3", "--head", "psp"],
])
def test_bad_options_exit_2_nothing_written(tmp_path, capsys, argv):
    out = tmp_path / "t.prototxt"
    head = [] if "--head" in argv else ["--head", "aspp"]
    assert main(["segment", str(RESNET101), *head, *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


# ---------------------------------------------------------------------------
# Weights and numerics on small nets
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A narrow ResNet-50 declared at 97 (its classifier fits there) and a narrow VGG-16,
    with weights from init-weights."""
    folder = tmp_path_factory.mktemp("segment")
    nets = {"resnet": build("resnet50", width=0.125, input_size=97),
            "vgg": build("vgg16", width=0.0625)}
    paths = {}
    for name, net in nets.items():
        proto, model = folder / f"{name}.prototxt", folder / f"{name}.caffemodel"
        save_prototxt(net, proto)
        assert main(["init-weights", str(proto), "-o", str(model)]) == 0
        paths[name] = (proto, model)
    return folder, paths


def _run_segment(folder, proto, model, tag, *extra):
    train, deploy = folder / f"{tag}_train.prototxt", folder / f"{tag}_deploy.prototxt"
    weights = folder / f"{tag}.caffemodel"
    assert main(["segment", str(proto), *extra, "--weights", str(model),
                 "--weights-out", str(weights), "-o", str(train), "--deploy", str(deploy)]) == 0
    return train, deploy, weights


CASES = {
    "aspp-deconv": ("resnet", ["--head", "aspp", "--classes", "5", "--crop", "97",
                               "--data", "input", "--upsample", "deconv"]),
    "psp-input": ("resnet", ["--head", "psp", "--classes", "5", "--crop", "89",
                             "--data", "input"]),
    "aspp-imageseg": ("resnet", ["--head", "aspp", "--classes", "5", "--crop", "97"]),
    "largefov": ("vgg", ["--head", "largefov", "--classes", "5", "--crop", "65",
                         "--data", "input"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_weights_out_pass_check_on_both_nets(small, case, capsys):
    folder, paths = small
    which, argv = CASES[case]
    proto, model = paths[which]
    capsys.readouterr()
    train, deploy, weights = _run_segment(folder, proto, model, case, *argv)
    text = capsys.readouterr().out
    summary = read_caffemodel(weights)
    backbone = read_caffemodel(model)
    for net in (load_prototxt(train), load_prototxt(deploy)):
        report = merge([compare(whole_shapes(analyse(net).param_shapes), summary)])
        assert report.ok, [r for r in report.layers if r.status not in ("ok", "unused weights")]
    # Every new layer is listed, and the backbone's layers are byte for byte the same.
    new = [l.name for l in summary.layers if backbone.find(l.name) is None]
    assert new and all(f"  {name} (" in text for name in new)
    raw_in, raw_out = Path(model).read_bytes(), Path(weights).read_bytes()
    for layer in backbone.layers:
        if not any(c in layer.name for c in ("fc6", "fc7", "fc8")):   # fcn rebuilds these
            got = summary.find(layer.name)
            assert raw_out[got.start:got.end] == raw_in[layer.start:layer.end]


def test_new_layer_values_follow_the_fillers(small):
    folder, paths = small
    proto, model = paths["resnet"]
    _, _, weights = _run_segment(folder, proto, model, "fillers", "--head", "psp",
                                 "--classes", "5", "--crop", "97", "--data", "input",
                                 "--upsample", "deconv")
    from surgery.io.caffemodel import read_blob
    score = read_blob(str(weights), "score", 0)
    assert abs(float(score.std()) - 0.01) < 0.002 and not read_blob(str(weights), "score", 1).any()
    conv = read_blob(str(weights), "psp_conv", 0)       # MSRA: std sqrt(2 / fan_in)
    fan_in = conv[0].size
    assert abs(float(conv.std()) - (2.0 / fan_in) ** 0.5) < 0.05 * (2.0 / fan_in) ** 0.5
    mean, var, factor = (read_blob(str(weights), "psp_conv_bn", i) for i in range(3))
    assert not mean.any() and (var == 1).all() and (factor == 1).all()
    assert (read_blob(str(weights), "psp_conv_scale", 0) == 1).all()
    up = read_blob(str(weights), "upscore", 0)           # bilinear: rows sum to 2 per axis
    assert up.shape == (5, 1, 16, 16)
    assert up[0, 0].sum() == pytest.approx(64.0) and up[0, 0, 7, 7] == up[0, 0, 8, 8]


def test_deconv_deploy_backbone_output_equals_backbone_opencv(small):
    pytest.importorskip("cv2")
    folder, paths = small
    proto, model = paths["resnet"]
    _, deploy, weights = _run_segment(folder, proto, model, "verify-cv", *CASES["aspp-deconv"][1])
    report = verify(proto, deploy, weights)
    assert report.passed and report.blobs[0].blob == "res5c"
    assert report.blobs[0].factor == (4, 4)
    # The whole deploy net runs, and the output is at the crop size.
    from surgery.engines.engine import get_engine
    out = get_engine("opencv").run(deploy, weights, {"data": np.random.default_rng(0).standard_normal(
        (1, 3, 97, 97)).astype(np.float32)}, ["upscore_crop"])["upscore_crop"]
    assert out.shape == (1, 5, 97, 97) and np.isfinite(out).all()


# -- real Caffe ---------------------------------------------------------------------

CAFFE_SCRIPT = r"""
import sys, numpy as np, caffe
caffe.set_mode_cpu()
proto, model, phase, inputs, output, backward = sys.argv[1:7]
blobs = sys.argv[7:]
if model == "-":
    net = caffe.Net(proto, getattr(caffe, phase))
else:
    net = caffe.Net(proto, getattr(caffe, phase), weights=model)
feed = dict(np.load(inputs))
for name, array in feed.items():
    net.blobs[name].reshape(*array.shape)
net.reshape()
for name, array in feed.items():
    net.blobs[name].data[...] = array
net.forward()
out = {b: np.array(net.params[b.split(":")[1]][int(b.split(":")[2])].data)
       if b.startswith("param:") else np.array(net.blobs[b].data) for b in blobs}
if backward == "1":
    net.backward()
    grads = [np.abs(p.diff).sum() for layer in net.params.values() for p in layer]
    out["_grad_sum"] = np.array(sum(grads))
np.savez(output, **out)
"""


def _caffe(tmp_path, proto, model, phase, feed, blobs, backward=False):
    env = caffe_build()
    script, inputs, output = tmp_path / "run.py", tmp_path / "in.npz", tmp_path / "out.npz"
    script.write_text(CAFFE_SCRIPT)
    np.savez(inputs, **feed)
    proc = subprocess.run([env["CAFFE_PYTHON"], str(script), str(proto), str(model), phase,
                           str(inputs), str(output), "1" if backward else "0", *blobs],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": env["CAFFE_PYTHONPATH"],
                               "GLOG_minloglevel": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(np.load(output))


@pytest.mark.caffe
def test_deconv_deploy_runs_in_caffe_and_keeps_the_backbone(small, tmp_path):
    folder, paths = small
    proto, model = paths["resnet"]
    _, deploy, weights = _run_segment(folder, proto, model, "verify-caffe", *CASES["aspp-deconv"][1])
    image = np.random.default_rng(1).standard_normal((1, 3, 97, 97)).astype(np.float32)
    mine = _caffe(tmp_path, deploy, weights, "TEST", {"data": image}, ["res5c", "upscore_crop"])
    theirs = _caffe(tmp_path, proto, model, "TEST", {"data": image}, ["res5c"])
    from surgery.engines.verify import _grid
    grid, _ = _grid("res5c", analyse(load_prototxt(proto)), analyse(load_prototxt(deploy)))
    factor, offset = (tuple(int(v) for v in part) for part in grid)
    sampled = mine["res5c"][:, :, offset[0]::factor[0], offset[1]::factor[1]]
    sampled = sampled[:, :, :theirs["res5c"].shape[2], :theirs["res5c"].shape[3]]
    scale = np.abs(theirs["res5c"]).max()
    assert np.abs(sampled - theirs["res5c"]).max() <= 1e-4 * scale
    assert mine["upscore_crop"].shape == (1, 5, 97, 97)
    # OpenCV computes the same deploy output.
    pytest.importorskip("cv2")
    from surgery.engines.engine import get_engine
    cv = get_engine("opencv").run(deploy, weights, {"data": image}, ["upscore_crop"])["upscore_crop"]
    assert np.abs(cv - mine["upscore_crop"]).max() <= 1e-4 * np.abs(mine["upscore_crop"]).max()


@pytest.mark.caffe
def test_train_net_forward_backward_in_caffe_gives_finite_loss(small, tmp_path):
    """BVLC-only train net (Input data and label, deconv upsampling): one random batch."""
    folder, paths = small
    proto, model = paths["resnet"]
    train, _, weights = _run_segment(folder, proto, model, "train-caffe", *CASES["aspp-deconv"][1])
    rng = np.random.default_rng(2)
    image = rng.standard_normal((1, 3, 97, 97)).astype(np.float32)
    label = rng.integers(0, 5, (1, 1, 97, 97)).astype(np.float32)
    label[:, :, :10] = 255                      # ignored pixels
    out = _caffe(tmp_path, train, weights, "TRAIN", {"data": image, "label": label},
                 ["loss", "accuracy"], backward=True)
    assert np.isfinite(out["loss"]).all() and float(out["loss"]) > 0
    assert np.isfinite(out["_grad_sum"]) and float(out["_grad_sum"]) > 0


@pytest.mark.caffe
def test_fillers_are_caffes(small, tmp_path):
    """The bilinear Deconvolution weights written are what Caffe's own filler makes for
    the same layer (the train net loaded without weights). BVLC Caffe cannot parse PSP's
    Interp, so the ASPP net is used."""
    from surgery.io.caffemodel import read_blob
    folder, paths = small
    proto, model = paths["resnet"]
    train, _, weights = _run_segment(folder, proto, model, "fillers-caffe",
                                     *CASES["aspp-deconv"][1])
    image = np.zeros((1, 3, 97, 97), np.float32)
    label = np.zeros((1, 1, 97, 97), np.float32)
    out = _caffe(tmp_path, train, "-", "TRAIN", {"data": image, "label": label},
                 ["param:upscore:0"])
    ours = read_blob(str(weights), "upscore", 0)
    assert np.array_equal(out["param:upscore:0"].reshape(ours.shape), ours)


def test_train_scores_forward_in_opencv_give_finite_loss(small):
    """Without Caffe: the deploy net's scores (the train net's up to the loss) run in
    OpenCV, and the softmax loss over a random label, ignore_label left out, is finite."""
    pytest.importorskip("cv2")
    folder, paths = small
    proto, model = paths["resnet"]
    _, deploy, weights = _run_segment(folder, proto, model, "train-cv", *CASES["aspp-deconv"][1])
    from surgery.engines.engine import get_engine
    rng = np.random.default_rng(3)
    image = rng.standard_normal((1, 3, 97, 97)).astype(np.float32)
    scores = get_engine("opencv").run(deploy, weights, {"data": image},
                                      ["upscore_crop"])["upscore_crop"][0]
    label = rng.integers(0, 5, scores.shape[1:])
    label[:10] = 255
    logp = scores - scores.max(0) - np.log(np.exp(scores - scores.max(0)).sum(0))
    keep = label != 255
    loss = -logp[label[keep], np.nonzero(keep)[0], np.nonzero(keep)[1]].mean()
    assert np.isfinite(loss) and loss > 0


def test_json_summary(tmp_path, capsys):
    out = tmp_path / "t.prototxt"
    assert main(["segment", str(RESNET101), "--head", "aspp", "--classes", "21",
                 "--output-stride", "16", "-o", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"] == "rates 3,6,9,12" and data["score_shape"] == [1, 21, 21, 21]
    assert [b["rf"][0] for b in data["branches"]] == [1123, 1219, 1315, 1411]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
