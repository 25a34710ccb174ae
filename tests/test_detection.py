"""Whole detection nets to a denser output stride (DC5): Faster R-CNN (VGG16, ZF), R-FCN
(ResNet-101) and SSD300, their heads adapted, proved in OpenCV DNN.

The numeric checks run both nets in OpenCV: the trunk is compared on the common grid
(verify), and each adapted setting is checked by what the engine computes with it: a
proposal from the same score cell lands on the same image box, an RoI pooled from the
same image box finds the same feature, the original priors come back on the cells that
hold the original features.
"""

import difflib
import re

import numpy as np
import pytest

from conftest import corpus_path
from _detection import faster_rcnn, rfcn, ssd300

from surgery import param_str
from surgery.analysis.analyse import analyse
from surgery.builder import NetBuilder
from surgery.cli import main
from surgery.errors import SurgeryError
from surgery.io.netfile import load_prototxt
from surgery.io.prototxt import save_prototxt
from surgery.layers import rule_for
from surgery.transform.dilate import dilate
from surgery.weights.initweights import init_weights

TOL = 1e-4


def _layer(net, name):
    return next(layer for layer in net.layer if layer.name == name)


# ---------------------------------------------------------------- param_str

@pytest.mark.parametrize("text, expected", [
    ("'feat_stride': 16", "'feat_stride': 8"),
    ("{'feat_stride': 16, 'scales': [8, 16, 32]}", "{'feat_stride': 8, 'scales': [8, 16, 32]}"),
    ('{"feat_stride" : 16 ,"ratios": [0.5, 1, 2]}', '{"feat_stride" : 8 ,"ratios": [0.5, 1, 2]}'),
    ("feat_stride: 16\nscales: [4, 8]", "feat_stride: 8\nscales: [4, 8]"),
])
def test_param_str_edits_only_the_stride(text, expected):
    assert param_str.replace(text, "feat_stride", 8) == expected
    assert param_str.read(expected)["feat_stride"] == 8


def test_param_str_without_a_number_for_the_key_is_refused():
    with pytest.raises(SurgeryError, match="no number"):
        param_str.replace("'num_classes': 21", "feat_stride", 8)
    with pytest.raises(SurgeryError, match="no number"):
        param_str.replace("'feat_stride': [16]", "feat_stride", 8)


# ---------------------------------------------------------------- registry facts

@pytest.mark.parametrize("dims, layout", [
    ([0, 2, -1, 0], "rows"), ([0, 18, -1, 0], "rows"), ([0, -1, 0, 0], "same"),
    ([0, 0, -1, 0], "same"), ([0, -1, 21], None), ([1, 18, 14, 14], None), ([-1, 21], None),
])
def test_a_reshape_keeps_the_grid_when_its_dims_leave_the_map_to_caffe(dims, layout):
    b = NetBuilder()
    layer = b.layer("Reshape", "r", ["x"], ["y"], reshape_param={"shape": {"dim": dims}})
    rule = rule_for("Reshape")
    assert rule.layout(layer) == layout
    assert rule.keeps_grid(layer) == (layout is not None)


def _python(module, cls, text):
    b = NetBuilder()
    return b.layer("Python", "p", ["a", "b", "c"], ["rois"],
                   python_param={"module": module, "layer": cls, "param_str": text})


@pytest.mark.parametrize("module, cls, text, known", [
    ("rpn.proposal_layer", "ProposalLayer", "'feat_stride': 16", True),
    ("lib.rpn.proposal_layer", "ProposalLayer", "{'feat_stride': 16, 'scales': [4]}", True),
    ("rpn.proposal_layer", "ProposalLayer", "'scales': [8, 16]", False),   # names no stride
    ("rpn.proposal_layer", "OtherLayer", "'feat_stride': 16", False),
    ("my.layer", "ProposalLayer", "'feat_stride': 16", False),
])
def test_python_layers_are_known_by_their_module(module, cls, text, known):
    assert rule_for("Python").known(_python(module, cls, text)) == known


