"""`caffe-surgery inspect`: table and JSON output, input-shape parsing, exit codes."""

import json

import pytest

from surgery.analysis.analyse import parse_input_shapes
from surgery.cli import main
from surgery.errors import SurgeryError

from conftest import corpus_path, write_file

NET = """name: "tiny"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 4 kernel_h: 1 kernel_w: 3 pad_w: 2 dilation: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc" inner_product_param { num_output: 5 } }
"""


@pytest.fixture
def tiny(tmp_path):
    return write_file(tmp_path, "tiny.prototxt", NET)


def test_parse_input_shapes():
    assert parse_input_shapes(["data=1,3,224,224", "im_info = 1,3"]) == {
        "data": (1, 3, 224, 224), "im_info": (1, 3)}
    assert parse_input_shapes([]) == {}
    for bad in ("data", "data=", "=1,2", "data=1,,2", "data=1,3,x", "data=0,3,2,2"):
        with pytest.raises(SurgeryError):
            parse_input_shapes([bad])
    with pytest.raises(SurgeryError, match="twice"):
        parse_input_shapes(["a=1", "a=2"])


def test_table(tiny, capsys):
    assert main(["inspect", str(tiny)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert "1x8x8x8" in lines["conv1"] and "k3 s2 p1" in lines["conv1"]
    # pool: ceil((8-3)/2)+1 = 4; stride 4, rf 3 + 2*2 = 7
    assert lines["pool1"].split()[-3:] == ["1x8x4x4", "4", "7"]
    # conv2 kernel 1x3 dilation 2 pad_w 2: width 4+4-5+1 = 4; rf h 7, w 7 + 4*4 = 23
    assert "k1x3 s1 p0x2 d2" in lines["conv2"]
    assert lines["conv2"].split()[-3:] == ["1x4x4x4", "4", "7x23"]
    assert "params: " in out and "output stride 4, receptive field 7x23 at blob 'conv2'" in out


def test_json(tiny, capsys):
    assert main(["inspect", str(tiny), "--json", "--input-shape", "data=2,3,32,32"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["blobs"]["conv1"] == {"shape": [2, 8, 16, 16], "stride": [2, 2], "rf": [3, 3],
                                     "offset": [0, 0], "unknown_from": []}
    assert doc["blobs"]["fc"]["shape"] == [2, 5] and doc["blobs"]["fc"]["rf"] is None
    layers = {layer["name"]: layer for layer in doc["layers"]}
    assert layers["conv1"]["param_shapes"] == [[8, 3, 3, 3], [8]]
    assert layers["conv1"]["flops"] == 2 * 8 * 16 * 16 * 27
    assert layers["fc"]["param_shapes"] == [[5, 4 * 8 * 8], [5]]
    assert layers["relu1"]["bottom"] == ["conv1"] and layers["relu1"]["top"] == ["conv1"]
    assert layers["conv2"]["window"]["dilation"] == [2, 2]
    assert doc["warnings"] == []
    assert doc["totals"]["params"] == sum(layer["params"] for layer in doc["layers"])


def test_bad_input_is_exit_2(tiny, tmp_path, capsys):
    assert main(["inspect", str(tiny), "--input-shape", "nothere=1,3,8,8"]) == 2
    err = capsys.readouterr().err
    assert "nothere" in err and err.count("\n") == 1
    assert main(["inspect", str(tiny), "--input-shape", "data=1,3"]) == 2   # conv on a 2-D blob
    capsys.readouterr()
    bad = tmp_path / "bad.prototxt"
    bad.write_text(NET.replace('bottom: "pool1" top: "conv2"', 'bottom: "poolX" top: "conv2"'))
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "layer 'conv2'" in err and "poolX" in err and "Traceback" not in err


def test_unknown_layer_is_a_warning_not_an_error(tiny, tmp_path, capsys):
    net = tmp_path / "custom.prototxt"
    net.write_text(NET.replace('type: "InnerProduct"', 'type: "MyLayer"'))
    assert main(["inspect", str(net), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["blobs"]["fc"]["shape"] is None
    assert doc["stopped"] == {"fc": doc["stopped"]["fc"]} and "MyLayer" in doc["stopped"]["fc"]
    assert any("fc" in w for w in doc["warnings"])
    assert doc["totals"]["complete"] is False


TRAIN_VAL = """name: "tv"
layer { name: "data" type: "Data" top: "data" top: "label"
        data_param { source: "db" batch_size: 4 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def test_json_unknown_input_size_is_null_with_its_reason(tmp_path, capsys):
    """A Data layer's size is unknown: every size after it is null, not a crash, and each
    entry names the layer the gap comes from, whose reason the JSON gives (issue 18)."""
    net = tmp_path / "train_val.prototxt"
    net.write_text(TRAIN_VAL)
    for phase in ("TEST", "TRAIN"):
        assert main(["inspect", str(net), "--json", "--phase", phase]) == 0
        doc = json.loads(capsys.readouterr().out)
        layers = {layer["name"]: layer for layer in doc["layers"]}
        assert layers["conv1"]["param_shapes"] == [None, None]   # 2 blobs, sizes unknown
        assert layers["fc"]["param_shapes"] == [None, None] and layers["fc"]["params"] is None
        assert layers["conv1"]["unknown_from"] == ["data"] and layers["fc"]["unknown_from"] == ["data"]
        assert doc["blobs"]["fc"]["shape"] is None and doc["blobs"]["fc"]["unknown_from"] == ["data"]
        assert "--input-shape" in doc["unknown"]["data"] and doc["unknown"] == doc["stopped"]
        assert doc["totals"]["complete"] is False
    # Given the size, nothing is unknown and nothing names a cause.
    assert main(["inspect", str(net), "--json", "--input-shape", "data=4,3,8,8"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["unknown"] == {} and doc["totals"]["complete"] is True
    assert all(layer["unknown_from"] == [] for layer in doc["layers"])
    assert all(blob["unknown_from"] == [] for blob in doc["blobs"].values())


def test_placeholder_size_is_null_per_dim_and_explained(tmp_path, capsys):
    net = tmp_path / "template.prototxt"
    net.write_text(NET.replace("num_output: 5", "num_output: ${NUM_LABELS}"))
    assert main(["inspect", str(net), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fc = next(layer for layer in doc["layers"] if layer["name"] == "fc")
    assert fc["param_shapes"] == [[None, 4 * 4 * 4], [None]] and fc["unknown_from"] == ["fc"]
    assert doc["blobs"]["fc"]["shape"] == [1, None] and doc["blobs"]["fc"]["unknown_from"] == ["fc"]
    assert doc["blobs"]["conv2"]["unknown_from"] == []
    assert "placeholder" in doc["unknown"]["fc"] and "num_output" in doc["unknown"]["fc"]
    assert doc["stopped"] == {}
    assert main(["inspect", str(net)]) == 0     # the text mode says the same
    assert f"warning: layer 'fc': {doc['unknown']['fc']}" in capsys.readouterr().err   # warnings go to stderr


def test_corpus_resnet101_summary(capsys):
    path = corpus_path("resnet_kaiming", "ResNet-101-deploy.prototxt")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "output stride 32, receptive field 1027 at blob 'res5c' (1x2048x7x7)" in out
    assert main(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["blobs"]["res4b22"]["rf"] == [835, 835] and doc["blobs"]["res4b22"]["stride"] == [16, 16]


SPATIAL = """name: "two_inputs"
layer { name: "in" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "info_in" type: "Input" top: "im_info" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
        inner_product_param { num_output: 2 } }
layer { name: "info" type: "Power" bottom: "im_info" top: "info" }
"""


@pytest.mark.parametrize("command", [["inspect"], ["dilate", "-s", "1", "--head", "cut", "--dry-run"],
                                     ["init-weights", "-o", "OUT"], ["fcn", "--dry-run"],
                                     ["check", "MODEL"]])
def test_a_3d_shape_for_an_image_input_is_refused_at_once(tmp_path, capsys, command):
    net = tmp_path / "net.prototxt"
    net.write_text(SPATIAL)
    model = tmp_path / "m.caffemodel"
    assert main(["init-weights", str(net), "-o", str(model)]) == 0
    capsys.readouterr()
    argv = [command[0], str(net)] + [str(model) if a == "MODEL" else
                                     str(tmp_path / "o") if a == "OUT" else a
                                     for a in command[1:]]
    assert main(argv + ["--input-shape", "data=1,3,16"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "'data'" in err[0] and "N,C,H,W" in err[0], err
    assert "conv1" in err[0] or "declares" in err[0]
    assert not (tmp_path / "o").exists()


def test_a_non_image_input_may_have_any_rank(tmp_path, capsys):
    undeclared = SPATIAL.replace(' input_param { shape { dim: 1 dim: 3 } } }', " }")
    net = tmp_path / "net.prototxt"
    net.write_text(undeclared)
    assert main(["inspect", str(net), "--input-shape", "im_info=1,3"]) == 0
    assert "1x3" in capsys.readouterr().out
    assert main(["inspect", str(net), "--input-shape", "im_info=2,1,3"]) == 0
    capsys.readouterr()
    net.write_text(SPATIAL)       # declared 2-D: another rank is refused
    assert main(["inspect", str(net), "--input-shape", "im_info=1,1,3"]) == 2
    err = capsys.readouterr().err
    assert "'im_info'" in err and "declares" in err


def test_a_pooling_mask_is_not_the_nets_output(tmp_path, capsys):
    """SegNet's encoder ends in a MAX pooling with two tops, the values and the argmax mask
    the decoder's Upsample reads: the output is the values, though both see as much."""
    src = tmp_path / "segnet-mini.prototxt"
    src.write_text("""name: "segnet-mini"
input: "data"
input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "upsample1" type: "Upsample" bottom: "pool1" bottom: "pool1_mask" top: "up1"
  upsample_param { scale: 2 } }
layer { name: "conv1_D" type: "Convolution" bottom: "up1" top: "conv1_D"
  convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
""")
    assert main(["inspect", str(src), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["output_blob"] == "pool1"
