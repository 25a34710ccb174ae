"""Coarsening: `dilate -s N` above a net's output stride gives strides back.

The dense net is the reference here: its coarse conversion, with the same weights, must
equal it on the subsampled grid (verify runs both in OpenCV and compares the blobs at
the positions the two nets' geometry says coincide). Round trips (dilate to 8, then back)
must restore every layer's window, and the refusals list the strides that can be reached.
"""

import json

import pytest

from surgery.analysis.analyse import analyse
from surgery.cli import main
from surgery.errors import SurgeryError
from surgery.weights.initweights import init_weights
from surgery.io.prototxt import save_prototxt
from surgery.io.netfile import load_prototxt
from surgery.transform.dilate import dilate

from conftest import CORPUS, corpus_net, corpus_path

MODELS = __import__("pathlib").Path(__file__).resolve().parents[1] / "models"


def windows(net, phase="TEST"):
    a = analyse(net, phase=phase)
    return {n.name: n.rule.window(n.layer) for n in a.graph.nodes
            if n.rule.reads_window(n.layer)}


def output_stride(net):
    a = analyse(net)
    return max(a.geometry[a.deepest_blob()].stride)


# ---------------------------------------------------------------------------
# Numbers: the coarse net equals the dense one on the subsampled grid (OpenCV)
# ---------------------------------------------------------------------------

NUMERIC = [("resnet50", "exact", 16), ("resnet50", "exact", 32),
           ("mobilenet-mini", "exact", 16), ("mobilenet-mini", "exact", 32),
           # dilated the PSPNet way: the formerly strided 3x3 is dilated too
           ("resnet50-s3x3", "pspnet", 16), ("resnet50-s3x3", "pspnet", 32)]


@pytest.mark.parametrize("model, convention, target", NUMERIC,
                         ids=[f"{m}-{c}-os{t}" for m, c, t in NUMERIC])
def test_an_os8_net_coarsened_equals_the_dense_net_on_the_subsampled_grid(
        tmp_path, model, convention, target):
    pytest.importorskip("cv2")
    from surgery.engines.verify import verify

    dense, _ = dilate(load_prototxt(MODELS / model / "deploy.prototxt"), output_stride=8,
                      head="cut", convention=convention)
    coarse, report = dilate(dense, output_stride=target)
    assert report.deepest in report.exact_blobs and max(report.stride_after) == target
    save_prototxt(dense, tmp_path / "dense.prototxt")
    save_prototxt(coarse, tmp_path / "coarse.prototxt")
    init_weights(dense, tmp_path / "w.caffemodel", input_shapes={"data": (1, 3, 97, 97)})
    deepest = report.deepest
    for a, b in (("dense", "coarse"), ("coarse", "dense")):     # either net may come first
        result = verify(tmp_path / f"{a}.prototxt", tmp_path / f"{b}.prototxt",
                        tmp_path / "w.caffemodel", input_shapes={"data": (1, 3, 97, 97)},
                        blobs=[deepest])
        row = next(r for r in result.blobs if r.blob == deepest)
        want = 8 / target if a == "dense" else target / 8
        assert row.factor == (want, want) and row.status == "ok", (a, b, row)
        assert result.passed and row.compared[0] > 1


# ---------------------------------------------------------------------------
# Geometry: round trips and refusals
# ---------------------------------------------------------------------------

ROUND_TRIPS = ["resnet50", "resnet101", "resnet50-s3x3", "mobilenet-mini"]


@pytest.mark.parametrize("model", ROUND_TRIPS)
@pytest.mark.parametrize("dense", [8, 16])
def test_dilating_then_coarsening_back_restores_every_window(model, dense):
    original = load_prototxt(MODELS / model / "deploy.prototxt")
    backbone, _ = dilate(original, output_stride=32, head="cut")   # the head alone cut
    there, _ = dilate(original, output_stride=dense, head="cut")
    back, report = dilate(there, output_stride=32)
    assert report.deepest in report.exact_blobs
    assert windows(back) == windows(backbone)