def test_opencv_runs_the_proposal_layer_with_every_setting_given():
    layer = _python("rpn.proposal_layer", "ProposalLayer",
                    "{'feat_stride': 8, 'scales': [4, 8, 16, 32]}")
    layer.include.add().phase = 1
    assert rule_for("Python").for_engine(layer, "caffe") is None
    (new,) = rule_for("Python").for_engine(layer, "opencv")
    assert (new.type, new.name, list(new.bottom), list(new.top)) == \
        ("Proposal", "p", ["a", "b", "c"], ["rois"])
    assert new.include == layer.include
    p = new.proposal_param
    assert (p.feat_stride, p.base_size, p.min_size, list(p.ratio), list(p.scale)) == \
        (8, 16, 16, [0.5, 1.0, 2.0], [4.0, 8.0, 16.0, 32.0])
    assert (p.pre_nms_topn, p.post_nms_topn, round(p.nms_thresh, 6)) == (6000, 300, 0.7)
    for name in ("feat_stride", "base_size", "min_size", "pre_nms_topn", "post_nms_topn",
                 "nms_thresh"):
        assert p.HasField(name)       # written out: OpenCV reads some without defaults


def test_detection_shapes_keep_the_head_independent_of_the_box_count():
    a = analyse(faster_rcnn(width=0.25, fc_width=64))
    assert a.shapes["rois"] == (None, 5)
    assert a.shapes["pool5"] == (None, 128, 7, 7)
    assert a.param_shapes["fc6"] == [(64, 128 * 49), (64,)]
    train = analyse(faster_rcnn(train=True, width=0.25, fc_width=64),
                    input_shapes={"data": (1, 3, 224, 224)}, phase="TRAIN")
    assert train.shapes["rpn_labels"] == (1, 1, 9 * 14, 14)
    assert train.shapes["rpn_bbox_targets"] == (1, 36, 14, 14)
    assert train.shapes["bbox_targets"] == (None, 84)
    r = analyse(rfcn(width=0.125))
    assert r.shapes["psroipooled_cls_rois"] == (None, 21, 7, 7)
    assert r.shapes["cls_prob"] == (None, 21)


def test_psroi_pooling_needs_its_position_sensitive_channels():
    net = rfcn(width=0.125)
    _layer(net, "psroipooled_cls_rois").psroi_pooling_param.group_size = 3
    with pytest.raises(SurgeryError, match="output_dim x group_size"):
        analyse(net)


# ---------------------------------------------------------------- conversions

SETTINGS = {
    "vgg16": ["proposal: feat_stride 16 -> 8", "roi_pool5: spatial_scale 0.0625 -> 0.125"],
    "zf": ["proposal: feat_stride 16 -> 8", "roi_pool_conv5: spatial_scale 0.0625 -> 0.125"],
    "rfcn": ["proposal: feat_stride 16 -> 8",
             "psroipooled_cls_rois: spatial_scale 0.0625 -> 0.125",
             "psroipooled_loc_rois: spatial_scale 0.0625 -> 0.125"],
    "ssd": ["conv6_2_mbox_priorbox: step 32 -> 16, offset 0.5 -> 1",
            "conv7_2_mbox_priorbox: step 64 -> 16, offset 0.5 -> 2",
            "conv8_2_mbox_priorbox: step 100 -> 25, offset 0.5 -> 2",
            "conv9_2_mbox_priorbox: step 300 -> 75, offset 0.5 -> 2"],
}
NETS = {   # name: (net maker, the output stride its users pick, trunk blobs to verify)
    "vgg16": (lambda **kw: faster_rcnn(**kw), 8, ["conv5_3"]),
    "zf": (lambda **kw: faster_rcnn("zf", **kw), 8, ["conv5"]),
    "rfcn": (lambda **kw: rfcn(**kw), 8, ["res4b22", "res5c"]),
    "ssd": (lambda **kw: ssd300(**kw), 16, ["fc7", "conv7_2", "conv8_2"]),
}


def _small(name, **kw):
    """The net at a width that runs in a second."""
    options = {"width": 0.125} if name in ("rfcn", "ssd") else {"width": 0.25, "fc_width": 64}
    return NETS[name][0](**options, **kw)


@pytest.mark.parametrize("name", list(NETS))
def test_the_summary_lists_every_adapted_setting_with_its_old_and_new_value(tmp_path, capsys, name):
    path = tmp_path / "net.prototxt"
    save_prototxt(_small(name), path)
    stride = NETS[name][1]
    assert main(["dilate", str(path), "-s", str(stride), "-o", str(tmp_path / "out.prototxt")]) == 0
    out = capsys.readouterr().out
    for expected in SETTINGS[name]:
        layer, setting = expected.split(": ")
        line = next(l for l in out.splitlines() if l.strip().startswith(layer + " "))
        assert "ADAPTED" in line and setting in line, line
    if name != "ssd":
        assert "anchor density changes" in out
    converted = load_prototxt(tmp_path / "out.prototxt")
    _, report = dilate(load_prototxt(path), output_stride=stride)
    adapted = {c.layer for c in report.changes if c.status == "ADAPTED"}
    assert {e.split(": ")[0] for e in SETTINGS[name]} <= adapted
    assert not [c for c in report.changes if c.status == "APPROXIMATE"]   # the trunk is exact
    if name != "ssd":
        text = _layer(converted, "proposal").python_param.param_str
        assert param_str.read(text) == {"feat_stride": 8}
    # The per-RoI head is left alone: fc6 on the pooled bins keeps its weights.
    for layer in ("fc6", "fc7", "cls_score", "ave_cls_score_rois", "detection_out"):
        if any(l.name == layer for l in converted.layer):
            assert _layer(converted, layer) == _layer(load_prototxt(path), layer)


