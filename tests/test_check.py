"""Static weight-loading check (Caffe's CopyTrainedLayersFrom rules) and the weights/check CLI."""

import json

import numpy as np
import pytest

from surgery.analysis import check
from surgery.cli import main
from surgery.io import caffemodel as cm
from conftest import write_file

RNG = np.random.default_rng(7)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def summary_of(tmp_path, layers, *, legacy=False, name="m.caffemodel"):
    path = tmp_path / name
    cm.write_caffemodel(path, layers, legacy=legacy)
    return cm.read_caffemodel(path)


def statuses(report):
    return {row.name: row.status for row in report.layers}


def test_matching_weights_load(tmp_path):
    summary = summary_of(tmp_path, [
        dict(name="conv1", type="Convolution", blobs=[f32(4, 3, 3, 3), f32(4)]),
        dict(name="relu1", type="ReLU"),
    ])
    report = check.compare({"data": [], "conv1": [(4, 3, 3, 3), (4,)], "relu1": []}, summary)
    assert report.ok
    assert statuses(report) == {"conv1": "ok"}  # nothing to load into relu1: no row
    assert [b.ok for b in report.layers[0].blobs] == [True, True]


def test_shape_mismatch_names_both_shapes(tmp_path):
    summary = summary_of(tmp_path, [dict(name="fc6", type="InnerProduct",
                                         blobs=[f32(8, 20), f32(8)])])
    report = check.compare({"fc6": [(8, 45), (8,)]}, summary)
    assert not report.ok
    row = report.layers[0]
    assert row.status == check.MISMATCH
    assert [b.ok for b in row.blobs] == [False, True]
    assert "8x20" in row.message and "8x45" in row.message and "blob 0" in row.message


@pytest.mark.parametrize("file_blobs, expected", [
    (2, [(4, 3, 3, 3)]),            # bias in the file, bias_term: false in the net
    (1, [(4, 3, 3, 3), (4,)]),      # the other way round
    (1, []),                        # a layer without params still may not receive blobs
])
def test_blob_count_must_match(tmp_path, file_blobs, expected):
    blobs = [f32(4, 3, 3, 3), f32(4)][:file_blobs]
    summary = summary_of(tmp_path, [dict(name="conv", type="Convolution", blobs=blobs)])
    report = check.compare({"conv": expected}, summary)
    assert statuses(report) == {"conv": check.MISMATCH}
    assert f"file has {file_blobs} blobs" in report.layers[0].message
    assert not report.ok


@pytest.mark.parametrize("legacy_array_shape, expected, ok", [
    ((1, 1, 10, 72), (10, 72), True),      # old InnerProduct weight: dims counted from the end
    ((10,), (1, 1, 1, 10), True),
    ((64, 3, 7, 7), (64, 3, 7, 7), True),
    ((1, 1, 1, 10), (10,), True),          # old bias
    ((10, 72, 1, 1), (10, 72), False),     # same numbers, wrong end
    ((1, 1, 10, 72), (1, 10, 72, 1, 1), False),  # more than 4 axes never matches legacy dims
    ((1, 1, 10, 72), (10, 71), False),
])
def test_legacy_dims_follow_caffes_shape_equals(tmp_path, legacy_array_shape, expected, ok):
    blob = cm.BlobSpec(f32(*legacy_array_shape), legacy=True)
    summary = summary_of(tmp_path, [dict(name="ip", type="InnerProduct", blobs=[blob])])
    report = check.compare({"ip": [expected]}, summary)
    assert report.ok is ok
    if not ok:
        assert "legacy dims" in report.layers[0].message


def test_new_style_shapes_compare_exactly(tmp_path):
    """Only legacy dims get the pad-with-ones treatment; a `shape` must match axis for axis."""
    summary = summary_of(tmp_path, [dict(name="ip", type="InnerProduct", blobs=[f32(1, 1, 10, 72)])])
    assert not check.compare({"ip": [(10, 72)]}, summary).ok
    assert check.compare({"ip": [(1, 1, 10, 72)]}, summary).ok


def test_value_count_must_fit_the_shape(tmp_path):
    caffe_pb2 = pytest.importorskip("surgery.caffe_pb2")
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="scale", type="Scale")
    blob = layer.blobs.add()
    blob.shape.dim.append(4)
    blob.data.extend([1.0, 2.0, 3.0])
    path = tmp_path / "short.caffemodel"
    path.write_bytes(net.SerializeToString())
    report = check.compare({"scale": [(4,)]}, cm.read_caffemodel(path))
    assert not report.ok and "holds 3 values" in report.layers[0].message


