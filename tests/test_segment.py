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
from surgery.analysis.check import compare, merge, wanted_shapes
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
TESTS = Path(__file__).resolve().parent
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


@pytest.mark.parametrize("head", ["aspp", "deeplabv3", "deeplabv3plus"])
def test_trained_at_16_dilated_to_8_is_the_net_built_at_8(head):
    """DeepLab v3's recipe: the OS-16 nets, taken to 8 by `dilate`, are the OS-8 nets
    `segment` builds, names included (they name branches by index, not rate), so weights
    trained at 16 load at 8. The image pooling's Tiles follow the map it meets."""
    from surgery.transform.dilate import dilate
    at16 = _seg(head=head, classes=21, output_stride=16, data="input")
    at8 = _seg(head=head, classes=21, output_stride=8, data="input")
    for which in ("train", "deploy"):
        converted, _ = dilate(getattr(at16, which), output_stride=8)
        want = getattr(at8, which)
        assert [l.name for l in converted.layer] == [l.name for l in want.layer]
        assert list(converted.layer) == list(want.layer), which


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


@pytest.mark.parametrize("argv, says", [
    (["--head", "aspp", "--crop", "7"],
     "--crop 7x7 is too small for this net: 'res5c' (the trunk at output stride 8) needs a "
     "map of 2x2 or more; the smallest crop that gives one is 11"),
    (["--head", "largefov"], "needs a VGG-style backbone whose fc6 and fc7 are InnerProducts"),
    (["--head", "aspp", "--weights", str(RESNET101)], "--weights is read to write --weights-out"),
])
def test_messages_say_what_blocks_and_what_gets_through(tmp_path, capsys, argv, says):
    out = tmp_path / "t.prototxt"
    assert main(["segment", str(RESNET101), "--classes", "21", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and not out.exists()


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
    "deeplabv3": ("resnet", ["--head", "deeplabv3", "--classes", "5", "--crop", "97",
                             "--data", "input", "--upsample", "deconv"]),
    "deeplabv3plus": ("resnet", ["--head", "deeplabv3plus", "--classes", "5", "--crop", "97",
                                 "--data", "input", "--upsample", "deconv"]),
    "msc": ("resnet", ["--head", "aspp", "--classes", "5", "--crop", "97", "--data", "input",
                       "--scales", "1,0.75,0.5"]),
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
        report = merge([compare(wanted_shapes(analyse(net)), summary)])
        assert report.ok, [r for r in report.layers if r.status not in ("ok", "unused weights")]
    # Every new layer is listed, and the backbone's layers are byte for byte the same.
    new = [l.name for l in summary.layers if backbone.find(l.name) is None]
    assert new and all(f"  {name} (" in text for name in new)
    raw_in, raw_out = Path(model).read_bytes(), Path(weights).read_bytes()
    for layer in backbone.layers:
        if not any(c in layer.name for c in ("fc6", "fc7", "fc8")):   # fcn rebuilds these
            got = summary.find(layer.name)
            assert raw_out[got.start:got.end] == raw_in[layer.start:layer.end]


def test_weights_out_without_backbone_weights_holds_the_new_layers(small, capsys):
    """--weights-out alone writes the new layers' initial values only and says how to train
    with them (Caffe's --weights takes both files); the two files together load into the
    train net; largefov, whose fc6/fc7 come from the backbone's weights, refuses."""
    folder, paths = small
    proto, model = paths["resnet"]
    new = folder / "head-only.caffemodel"
    capsys.readouterr()
    assert main(["segment", str(proto), *CASES["deeplabv3"][1], "--weights-out", str(new),
                 "-o", str(folder / "head-only.prototxt")]) == 0
    text = capsys.readouterr().out
    assert "the 20 new layers only (no --weights)" in text and f",{new}" in text
    names = {l.name for l in read_caffemodel(new).layers}
    assert "score" in names and "conv1" not in names and len(names) == 20
    train = analyse(load_prototxt(folder / "head-only.prototxt"))
    wanted = wanted_shapes(train)
    for path in (model, new):     # each file fits where it has the layer
        report = compare({k: v for k, v in wanted.items()
                          if read_caffemodel(path).find(k) is not None}, read_caffemodel(path))
        assert report.ok
    assert {k for k, v in wanted.items() if v} <= names | {l.name for l in
                                                           read_caffemodel(model).layers}
    vgg, _ = paths["vgg"]
    assert main(["segment", str(vgg), *CASES["largefov"][1], "--weights-out", str(new),
                 "-o", str(folder / "lf.prototxt")]) == 2
    assert "needs --weights" in capsys.readouterr().err


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
    inputs, output = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs, **feed)
    _child(tmp_path, CAFFE_SCRIPT, proto, model, phase, inputs, output,
           "1" if backward else "0", *blobs)
    return dict(np.load(output))


def _child(tmp_path, text, *args, cwd=None):
    """Run a script under the interpreter pycaffe was built for, with the fork layers the
    caffe engine runs as Python layers on its path (surgery/engines/pylayers)."""
    from surgery.engines.engine import PYLAYERS

    env = caffe_build()
    script = tmp_path / "run.py"
    script.write_text(text)
    proc = subprocess.run([env["CAFFE_PYTHON"], str(script), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "GLOG_minloglevel": "2", "PYTHONPATH":
                               os.pathsep.join([env["CAFFE_PYTHONPATH"], PYLAYERS])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


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


def _interpolated(x, coords, axis):
    """Linear interpolation of `x` along `axis` at `coords` (in-range coordinates)."""
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, x.shape[axis] - 1)
    t = (coords - low).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, low, axis) * (1 - t) + np.take(x, high, axis) * t


@pytest.mark.caffe
@pytest.mark.parametrize("head", ["deeplabv3", "deeplabv3plus"])
def test_deeplabv3_heads_run_in_caffe_with_their_init_weights(small, tmp_path, head):
    """The BVLC-only nets (--data input --upsample deconv) load their init weights and run
    in real Caffe. Checked against independent numpy: the image-pooling branch is ReLU of
    the 1x1 conv of res5c's mean over the map (BatchNorm at identity statistics: 1/sqrt(1 +
    eps)), and Tile copies it to every position of the trunk's map; for v3+, the decoder's
    upsampled ASPP output is the linear interpolation of the ASPP map at (k - 1/2) / 2 (the
    half pixel of an even factor the summary reports). The train net runs forward and
    backward with a finite loss."""
    from surgery.io.caffemodel import read_blob
    folder, paths = small
    proto, model = paths["resnet"]
    train, deploy, weights = _run_segment(folder, proto, model, f"{head}-caffe", *CASES[head][1])
    image = np.random.default_rng(4).standard_normal((1, 3, 97, 97)).astype(np.float32)
    plus = head == "deeplabv3plus"
    blobs = ["res5c", "aspp_pool_conv", "aspp_pool_tile", "upscore_crop"]
    out = _caffe(tmp_path, deploy, weights, "TEST", {"data": image},
                 blobs + (["aspp_proj", "dec_up_crop", "dec_low"] if plus else []))
    w = read_blob(str(weights), "aspp_pool_conv", 0)[:, :, 0, 0]
    want = np.maximum(0, out["res5c"].mean(axis=(2, 3)) @ w.T / np.sqrt(1 + 1e-5))
    got = out["aspp_pool_conv"][:, :, 0, 0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max() and want.any()
    tile = out["aspp_pool_tile"]
    assert tile.shape[2:] == out["res5c"].shape[2:] and (tile == out["aspp_pool_conv"]).all()
    assert out["upscore_crop"].shape == (1, 5, 97, 97) and np.isfinite(out["upscore_crop"]).all()
    if plus:
        aspp, up = out["aspp_proj"], out["dec_up_crop"]
        assert up.shape[2:] == out["dec_low"].shape[2:]
        coords = (np.arange(up.shape[2]) - 0.5) / 2
        inside = (coords >= 0) & (coords <= aspp.shape[2] - 1)
        want = _interpolated(_interpolated(aspp, coords[inside], 2), coords[inside], 3)
        got = up[:, :, inside][:, :, :, inside]
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    rng = np.random.default_rng(5)
    label = rng.integers(0, 5, (1, 1, 97, 97)).astype(np.float32)
    loss = _caffe(tmp_path, train, weights, "TRAIN", {"data": image, "label": label},
                  ["loss"], backward=True)
    assert np.isfinite(loss["loss"]).all() and float(loss["loss"]) > 0
    assert np.isfinite(loss["_grad_sum"]) and float(loss["_grad_sum"]) > 0


SOLVER_SCRIPT = r"""
import sys, numpy as np, caffe
from caffe.proto import caffe_pb2
from google.protobuf import text_format
caffe.set_mode_cpu()
solver_file, weights = sys.argv[1:3]
param = caffe_pb2.SolverParameter()
text_format.Merge(open(solver_file).read(), param)
print(param.net, param.base_lr, param.lr_policy, param.power, param.momentum,
      param.weight_decay, param.iter_size, param.max_iter, param.snapshot_prefix)
solver = caffe.SGDSolver(solver_file)
solver.net.copy_from(weights)
before = {k: [np.array(b.data) for b in v] for k, v in solver.net.params.items()}
solver.step(2)
changed = sorted(k for k, v in solver.net.params.items()
                 if any(not np.array_equal(b.data, old) for b, old in zip(v, before[k])))
print(solver.iter, " ".join(changed))
"""


@pytest.mark.caffe
def test_solver_is_deeplabs_and_caffe_trains_with_it(small, tmp_path, monkeypatch):
    """--solver writes DeepLab's poly schedule with `net:` as the user wrote it (relative);
    real Caffe parses it, builds the train net from it and takes two SGD steps from the
    init weights. The frozen backbone's BatchNorm and Scale blobs stay as they were; the
    head's convolutions learn."""
    folder, paths = small
    proto, model = paths["resnet"]
    work = tmp_path / "run"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["segment", str(proto), *CASES["deeplabv3"][1], "--weights", str(model),
                 "--weights-out", "init.caffemodel", "-o", "train.prototxt",
                 "--solver", "solver.prototxt", "--max-iter", "2"]) == 0
    head, result = _child(tmp_path, SOLVER_SCRIPT, "solver.prototxt", "init.caffemodel",
                          cwd=work).strip().splitlines()[-2:]
    net, base_lr, policy, power, momentum, decay, iter_size, max_iter, prefix = head.split()
    assert (net, policy, prefix) == ("train.prototxt", "poly", "train")
    assert [float(v) for v in (base_lr, power, momentum, decay)] == \
        pytest.approx([2.5e-4, 0.9, 0.9, 5e-4])
    assert (int(iter_size), int(max_iter)) == (10, 2)    # Input batch 1 x 10 = DeepLab's 10
    steps, *changed = result.split()
    assert int(steps) == 2
    frozen = [l.name for l in load_prototxt(proto).layer if l.type in ("BatchNorm", "Scale")]
    assert frozen and not set(frozen) & set(changed)
    assert {"score", "aspp_c1", "aspp_proj", "aspp_c1_scale"} <= set(changed)


def test_multiscale_is_deeplab_v2s_msc_layout():
    """--scales 1,0.75,0.5 at 321: the image resized by Interp (shrink 4 zoom 3, shrink 2),
    a trunk and ASPP per scale named as DeepLab names them (res5c_res075, fc1_res075_c0)
    and sharing every param by name with the main scale; the scores brought back to the
    41x41 grid (zoom 4 shrink 3, zoom 2) and fused by Eltwise MAX; a loss per scale and
    one for the fused scores, the 0.5 one against the label shrunk by 16; the deploy net
    fuses the same way and zooms to the whole 321 image."""
    result = _seg(head="aspp", classes=21, scales=["1", "0.75", "0.5"])
    train, deploy = result.train, result.deploy
    a = analyse(train)
    assert [a.shapes[b][2:] for b in ("fc1", "fc1_res075", "fc1_res05")] == \
        [(41, 41), (31, 31), (21, 21)]
    interp = lambda name: _layer(train, name).interp_param
    assert (interp("data_res075").shrink_factor, interp("data_res075").zoom_factor) == (4, 3)
    assert (interp("data_res05").shrink_factor, interp("data_res05").HasField("zoom_factor")) \
        == (2, False)
    assert (interp("fc1_res075_interp").shrink_factor,
            interp("fc1_res075_interp").zoom_factor) == (3, 4)
    assert interp("fc1_res05_interp").zoom_factor == 2
    fusion = _layer(train, "fc1_fusion")
    assert list(fusion.bottom) == ["fc1", "fc1_res075_interp", "fc1_res05_interp"]
    assert fusion.eltwise_param.operation == fusion.eltwise_param.MAX
    losses = {l.name: list(l.bottom) for l in train.layer if l.type == "SoftmaxWithLoss"}
    assert losses == {"loss": ["fc1_fusion", "label_shrink"],
                      "loss_res1": ["fc1", "label_shrink"],
                      "loss_res075": ["fc1_res075_interp", "label_shrink"],
                      "loss_res05": ["fc1_res05", "label_shrink16"]}
    assert (interp("label_shrink").shrink_factor, interp("label_shrink16").shrink_factor) == \
        (8, 16)
    assert a.shapes["label_shrink16"][2:] == (21, 21)
    # Every copy shares each of its params with its main twin, by name.
    main = {l.name: l for l in train.layer}
    for suffix in ("_res075", "_res05"):
        for name in ("conv1", "bn_conv1", "scale_conv1", "res4b22_branch2b", "fc1_c3"):
            copy = main[name.replace("_c3", f"{suffix}_c3") if name.startswith("fc1")
                        else name + suffix]
            assert [p.name for p in copy.param] == [p.name for p in main[name].param]
            assert all(p.name for p in copy.param) and copy.param
    assert [p.name for p in main["conv1"].param] == ["conv1_0"]
    assert [p.name for p in main["fc1_c0"].param] == ["fc1_c0_w", "fc1_c0_b"]
    assert _layer(deploy, "upscore").bottom == ["fc1_fusion"]
    assert analyse(deploy).shapes["upscore"][2:] == (321, 321)
    # Only the main scale's layers need weights; the copies read them.
    assert not any(name.endswith(("_res075", "_res05")) or "_res0" in name
                   for name in result.report.new_params)


def test_multiscale_refuses_crops_whose_scales_do_not_line_up(tmp_path, capsys):
    out = tmp_path / "t.prototxt"
    assert main(["segment", str(RESNET101), "--head", "aspp", "--classes", "21",
                 "--scales", "1,0.75,0.5", "--crop", "320", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--crop 321" in err and not out.exists()
    assert main(["segment", str(RESNET101), "--head", "aspp", "--classes", "21",
                 "--scales", "1,0.75", "--upsample", "deconv", "--data", "input",
                 "-o", str(out)]) == 2
    assert "Interp" in capsys.readouterr().err


def _align_corners(x, size):
    """DeepLab's Interp to `size` (h, w): bilinear, corners aligned (numpy)."""
    for axis, n in ((2, size[0]), (3, size[1])):
        x = _interpolated(x, np.arange(n) * (x.shape[axis] - 1) / (n - 1), axis)
    return x


@pytest.mark.caffe
def test_multiscale_deploy_fuses_the_scales_in_caffe(small, tmp_path):
    """The multi-scale deploy net in real Caffe (its Interps as the caffe
    engine's Python layer: OpenCV's Interp ignores shrink_factor, so it cannot run these nets) with
    the init weights, which hold the main scale's layers only, equals the Eltwise MAX of the
    single-scale deploy net run on the image resized by numpy (bilinear, corners aligned) at
    each scale, its scores resized back to the main grid the same way: per-scale trunks,
    weights shared by name, the fusion."""
    folder, paths = small
    proto, model = paths["resnet"]
    _, deploy, weights = _run_segment(folder, proto, model, "msc-deploy", *CASES["msc"][1])
    _, single, single_w = _run_segment(folder, proto, model, "msc-single",
                                       *CASES["msc"][1][:-2])
    image = np.random.default_rng(6).standard_normal((1, 3, 97, 97)).astype(np.float32)
    fused = _caffe(tmp_path, _python_interp(deploy, tmp_path / "msc.prototxt"), weights,
                   "TEST", {"data": image}, ["fc1_fusion", "upscore"])
    runnable = _python_interp(single, tmp_path / "single.prototxt")
    scores = []
    for size in (97, 73, 49):        # 1, 0.75 (shrink 4 zoom 3), 0.5 (shrink 2) of 97
        resized = _align_corners(image, (size, size)).astype(np.float32)
        score = _caffe(tmp_path, runnable, single_w, "TEST", {"data": resized}, ["fc1"])["fc1"]
        scores.append(_align_corners(score, (13, 13)))
    want = np.maximum.reduce(scores)
    assert fused["fc1_fusion"].shape == want.shape == (1, 5, 13, 13)
    # The Python Interp computes the fork's float32 arithmetic and numpy the same resize in
    # float64; through the trunk that difference grows to a few 1e-4 of the scores.
    assert np.abs(fused["fc1_fusion"] - want).max() <= 1e-3 * np.abs(want).max()
    assert fused["upscore"].shape[2:] == (97, 97)


MSC_CAFFE_SCRIPT = r"""
import sys, numpy as np, caffe
caffe.set_mode_cpu()
proto, weights, output = sys.argv[1:4]
net = caffe.Net(proto, caffe.TRAIN, weights=weights)
rng = np.random.default_rng(7)
net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].data.shape)
net.blobs["label"].data[...] = rng.integers(0, 5, net.blobs["label"].data.shape)
net.forward()
net.backward()
out = {k: np.array(net.blobs[k].data) for k in
       ("loss", "loss_res1", "loss_res075", "loss_res05", "fc1", "fc1_res05")}
for name in ("conv1", "res5c_branch2b", "fc1_c2"):
    for suffix in ("", "_res075", "_res05"):
        copy = name.replace("_c2", suffix + "_c2") if name.startswith("fc1") else name + suffix
        out["w:" + copy] = np.array(net.params[copy][0].data)
        out["g:" + copy] = np.array(net.params[copy][0].diff)
np.savez(output, **out)
"""


def _python_interp(path, out):
    """The net with every Interp as the caffe engine runs it: the fork's arithmetic as a
    Python layer (the registry's `for_engine`, engines/pylayers/forklayers.py)."""
    net = load_prototxt(path)
    layers = []
    for layer in net.layer:
        form = rule_for(layer.type).for_engine(layer, "caffe") \
            if rule_for(layer.type).fork_types else None
        layers.extend([layer] if form is None else form)
    del net.layer[:]
    net.layer.extend(layers)
    save_prototxt(net, out)
    return out


@pytest.mark.caffe
def test_multiscale_train_net_shares_weights_in_caffe(small, tmp_path):
    """The multi-scale train net in real Caffe, its Interps run as a Python layer (the
    fork's rule; BVLC has no Interp): the init weights hold the main scale's layers only,
    and every copy reads them (`param { name }`), so each copy's weights equal the main
    layer's, and its gradient goes to the one shared blob; the four losses are finite."""
    folder, paths = small
    proto, model = paths["resnet"]
    train, _, weights = _run_segment(folder, proto, model, "msc-caffe", *CASES["msc"][1])
    runnable = _python_interp(train, tmp_path / "train.prototxt")
    output = tmp_path / "msc.npz"
    _child(tmp_path, MSC_CAFFE_SCRIPT, runnable, weights, output)
    out = dict(np.load(output))
    for loss in ("loss", "loss_res1", "loss_res075", "loss_res05"):
        assert np.isfinite(out[loss]).all() and float(out[loss]) > 0
    assert out["fc1"].shape[2:] == (13, 13) and out["fc1_res05"].shape[2:] == (7, 7)
    for name in ("conv1", "res5c_branch2b", "fc1_c2"):
        copies = [k for k in out if k.startswith("w:") and k[2:].startswith(name.split("_c")[0])
                  and (k[2:] == name or "_res0" in k)]
        assert len(copies) == 3
        assert all(np.array_equal(out[k], out["w:" + name]) for k in copies)
        assert all(np.array_equal(out["g" + k[1:]], out["g:" + name]) for k in copies)
    assert np.abs(out["w:conv1"]).max() > 0 and np.abs(out["g:fc1_c2"]).max() > 0


@pytest.mark.caffe
@pytest.mark.parametrize("case", ["psp-input", "largefov"])
def test_interp_heads_train_in_caffe_with_their_init_weights(small, tmp_path, case):
    """The heads whose nets use DeepLab's Interp (PSP's pyramid, the label shrink and the
    final zoom) in real Caffe, the Interps as the caffe engine's Python layer: the
    init weights load, the train net runs forward and backward with a finite loss, and the
    deploy output has the size the registry gives (the crop on ResNet's centred grid; on the
    VGG stand-in, whose 2x2 pools put the first score centre on pixel 15.5, the 41 pixels
    from there, as the summary says)."""
    folder, paths = small
    which, argv = CASES[case]
    proto, model = paths[which]
    train, deploy, weights = _run_segment(folder, proto, model, f"{case}-caffe", *argv)
    crop = int(argv[argv.index("--crop") + 1])
    rng = np.random.default_rng(9)
    image = rng.standard_normal((1, 3, crop, crop)).astype(np.float32)
    label = rng.integers(0, 5, (1, 1, crop, crop)).astype(np.float32)
    out = _caffe(tmp_path, _python_interp(train, tmp_path / "train.prototxt"), weights, "TRAIN",
                 {"data": image, "label": label}, ["loss"], backward=True)
    assert np.isfinite(out["loss"]).all() and float(out["loss"]) > 0
    assert np.isfinite(out["_grad_sum"]) and float(out["_grad_sum"]) > 0
    up = _caffe(tmp_path, _python_interp(deploy, tmp_path / "deploy.prototxt"), weights, "TEST",
                {"data": image}, ["upscore"])["upscore"]
    want = analyse(load_prototxt(deploy)).shapes["upscore"][2:]
    assert up.shape[2:] == want == ((crop, crop) if which == "resnet" else (41, 41))
    assert np.isfinite(up).all()


def test_deploy_output_covers_the_image_on_a_centred_grid_opencv(small, tmp_path):
    """The interp deploy net's output is the crop size, and pixel k is image pixel k: pool1
    padded by 1 computes what the backbone's stem computes on the image shifted by 2 pixels
    (OpenCV, both; every pixel but the first row and column, where the shifted stem sees a
    convolution of the padding), every later layer is the backbone's exact conversion (the
    same windows as --upsample deconv, which keeps the grid), and output pixel 8j is score
    pixel j (Interp's corners on pixels)."""
    pytest.importorskip("cv2")
    from surgery.engines.engine import get_engine
    folder, paths = small
    proto, model = paths["resnet"]
    _, deploy, weights = _run_segment(folder, proto, model, "cover", "--head", "aspp",
                                      "--classes", "5", "--crop", "97", "--data", "input")
    _, kept, _ = _run_segment(folder, proto, model, "kept", *CASES["aspp-deconv"][1])
    opencv = get_engine("opencv")
    image = np.random.default_rng(8).standard_normal((1, 3, 97, 97)).astype(np.float32)
    mine = opencv.run(deploy, weights, {"data": image}, ["pool1", "fc1", "upscore"])
    assert mine["upscore"].shape[2:] == (97, 97) and mine["fc1"].shape[2:] == (13, 13)
    assert np.array_equal(mine["upscore"][:, :, ::8, ::8], mine["fc1"])
    stem = load_prototxt(proto)
    names = [l.name for l in stem.layer]
    del stem.layer[names.index("pool1") + 1:]
    stem.layer[0].input_param.shape[0].dim[2:] = [99, 99]
    save_prototxt(stem, tmp_path / "stem.prototxt")
    shifted = np.zeros((1, 3, 99, 99), np.float32)
    shifted[:, :, 2:, 2:] = image                    # image pixel x at shifted pixel x + 2
    theirs = opencv.run(tmp_path / "stem.prototxt", model, {"data": shifted}, ["pool1"])["pool1"]
    assert theirs.shape == mine["pool1"].shape
    assert np.abs(theirs[:, :, 1:, 1:] - mine["pool1"][:, :, 1:, 1:]).max() <= \
        1e-5 * np.abs(theirs).max()
    same = [l.name for l in load_prototxt(kept).layer if l.name.startswith("res")]
    assert _windows(load_prototxt(deploy), same) == _windows(load_prototxt(kept), same)


def test_json_summary(tmp_path, capsys):
    out = tmp_path / "t.prototxt"
    assert main(["segment", str(RESNET101), "--head", "aspp", "--classes", "21",
                 "--output-stride", "16", "-o", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"] == "rates 3,6,9,12" and data["score_shape"] == [1, 21, 21, 21]
    assert [b["rf"][0] for b in data["branches"]] == [1123, 1219, 1315, 1411]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