@pytest.mark.parametrize("name", ["vgg16", "rfcn", "ssd"])
def test_train_nets_convert_alike_with_their_test_nets(name):
    stride = NETS[name][1]
    size = 300 if name == "ssd" else 224
    test_net, train_net = _small(name), _small(name, train=True)
    test_new, _ = dilate(test_net, output_stride=stride)
    train_new, _ = dilate(train_net, output_stride=stride,
                          input_shapes={"data": (1, 3, size, size)})
    before = {l.name: l for l in test_net.layer}
    after_test = {l.name: l for l in test_new.layer}
    shared = [l for l in train_net.layer if l.name in before and before[l.name] == l]
    assert len(shared) > 20
    changed = 0
    for layer in train_new.layer:
        if layer.name in before and before[layer.name] == next(
                l for l in train_net.layer if l.name == layer.name):
            assert layer == after_test[layer.name], layer.name
            changed += layer != before[layer.name]
    assert changed >= 3
    if name != "ssd":   # the anchor targets follow the same stride as the proposals
        text = _layer(train_new, "rpn-data").python_param.param_str
        assert param_str.read(text) == {"feat_stride": 8}


@pytest.mark.parametrize("type_, params, setting", [
    ("Proposal", {"proposal_param": {"base_size": 16}}, "feat_stride"),  # OpenCV's, 16 by default
    ("ROIAlign", {"roi_align_param": {"pooled_h": 7, "pooled_w": 7, "spatial_scale": 0.0625}},
     "spatial_scale"),
])
def test_other_implementations_of_the_head_follow_the_stride_too(type_, params, setting):
    net = faster_rcnn(width=0.25, fc_width=64)
    target = "proposal" if type_ == "Proposal" else "roi_pool5"
    for layer in net.layer:
        if layer.name == target:
            layer.type = type_
            layer.ClearField("python_param")
            layer.ClearField("roi_pooling_param")
            for block, values in params.items():
                for field, value in values.items():
                    setattr(getattr(layer, block), field, value)
    new, report = dilate(net, output_stride=8)
    block = next(iter(params))
    value = getattr(getattr(_layer(new, target), block), setting)
    assert value == (8 if setting == "feat_stride" else 0.125)
    assert {c.layer: c.status for c in report.changes}[target] == "ADAPTED"


def test_an_escaped_param_str_keeps_its_escapes_byte_for_byte(tmp_path):
    """Re-serialised copies write `param_str: "\\'feat_stride\\': 16"`: only the number
    changes."""
    path = tmp_path / "train.prototxt"
    save_prototxt(_small("vgg16", train=True), path)
    text = path.read_text()
    assert text.count(r'param_str: "\'feat_stride\': 16"') == 2
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(path), "-s", "8", "--input-shape", "data=1,3,224,224",
                 "-o", str(out)]) == 0
    diff = list(difflib.ndiff(text.splitlines(), out.read_text().splitlines()))
    assert [l for l in diff if "param_str" in l and l[0] in "+-"] == [
        r'-     param_str: "\'feat_stride\': 16"', r'+     param_str: "\'feat_stride\': 8"'] * 2


def test_a_train_net_whose_image_size_is_unknown_says_what_it_needs(tmp_path, capsys):
    path = tmp_path / "train.prototxt"
    save_prototxt(_small("vgg16", train=True), path)
    assert main(["dilate", str(path), "-s", "8", "-o", str(tmp_path / "o.prototxt")]) == 0
    assert "give --input-shape" in capsys.readouterr().out    # pool4's CEIL window unknown


def test_zf_from_the_corpus_converts_as_a_minimal_edit(tmp_path):
    source = corpus_path("faster_rcnn", "ZF_test.prototxt")
    out = tmp_path / "zf8.prototxt"
    assert main(["dilate", str(source), "-s", "8", "-o", str(out)]) == 0
    old, new = source.read_text().splitlines(), out.read_text().splitlines()
    changed = [l for l in difflib.ndiff(old, new) if l[0] in "+-"]
    assert '+     param_str: "\'feat_stride\': 8"' in changed
    assert "+     spatial_scale: 0.125 # 1/16" in changed     # the file's own comment stays
    assert len(changed) == 2 * 7 + 4   # pool2's stride, 4 pads, param_str, spatial_scale; 4 dilations