def test_unused_and_not_initialised(tmp_path):
    """A renamed fc6 (as in fc->conv surgery): old weights unused, new layer uninitialised."""
    summary = summary_of(tmp_path, [
        dict(name="conv1", type="Convolution", blobs=[f32(4, 3, 3, 3), f32(4)]),
        dict(name="fc6", type="InnerProduct", blobs=[f32(8, 36), f32(8)]),
        dict(name="loss", type="SoftmaxWithLoss"),
    ])
    expected = {"data": [], "conv1": [(4, 3, 3, 3), (4,)], "fc6_conv": [(8, 4, 3, 3), (8,)],
                "prob": []}
    report = check.compare(expected, summary)
    assert statuses(report) == {"conv1": "ok", "fc6": "unused", "fc6_conv": "not_initialised"}
    assert not report.ok
    counts = report.counts()
    assert counts["unused"] == 1 and counts["not_initialised"] == 1
    # Unused weights alone never fail the check: Caffe ignores them.
    expected.pop("fc6_conv")
    assert check.compare(expected, summary).ok


def test_unknown_shapes_are_reported_not_guessed(tmp_path):
    summary = summary_of(tmp_path, [dict(name="fc", type="InnerProduct", blobs=[f32(3, 5)])])
    report = check.compare({"fc": None, "fc2": None, "relu": []}, summary)
    assert statuses(report) == {"fc": "unknown", "fc2": "unknown"}
    assert not report.ok                      # unknown is never success
    assert "cannot tell" in check.format_report(report).splitlines()[-1]
    report = check.compare({"fc": [None]}, summary)
    assert statuses(report) == {"fc": "unknown"} and report.layers[0].blobs[0].ok is None


def test_v1_weights_are_matched_by_name(tmp_path):
    summary = summary_of(tmp_path, [
        dict(name="conv1", type="Convolution",
             blobs=[cm.BlobSpec(f32(4, 3, 3, 3), legacy=True), cm.BlobSpec(f32(4), legacy=True)]),
    ], legacy=True)
    report = check.compare({"conv1": [(4, 3, 3, 3), (4,)]}, summary)
    assert report.ok and report.layers[0].type == "Convolution"


def test_report_table_and_json(tmp_path):
    summary = summary_of(tmp_path, [dict(name="a", type="Scale", blobs=[f32(3)]),
                                    dict(name="b", type="Scale", blobs=[f32(2)])])
    report = check.compare({"a": [(3,)], "b": [(5,)], "c": [(1,)]}, summary)
    text = check.format_report(report)
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "status", "details"]
    assert any(l.startswith("b") and "MISMATCH" in l and "5" in l for l in lines)
    assert any(l.startswith("c") and "NOT INITIALISED" in l for l in lines)
    assert lines[-1].endswith("weights do NOT load")
    assert "a " not in check.format_report(report, show_ok=False).splitlines()[1]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["counts"]["mismatch"] == 1
    assert data["layers"][1]["blobs"][0] == {"index": 0, "file": [2], "expected": [5],
                                             "ok": False, "reason": data["layers"][1]["blobs"][0]["reason"]}


# ---------------------------------------------------------------- CLI