# Public backbones whose dense conversion is exact; each must come back exactly.
CORPUS_ROUND_TRIPS = ["resnet_kaiming/ResNet-50-deploy.prototxt",
                      "resnet_kaiming/ResNet-101-deploy.prototxt",
                      "mobilenet/mobilenet_deploy.prototxt",
                      "soeaver_cls/deploy_resnext50-32x4d.prototxt",
                      "soeaver_cls/deploy_resnet101-v2.prototxt"]


@pytest.mark.parametrize("path", CORPUS_ROUND_TRIPS)
def test_public_backbones_come_back_to_their_own_geometry(path):
    original = corpus_net(path)
    backbone, _ = dilate(original, output_stride=32, head="cut")
    stride = output_stride(backbone)
    for dense in (8, 16):
        there, _ = dilate(original, output_stride=dense, head="cut")
        back, _ = dilate(there, output_stride=stride)
        assert windows(back) == windows(backbone), dense
        assert analyse(back).geometry == analyse(backbone).geometry


def test_a_dilation_that_does_not_divide_is_refused_listing_both_directions():
    # A 3x3 with dilation 1 after the removed stride (a context module written at stride 8)
    # has nothing to give back: the output stride cannot grow past it.
    net = load_prototxt(MODELS / "resnet50" / "deploy.prototxt")
    dense, _ = dilate(net, output_stride=8, head="cut")
    extra = type(dense.layer[0])()
    extra.CopyFrom(next(l for l in dense.layer if l.name == "res5c_branch2b"))
    extra.name, extra.bottom[:], extra.top[:] = "context", ["res5c"], ["context"]
    del extra.convolution_param.dilation[:]
    del extra.convolution_param.pad[:]
    extra.convolution_param.pad.append(1)
    dense.layer.append(extra)
    with pytest.raises(SurgeryError) as err:
        dilate(dense, output_stride=16)
    text = str(err.value)
    assert "output stride 16 is not reachable" in text and "\n" not in text
    assert "layer 'context'" in text and "--cut-after res5c" in text
    assert text.endswith("reachable output strides: exact: 2, 4, 8; approximate with --pooling cover: 1")