def test_a_flattened_map_read_by_a_fully_connected_layer_stops_the_rewrite():
    b = NetBuilder("flat")
    b.input("data", (1, 3, 32, 32))
    b.conv("conv1", "data", num_output=4, kernel=3, stride=2, pad=1)
    b.conv("conv2", "conv1", num_output=4, kernel=3, stride=2, pad=1)
    b.layer("Flatten", "flat", ["conv2"], ["flat"])
    b.fc("fc", "flat", num_output=10)
    with pytest.raises(SurgeryError, match="its weights are sized for what it reads") as info:
        dilate(b.net, output_stride=2)
    assert str(info.value).startswith("layer 'fc': its weights are sized")


def test_coarsening_brings_the_original_back():
    net = _small("vgg16")
    dense, _ = dilate(net, output_stride=8)
    back, report = dilate(dense, output_stride=16)
    for layer in back.layer:
        original = _layer(net, layer.name)
        if layer.type == "Convolution":
            assert list(layer.convolution_param.dilation) in ([], [1])
            layer.convolution_param.ClearField("dilation")
            original.convolution_param.ClearField("dilation")
        assert layer == original, layer.name


# ---------------------------------------------------------------- OpenCV, end to end

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{name: (original, converted, weights)} paths, weights from init-weights."""
    pytest.importorskip("cv2")
    folder = tmp_path_factory.mktemp("detection")
    out = {}
    for name, (_, stride, _) in NETS.items():
        net = _small(name)
        orig, conv, model = (folder / f"{name}{s}" for s in (".prototxt", "-conv.prototxt",
                                                             ".caffemodel"))
        save_prototxt(net, orig)
        save_prototxt(dilate(net, output_stride=stride)[0], conv)
        init_weights(net, model, seed=3)
        out[name] = orig, conv, model
    return out


HEADS = {"vgg16": ["cls_prob", "bbox_pred"], "zf": ["cls_prob", "bbox_pred"],
         "rfcn": ["cls_prob", "bbox_pred"], "ssd": ["detection_out"]}


@pytest.mark.parametrize("name", list(NETS))
def test_converted_nets_run_end_to_end_in_opencv_and_the_trunk_verifies(converted, name):
    from surgery.engines.verify import verify

    orig, conv, model = converted[name]
    trunk = NETS[name][2]
    report = verify(orig, conv, model, blobs=trunk + HEADS[name], engine="opencv", tol=TOL)
    assert report.passed, report.format_text()
    results = {r.blob: r for r in report.blobs}
    for blob in trunk:
        assert results[blob].status == "ok" and results[blob].max_abs_original > 0
    assert results[trunk[-1]].factor[0] == (4 if name == "ssd" else 2)
    for blob in HEADS[name]:      # computed, through the adapted head, and not claimed exact
        assert results[blob].approximate
    if name != "ssd":
        assert results["cls_prob"].compared == (300, 21)


def _run(path, model, inputs, blobs):
    """Run the net in OpenCV as verify does: prepared for it first (engines/prepare.py
    swaps py-faster-rcnn's Python proposal layer for OpenCV's Proposal)."""
    from surgery.engines.engine import get_engine
    from surgery.engines.prepare import prepare

    prepared = prepare(analyse(load_prototxt(path)), "opencv")
    return get_engine("opencv").run(prepared.net, str(model), inputs, blobs)


def _proposal_net(feat_stride, size):
    """The RPN's proposal step alone, its score map and deltas given as inputs."""
    b = NetBuilder("proposal")
    b.input("scores", (1, 18, size, size))
    b.input("deltas", (1, 36, size, size))
    b.input("im_info", (1, 3))
    b.layer("Python", "proposal", ["scores", "deltas", "im_info"], ["rois"],
            python_param={"module": "rpn.proposal_layer", "layer": "ProposalLayer",
                          "param_str": f"'feat_stride': {feat_stride}"})
    return b.net