def test_weights_command_table_and_json(tmp_path, capsys):
    path = tmp_path / "w.caffemodel"
    cm.write_caffemodel(path, [dict(name="conv1", type="Convolution", blobs=[f32(4, 3, 3, 3), f32(4)]),
                               dict(name="relu1", type="ReLU"),
                               dict(name="ip", type="InnerProduct",
                                    blobs=[cm.BlobSpec(f32(10, 4), legacy=True)])])
    assert main(["weights", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4x3x3x3, 4" in out and "1x1x10x4" in out
    assert out.strip().splitlines()[-1] == "3 layers (2 with blobs), 152 parameters"
    assert main(["weights", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {"layers": [{"name": "conv1", "type": "Convolution", "blobs": [[4, 3, 3, 3], [4]]},
                               {"name": "relu1", "type": "ReLU", "blobs": []},
                               {"name": "ip", "type": "InnerProduct", "blobs": [[1, 1, 10, 4]]}],
                    "params": 152}


def test_weights_command_bad_file_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "junk.caffemodel"
    path.write_bytes(b"\x0a\xff\xff\xff\x0f")
    assert main(["weights", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "byte" in err
    assert main(["weights", str(tmp_path / "absent.caffemodel")]) == 2


NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
        inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss"
        include { phase: TRAIN } }
"""


@pytest.fixture
def tiny_net(tmp_path):
    pytest.importorskip("surgery.analysis.analyse")
    return write_file(tmp_path, "net.prototxt", NET)


def test_check_command_end_to_end(tmp_path, tiny_net, capsys):
    good = tmp_path / "good.caffemodel"
    # conv1 on 3x8x8 gives 4x6x6, so fc's weight is 10 x 144.
    cm.write_caffemodel(good, [dict(name="conv1", type="Convolution", blobs=[f32(4, 3, 3, 3), f32(4)]),
                               dict(name="fc", type="InnerProduct", blobs=[f32(10, 144), f32(10)]),
                               dict(name="old_head", type="InnerProduct", blobs=[f32(2, 2)])])
    assert main(["check", str(tiny_net), str(good)]) == 0
    out = capsys.readouterr().out
    assert "weights load" in out and "unused weights" in out

    bad = tmp_path / "bad.caffemodel"
    cm.transform(good, bad, rename={"conv1": "conv1_old"},
                 replace={"fc": [f32(10, 100), f32(10)]})
    assert main(["check", str(tiny_net), str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in data["layers"]}
    assert rows["conv1"]["status"] == "not_initialised"
    assert rows["conv1_old"]["status"] == "unused"
    assert rows["fc"]["status"] == "mismatch"
    assert rows["fc"]["blobs"][0]["expected"] == [10, 144] and rows["fc"]["blobs"][0]["file"] == [10, 100]


def test_check_command_input_shape_changes_the_expectation(tmp_path, tiny_net, capsys):
    model = tmp_path / "m.caffemodel"
    # At 10x10 input, conv1 gives 4x8x8 = 256 inputs to fc.
    cm.write_caffemodel(model, [dict(name="conv1", type="Convolution", blobs=[f32(4, 3, 3, 3), f32(4)]),
                                dict(name="fc", type="InnerProduct", blobs=[f32(10, 256), f32(10)])])
    assert main(["check", str(tiny_net), str(model)]) == 1
    capsys.readouterr()
    assert main(["check", str(tiny_net), str(model), "--input-shape", "data=1,3,10,10"]) == 0
    capsys.readouterr()
    assert main(["check", str(tiny_net), str(model), "--input-shape", "data=1,x"]) == 2
    assert "--input-shape" in capsys.readouterr().err


UNSIZED = ('layer { name: "data" type: "Data" top: "data" data_param { source: "x" batch_size: 1 } }\n'
           'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
           'convolution_param { num_output: 4 kernel_size: 3 } }\n'
           'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }\n'
           'layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" '
           'inner_product_param { num_output: 10 } }\n')


def test_layers_with_unknown_input_sizes_still_need_weights(tmp_path, capsys):
    """An InnerProduct always has params: unknown sizes make its shapes unknown, not its
    existence, so missing weights are a failure and parameter-free layers get no row."""
    net = tmp_path / "net.prototxt"
    net.write_text(UNSIZED)
    model = tmp_path / "no_layers.caffemodel"
    cm.write_caffemodel(model, [], name="unsized")
    assert main(["check", str(net), str(model), "--json"]) == 1
    rows = {r["name"]: r["status"] for r in json.loads(capsys.readouterr().out)["layers"]}
    assert rows == {"conv": "not_initialised", "fc": "not_initialised"}


def test_init_weights_refuses_unknown_sizes_and_writes_nothing(tmp_path, capsys):
    net = tmp_path / "net.prototxt"
    net.write_text(UNSIZED)
    out = tmp_path / "w.caffemodel"
    assert main(["init-weights", str(net), "-o", str(out)]) == 2
    assert "--input-shape" in capsys.readouterr().err and not out.exists()
    assert main(["init-weights", str(net), "-o", str(out), "--input-shape", "data=1,3,8,8"]) == 0
    assert out.exists()


# ---------------------------------------------------------------- unknown is not success

STEM = """name: "stem"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "bn_conv1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale_conv1" type: "Scale" bottom: "conv1" top: "conv1"
        scale_param { bias_term: true } }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
        inner_product_param { num_output: 3 } }
"""
MISSPELT = STEM.replace('type: "Convolution"', 'type: "Convolutoin"')


@pytest.fixture
def stem(tmp_path, capsys):
    good, bad = tmp_path / "good.prototxt", tmp_path / "bad.prototxt"
    good.write_text(STEM)
    bad.write_text(MISSPELT)
    model = tmp_path / "good.caffemodel"
    assert main(["init-weights", str(good), "-o", str(model)]) == 0
    capsys.readouterr()
    return good, bad, model


def test_check_of_a_misspelt_type_fails_and_names_it(stem, capsys):
    good, bad, model = stem
    assert main(["check", str(good), str(model)]) == 0
    capsys.readouterr()
    assert main(["check", str(bad), str(model)]) == 1
    out = capsys.readouterr().out
    last = out.splitlines()[-1]
    assert "weights load" not in last.replace("whether the weights load", "")
    assert "cannot tell" in last and "conv1" in last and "Convolutoin" in last
    assert "input shape missing" not in out
    assert main(["check", str(bad), str(model), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    rows = {r["name"]: r for r in data["layers"]}
    assert rows["conv1"]["status"] == "unknown" and 'did you mean "Convolution"' in \
        rows["conv1"]["message"]
    assert "layer 'conv1'" in rows["fc"]["message"]     # downstream: blamed on conv1


def test_check_of_an_unsized_data_layer_fails_and_says_why(tmp_path, capsys):
    net = tmp_path / "net.prototxt"
    net.write_text(UNSIZED)
    model = tmp_path / "m.caffemodel"
    cm.write_caffemodel(model, [dict(name="conv", type="Convolution", blobs=[f32(4, 3, 3, 3), f32(4)]),
                                dict(name="fc", type="InnerProduct", blobs=[f32(10, 144), f32(10)])])
    assert main(["check", str(net), str(model)]) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert "cannot tell" in last and "layer 'data'" in last and "--input-shape" in last
    assert main(["check", str(net), str(model), "--input-shape", "data=1,3,8,8"]) == 0


def test_init_weights_blames_the_layer_where_inference_stopped(stem, capsys, tmp_path):
    _, bad, _ = stem
    out = tmp_path / "w.caffemodel"
    assert main(["init-weights", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "layer 'conv1'" in err and "Convolutoin" in err and "bn_conv1" not in err
    assert not out.exists()


def test_dilate_weights_check_does_not_pass_unknowns(capsys, tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(UNSIZED.replace("kernel_size: 3 }", "kernel_size: 3 stride: 2 }")
                   .split('layer { name: "fc"')[0])
    model = tmp_path / "m.caffemodel"
    cm.write_caffemodel(model, [dict(name="conv", type="Convolution",
                                     blobs=[f32(4, 3, 3, 3), f32(4)])])
    out = tmp_path / "o.prototxt"
    code = main(["dilate", str(net), "-s", "1", "-o", str(out), "--weights", str(model)])
    assert code == 1 and not out.exists()
    assert "cannot tell" in capsys.readouterr().out
    code = main(["dilate", str(net), "-s", "1", "-o", str(out), "--weights", str(model),
                 "--input-shape", "data=1,3,8,8"])
    assert code == 0 and out.exists()


def test_unknown_rows_say_why(tmp_path, capsys):
    """A layer whose shapes the net leaves unknown says where that comes from (issue 18)."""
    net = tmp_path / "train_val.prototxt"
    net.write_text('name: "tv"\n'
                   'layer { name: "data" type: "Data" top: "data" data_param { source: "db" } }\n'
                   'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"\n'
                   '        convolution_param { num_output: 4 kernel_size: 3 } }\n')
    model = tmp_path / "w.caffemodel"
    cm.write_caffemodel(str(model), [dict(name="conv1", type="Convolution",
                                          blobs=[f32(4, 3, 3, 3), f32(4)])])
    assert main(["check", str(net), str(model), "--json"]) == 1      # unknown is not success (issue 11)
    row = json.loads(capsys.readouterr().out)["layers"][0]
    assert row["status"] == "unknown" and "layer 'data'" in row["message"]
    assert all(b["expected"] is None and "--input-shape" in b["reason"] for b in row["blobs"])