def test_the_cli_coarsens_and_inspect_reports_nominal_and_reachable_strides(tmp_path, capsys):
    os8 = tmp_path / "os8.prototxt"
    assert main(["dilate", str(MODELS / "resnet50" / "deploy.prototxt"), "-s", "8",
                 "--head", "cut", "-o", str(os8)]) == 0
    assert main(["inspect", str(os8)]) == 0
    out = capsys.readouterr().out
    assert "output stride 8 (dilated from 32)" in out
    assert ("reachable output strides (dilate -s N --head cut): exact: 2, 4, 8, 16, 32; "
            "approximate with --pooling cover: 1") in out
    os16 = tmp_path / "os16.prototxt"
    assert main(["dilate", str(os8), "-s", "16", "-o", str(os16), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output_stride"] == {"before": [8, 8], "after": [16, 16]}
    assert report["grid"]["res5c"]["factor"] == [0.5, 0.5] and report["exact"]
    assert main(["inspect", str(os16), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["output_stride"] == [16, 16]
    assert data["totals"]["nominal_output_stride"] == [32, 32]
    assert data["reachable_output_strides"] == [2, 4, 8, 16, 32]
    assert data["reachable_with_flags"] == {"1": ["--pooling cover"]}
    before = os8.read_bytes()
    assert main(["dilate", str(os8), "-s", "64", "-o", str(tmp_path / "x.prototxt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("reachable output strides: exact: 2, 4, 8, 16, 32; "
                                     "approximate with --pooling cover: 1") in err
    assert not (tmp_path / "x.prototxt").exists() and os8.read_bytes() == before


# ---------------------------------------------------------------------------
# Heads that resample: ADAPTED, and every join sees one grid again
# ---------------------------------------------------------------------------

TRAIN_HEAD = """name: "seg"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 1 dim: 3 dim: 65 dim: 65 } shape { dim: 1 dim: 1 dim: 65 dim: 65 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "c3" type: "Convolution" bottom: "c2" top: "c3"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "score" type: "Convolution" bottom: "c3" top: "score"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "shrink" type: "Interp" bottom: "label" top: "label_small" interp_param { shrink_factor: 8 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label_small" top: "loss" }
layer { name: "zoom" type: "Interp" bottom: "score" top: "full" interp_param { zoom_factor: 8 } }
"""


@pytest.mark.parametrize("target, shrink, zoom", [(4, 4, 4), (2, 2, 2)])
def test_the_label_shrink_follows_the_scores_and_the_zoom_goes_back_to_image_size(
        target, shrink, zoom):
    from surgery.io.prototxt import parse_prototxt

    net = parse_prototxt(TRAIN_HEAD)
    before = analyse(net)
    new, report = dilate(net, output_stride=target)
    status = {c.layer: c.status for c in report.changes}
    assert status["shrink"] == status["zoom"] == "ADAPTED"
    layers = {layer.name: layer for layer in new.layer}
    assert layers["shrink"].interp_param.shrink_factor == shrink
    assert layers["zoom"].interp_param.zoom_factor == zoom
    after = analyse(new)
    assert after.shapes["label_small"] == after.shapes["score"][:1] + (1,) + after.shapes["score"][2:]
    assert after.shapes["full"] == before.shapes["full"]      # back to image size
    assert not after.warnings


ROUND = ["--dilation", "round"]    # PSPNet's conv5_4: a 3x3 with dilation 1 trained at 8
DEEPLAB = [("deeplab_v2/vgg16_train.prototxt", 4, "TRAIN", []),
           ("deeplab_v1/DeepLab-LargeFOV_test.prototxt", 4, "TEST", []),
           ("pspnet/pspnet101_VOC2012_473.prototxt", 4, "TEST", []),
           ("deeplab_v2/vgg16_train.prototxt", 16, "TRAIN", []),
           ("deeplab_v1/DeepLab-LargeFOV_test.prototxt", 16, "TEST", []),
           ("pspnet/pspnet101_VOC2012_473.prototxt", 16, "TEST", ROUND),
           ("pspnet/pspnet101_VOC2012_473.prototxt", 32, "TEST", ROUND)]


@pytest.mark.parametrize("path, target, phase, extra", DEEPLAB)
def test_public_segmentation_nets_change_stride_with_their_heads(tmp_path, capsys, path, target,
                                                                 phase, extra):
    corpus_path(path)
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(CORPUS / path), "-s", str(target), "--pooling", "cover",
                 "-o", str(out), "--json"] + extra) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output_stride"]["after"] == [target, target]
    assert any(c["status"] == "ADAPTED" for c in report["changes"])
    assert main(["inspect", str(out), "--phase", phase]) == 0
    err = capsys.readouterr().err
    # A DeepLab template leaves its ${...} placeholders open; nothing else may warn.
    assert all("placeholder" in line for line in err.splitlines()), err


def _anonymous(net):
    """Every layer without its names: type and parameters, in order."""
    rows = []
    for layer in net.layer:
        copy = type(layer)()
        copy.CopyFrom(layer)
        copy.ClearField("name")
        del copy.bottom[:]
        del copy.top[:]
        rows.append(copy)
    return rows


@pytest.mark.parametrize("data", ["input", "imagesegdata"])
def test_train_at_16_then_dilate_to_8_is_the_net_segment_builds_at_8(data):
    """DeepLab v3's recipe: the OS-16 train net, converted to 8, has the OS-8 net's every
    layer (ASPP rates 3,6,9,12 -> 6,12,18,24, label shrink 16 -> 8 with its crop refitted,
    the final zoom 16 -> 8), names aside."""
    from surgery.transform.segment import segment

    backbone = load_prototxt(MODELS / "resnet101" / "deploy.prototxt")
    at16 = segment(backbone, head="aspp", classes=21, output_stride=16, data=data)
    at8 = segment(backbone, head="aspp", classes=21, output_stride=8, data=data)
    for which in ("train", "deploy"):
        converted, report = dilate(getattr(at16, which), output_stride=8)
        assert _anonymous(converted) == _anonymous(getattr(at8, which)), which
        assert "ADAPTED" in {c.status for c in report.changes}


def test_a_deeplab_v2_layout_at_32_has_msra_resnet101s_windows():
    """DeepLab v2's ResNet-101 (here as `segment` builds it at output stride 8: res4
    dilation 2, res5 dilation 4, ASPP on res5c) taken back to 32 up to res5c has MSRA
    ResNet-101's stride, pad and dilation on every res* layer."""
    from surgery.transform.segment import segment

    msra = load_prototxt(MODELS / "resnet101" / "deploy.prototxt")
    deeplab = segment(msra, head="aspp", classes=21, output_stride=8).deploy
    back, report = dilate(deeplab, output_stride=32, cut_after="res5c")
    assert report.exact
    want = {k: v for k, v in windows(msra).items() if k.startswith("res")}
    got = {k: v for k, v in windows(back).items() if k.startswith("res")}
    assert got == want and len(got) > 100


def test_pspnet_needs_dilation_round_to_go_coarser_and_says_so(capsys):
    path = corpus_path("pspnet/pspnet101_VOC2012_473.prototxt")
    assert main(["dilate", str(path), "-s", "16", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "layer 'conv5_4'" in err and "--dilation round" in err
    assert ("reachable output strides: exact: 8; adapted: 2, 4; "
            "approximate with --pooling cover: 1") in err
    assert len(err.splitlines()) == 1
    assert main(["dilate", str(path), "-s", "16", "--dilation", "round", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    status = {c["layer"]: c["status"] for c in report["changes"]}
    assert status["conv5_4"] == "APPROXIMATE" and status["conv6_interp"] == "ADAPTED"
    assert all(v == "EXACT" for k, v in status.items() if k.startswith(("conv4", "conv5_1")))
    assert "conv5_3" in report["exact_blobs"]


def test_a_rounded_head_keeps_the_trunk_exact_in_numbers(tmp_path):
    """An OS-8 ResNet with a PSPNet-like 3x3 (dilation 1) head, coarsened to 16 with
    --dilation round: the trunk equals the dense net on the subsampled grid (OpenCV), the
    head is approximate and the exact rule alone refuses."""
    pytest.importorskip("cv2")
    from surgery.engines.verify import verify

    dense, _ = dilate(load_prototxt(MODELS / "resnet50" / "deploy.prototxt"), output_stride=8,
                      head="cut")
    save_prototxt(dense, tmp_path / "dense.prototxt")
    text = (tmp_path / "dense.prototxt").read_text() + (
        'layer { name: "head" type: "Convolution" bottom: "res5c" top: "head"\n'
        '  convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }\n')
    (tmp_path / "dense.prototxt").write_text(text)
    dense = load_prototxt(tmp_path / "dense.prototxt")
    with pytest.raises(SurgeryError, match="--dilation round"):
        dilate(dense, output_stride=16)
    coarse, report = dilate(dense, output_stride=16, dilation="round")
    assert "res5c" in report.exact_blobs and "head" not in report.exact_blobs
    assert {c.layer: c.status for c in report.changes}["head"] == "APPROXIMATE"
    save_prototxt(coarse, tmp_path / "coarse.prototxt")
    shapes = {"data": (1, 3, 97, 97)}
    init_weights(dense, tmp_path / "w.caffemodel", input_shapes=shapes)
    result = verify(tmp_path / "dense.prototxt", tmp_path / "coarse.prototxt",
                    tmp_path / "w.caffemodel", input_shapes=shapes, blobs=["res5c"])
    row = next(r for r in result.blobs if r.blob == "res5c")
    assert row.factor == (0.5, 0.5) and row.status == "ok" and row.compared[0] > 1
    # Asked for the head too, verify marks it approximate (it differs) and still passes.
    both = verify(tmp_path / "dense.prototxt", tmp_path / "coarse.prototxt",
                  tmp_path / "w.caffemodel", input_shapes=shapes, blobs=["res5c", "head"])
    head = next(r for r in both.blobs if r.blob == "head")
    assert both.passed and head.approximate and head.max_abs_error > 1e-3


MSC = """
name: "msc-mini"
layer { name: "input" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 1 dim: 65 dim: 65 } } }
layer { name: "data05" type: "Interp" bottom: "data" top: "data05"
  interp_param { height: 33 width: 33 } }
""" + "".join(f"""
layer {{ name: "conv1{s}" type: "Convolution" bottom: "data{s}" top: "conv1{s}"
  param {{ name: "w1" }} param {{ name: "b1" }}
  convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 pad: 1 }} }}
layer {{ name: "pool1{s}" type: "Pooling" bottom: "conv1{s}" top: "pool1{s}"
  pooling_param {{ pool: AVE kernel_size: 2 stride: 2 }} }}
layer {{ name: "conv2{s}" type: "Convolution" bottom: "pool1{s}" top: "conv2{s}"
  param {{ name: "w2" }} param {{ name: "b2" }}
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 2 dilation: 2 }} }}
layer {{ name: "fc1{s}" type: "Convolution" bottom: "conv2{s}" top: "fc1{s}"
  param {{ name: "w3" }} param {{ name: "b3" }}
  convolution_param {{ num_output: 3 kernel_size: 1 }} }}""" for s in ("", "05")) + """
layer { name: "fc1_05_interp" type: "Interp" bottom: "fc105" top: "fc1_05_interp"
  interp_param { height: 17 width: 17 } }
layer { name: "fusion" type: "Eltwise" bottom: "fc1" bottom: "fc1_05_interp" top: "fusion"
  eltwise_param { operation: MAX } }
"""


@pytest.mark.parametrize("target", [2, 8])
def test_multi_scale_inputs_convert_with_the_main_trunk(tmp_path, target):
    """DeepLab v2's multi-scale nets: a resized copy of the image (`data05`) feeds a trunk
    sharing the main one's weights; it changes stride with the main trunk, its resize
    stays, and the fusion Interp follows the main scores' new size."""
    (tmp_path / "msc.prototxt").write_text(MSC)
    net = load_prototxt(tmp_path / "msc.prototxt")
    new, report = dilate(net, output_stride=target, pooling="cover")
    after = windows(new)
    for name in ("conv1", "pool1", "conv2", "fc1"):
        assert after[name] == after[name + "05"], name
    assert after["conv2"] != windows(net)["conv2"]
    status = {c.layer: c.status for c in report.changes}
    assert "data05" not in status and status["fc1_05_interp"] == "ADAPTED"
    converted = analyse(new)
    assert converted.shapes["fc1_05_interp"] == converted.shapes["fc1"]
    assert not converted.warnings
    if target == 2:
        return
    # Coarser: the branch's scores are the original's on every other sample (OpenCV).
    pytest.importorskip("cv2")
    import numpy as np
    from surgery.engines.engine import get_engine

    save_prototxt(new, tmp_path / "coarse.prototxt")
    init_weights(net, tmp_path / "w.caffemodel")
    x = np.random.default_rng(0).normal(size=(1, 1, 65, 65)).astype(np.float32)
    want, got = get_engine("opencv").run_many(
        [(tmp_path / "msc.prototxt", tmp_path / "w.caffemodel", {"data": x}, ["fc105"]),
         (tmp_path / "coarse.prototxt", tmp_path / "w.caffemodel", {"data": x}, ["fc105"])])
    want, got = want["fc105"][:, :, ::2, ::2], got["fc105"]
    assert want.shape == got.shape and np.abs(want).max() > 0.1
    assert np.abs(want - got).max() <= 1e-5 * np.abs(want).max()


# ---------------------------------------------------------------------------
# DeepLab v2's published multi-scale nets (structure in tests/_deeplab.py)
# ---------------------------------------------------------------------------

SCALES = ("", "_res075", "_res05")


@pytest.mark.parametrize("phase", ["TEST", "TRAIN"])
@pytest.mark.parametrize("target,maps", [(16, (5, 4, 3)), (4, (17, 13, 9)), (8, (9, 7, 5))])
def test_deeplab_multi_scale_nets_convert_every_scale_together(phase, target, maps):
    """Issue 25: every branch trunk converts like the main one, the fusion Interps keep
    their factors (both sides move together), the label shrinks and the final zoom
    follow the stride; the train net's labels still fit the scores they meet. The net:
    DeepLab v2's published MSC layout (surgery/models/segmentation.py) at crop 65."""
    from surgery.models.segmentation import deeplab_v2_resnet

    net = deeplab_v2_resnet(50, width=0.0625, crop=65, phase=phase)
    new, report = dilate(net, output_stride=target)
    after = analyse(new, phase=phase)     # builds: every label fits its scores
    assert tuple(after.shapes[f"fc1_voc12{s}"][2] for s in SCALES) == maps
    assert after.shapes["fc1_voc12_res075_interp"] == after.shapes["fc1_voc12"]
    assert after.shapes["fc1_voc12_res05_interp"] == after.shapes["fc1_voc12"]
    old, got = windows(net, phase), windows(new, phase)
    for name in got:        # each branch copy gets its main layer's window
        for s in SCALES[1:]:
            if name.endswith(s):
                assert got[name] == got[name[:-len(s)]], name
    interp = {l.name: l.interp_param for l in new.layer if l.type == "Interp"}
    assert (interp["fc1_voc12_res075_interp"].zoom_factor,
            interp["fc1_voc12_res075_interp"].shrink_factor) == (4, 3)
    assert interp["fc1_voc12_res05_interp"].zoom_factor == 2
    assert interp["data_res075"].shrink_factor == 4 and interp["data_res05"].shrink_factor == 2
    if target == 8:
        assert got == old and not report.changes
        return
    status = {c.layer: c.status for c in report.changes}
    assert status["fc1_voc12_res075_interp"] == status["fc1_voc12_res05_interp"] == "ADAPTED"
    assert all(status[n] == "EXACT" for n in status if n.startswith(("res", "fc1_voc12_c")))
    if phase == "TEST":
        assert interp["fc1_interp"].zoom_factor == target
        assert after.shapes["fc1_interp"][2:] == (65, 65)
    else:
        assert interp["label_shrink"].shrink_factor == target
        assert interp["label_shrink16"].shrink_factor == 2 * target
        assert {status[n] for n in ("loss", "loss_res05", "accuracy")} == {"ADAPTED"}
    for s in SCALES:        # the trunks are exact at every scale
        assert f"fc1_voc12{s}" in report.exact_blobs


def test_a_deeplab_multi_scale_net_at_os8_refuses_32_naming_the_aspp_and_the_cut(tmp_path,
                                                                                  capsys):
    """Issue 25: rates 6/12/18/24 do not all divide by 4; the refusal names them and
    suggests cutting after the trunk, and following the suggestion works."""
    from surgery.io.prototxt import save_prototxt
    from surgery.models.segmentation import deeplab_v2_resnet

    path = tmp_path / "msc.prototxt"
    save_prototxt(deeplab_v2_resnet(50, width=0.0625, crop=65), path)
    assert main(["dilate", str(path), "-s", "32", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layer 'fc1_voc12_c0'" in err and "and 3 more" in err
    assert "--cut-after res5c" in err
    assert main(["dilate", str(path), "-s", "32", "--cut-after", "res5c", "--dry-run"]) == 0


def _test_net_of(train_text):
    """DeepLab v2's VGG-16 test net, made from its train net as the published pair
    differ: the image at crop 513 instead of the data layer, no label path or losses, and
    the scores zoomed back to the image."""
    start = train_text.index('layer {\n  name: "data"')
    end = train_text.index("layer {", start + 1)
    text = (train_text[:start] + 'layer { name: "input" type: "Input" top: "data" '
            'input_param { shape { dim: 1 dim: 3 dim: 513 dim: 513 } } }\n' + train_text[end:])
    cut = text.index("layer {\n  bottom: \"label\"")
    return text[:cut] + ('layer { name: "fc8_interp" type: "Interp" bottom: "fc8_${EXP}" '
                         'top: "fc8_interp" interp_param { zoom_factor: 8 } }\n')


@pytest.mark.parametrize("target", [16, 4])
def test_a_train_net_and_its_test_net_convert_alike(tmp_path, target):
    """Issue 25: where a stride comes back must not depend on the label path or the
    losses: DeepLab v2 VGG-16's train and test nets get the same rewrite of every layer
    they share (at 16, the stride comes back on pool5 in both, exactly)."""
    path = corpus_path("deeplab_v2/vgg16_train.prototxt")
    text = path.read_text().replace("${NUM_LABELS}", "21")     # the template, filled
    (tmp_path / "train.prototxt").write_text(text)
    (tmp_path / "test.prototxt").write_text(_test_net_of(text))
    train, test = (load_prototxt(tmp_path / f"{n}.prototxt") for n in ("train", "test"))
    pooling = "cover" if target < 8 else "strict"     # pool4/pool5 k3 s1 after a stride
    new_train, train_report = dilate(train, output_stride=target, pooling=pooling)
    new_test, test_report = dilate(test, output_stride=target, pooling=pooling)
    a, b = windows(new_train, "TRAIN"), windows(new_test)
    assert a == b and a != windows(train, "TRAIN")
    if target == 16:
        assert a["pool5"].stride == (2, 2) and a["pool4"].stride == (1, 1)
    for report in (train_report, test_report):
        status = {c.layer: c.status for c in report.changes}
        assert all(status[n] == "EXACT" for n in status if n.startswith(("fc6", "conv")))
        assert {c.layer: c.status for c in train_report.changes if c.layer in b} == \
            {c.layer: c.status for c in test_report.changes if c.layer in a}


def test_an_experiments_nets_convert_together_or_not_at_all(tmp_path, capsys):
    """Issue 25: `dilate TRAIN TEST -s N -o DIR/` writes both, converted alike; a layer
    they share that would get a different window in each (here the partial CEIL window
    one input size has and the other lacks) is a one-line refusal, and nothing is
    written."""
    path = corpus_path("deeplab_v2/vgg16_train.prototxt")
    text = path.read_text().replace("${NUM_LABELS}", "21")     # the template, filled
    train, test = tmp_path / "train.prototxt", tmp_path / "test.prototxt"
    train.write_text(text)
    test.write_text(_test_net_of(text))
    out = tmp_path / "os16"
    out.mkdir()
    assert main(["dilate", str(train), str(test), "-s", "16", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"== {train}" in text and f"== {test}" in text
    assert sorted(p.name for p in out.iterdir()) == ["test.prototxt", "train.prototxt"]
    windows_of = lambda p, phase: windows(load_prototxt(p), phase)
    assert windows_of(out / "train.prototxt", "TRAIN") == windows_of(out / "test.prototxt", "TEST")
    # Another input size puts a partial CEIL window on one net's pool only.
    odd = tmp_path / "odd.prototxt"
    odd.write_text(test.read_text().replace("dim: 513 dim: 513", "dim: 514 dim: 514"))
    again = tmp_path / "again"
    again.mkdir()
    assert main(["dilate", str(test), str(odd), "-s", "4", "--pooling", "cover",
                 "-o", str(again)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "would convert it differently" in err
    assert not any(again.iterdir())