def test_a_proposal_from_the_same_cell_lands_on_the_same_image_box(tmp_path, converted):
    """The converted net holds the original's score cell (i, j) at (2i, 2j); with the new
    feat_stride, OpenCV's Proposal (what verify swaps py-faster-rcnn's layer for) puts
    the box of that cell where the original did. With the old feat_stride it would not."""
    conv = load_prototxt(converted["vgg16"][1])
    stride = param_str.read(_layer(conv, "proposal").python_param.param_str)["feat_stride"]
    model = tmp_path / "none.caffemodel"
    init_weights(_proposal_net(16, 4), model)
    boxes = {}
    for name, feat_stride, size, cell in (("orig", 16, 14, (5, 9)), ("conv", stride, 27, (10, 18)),
                                          ("wrong", 16, 27, (10, 18))):
        scores = np.zeros((1, 18, size, size), np.float32)
        scores[0, 9 + 4, cell[0], cell[1]] = 1.0          # anchor 4's foreground
        inputs = {"scores": scores, "deltas": np.zeros((1, 36, size, size), np.float32),
                  "im_info": np.array([[224, 224, 1]], np.float32)}
        path = tmp_path / f"{name}.prototxt"
        save_prototxt(_proposal_net(feat_stride, size), path)
        boxes[name] = _run(path, model, inputs, ["rois"])["rois"].reshape(-1, 5)[0]
    assert np.allclose(boxes["conv"], boxes["orig"]), boxes
    assert not np.allclose(boxes["wrong"], boxes["orig"])


def _roi_net(scale, size):
    b = NetBuilder("roi")
    b.input("map", (1, 1, size, size))
    b.input("rois", (2, 5))
    b.layer("ROIPooling", "pool", ["map", "rois"], ["pool"],
            roi_pooling_param={"pooled_h": 3, "pooled_w": 3, "spatial_scale": scale})
    return b.net


def test_an_roi_pooled_from_the_same_image_box_finds_the_same_feature(tmp_path, converted):
    conv = load_prototxt(converted["vgg16"][1])
    scale = _layer(conv, "roi_pool5").roi_pooling_param.spatial_scale
    model = tmp_path / "none.caffemodel"
    init_weights(_roi_net(1.0, 4), model)
    rois = np.array([[0, 96, 64, 143, 111], [0, 0, 0, 47, 47]], np.float32)   # image pixels
    found = {}
    for name, s, size, cell in (("orig", 0.0625, 14, (5, 7)), ("conv", scale, 27, (10, 14)),
                                ("wrong", 0.0625, 27, (10, 14))):
        fmap = np.zeros((1, 1, size, size), np.float32)
        fmap[0, 0, cell[0], cell[1]] = 5.0      # the feature at image (80..95, 112..127)
        path = tmp_path / f"{name}.prototxt"
        save_prototxt(_roi_net(s, size), path)
        pooled = _run(path, model, {"map": fmap, "rois": rois}, ["pool"])["pool"]
        found[name] = pooled.reshape(2, -1).max(axis=1)
    assert found["orig"].tolist() == [5.0, 0.0]
    assert found["conv"].tolist() == found["orig"].tolist()
    assert found["wrong"].tolist() != found["orig"].tolist()


def test_the_original_priors_come_back_on_the_cells_of_the_original_features(converted):
    orig, conv, model = converted["ssd"]
    net, new = load_prototxt(orig), load_prototxt(conv)
    data = np.random.default_rng(0).standard_normal((1, 3, 300, 300)).astype(np.float32)
    names = [f"{s}_mbox_priorbox" for s in ("conv6_2", "conv7_2", "conv8_2", "conv9_2")]
    a = _run(orig, model, {"data": data}, names)
    b = _run(conv, model, {"data": data}, names)
    before, after = analyse(net), analyse(new)
    for name in names:
        source = _layer(net, name).bottom[0]
        (h, w), (h2, w2) = before.shapes[source][2:], after.shapes[source][2:]
        f = before.geometry[source].stride.h // after.geometry[source].stride.h
        pa = a[name][0, 0].reshape(h, w, -1, 4)
        pb = b[name][0, 0].reshape(h2, w2, -1, 4)
        assert np.allclose(pb[::f, ::f][:h, :w], pa, atol=1e-6), name
        assert len(np.unique(pb[:, :, 0, 0])) > len(np.unique(pa[:, :, 0, 0]))   # denser


def test_init_weights_check_and_inspect_work_on_detection_nets(tmp_path, capsys):
    path = tmp_path / "rfcn.prototxt"
    save_prototxt(_small("rfcn"), path)
    model = tmp_path / "rfcn.caffemodel"
    assert main(["init-weights", str(path), "-o", str(model)]) == 0
    assert main(["check", str(path), str(model)]) == 0
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"psroipooled_cls_rois\s+PSROIPooling\s+psroipooled_cls_rois\s+\?x21x7x7", out)
