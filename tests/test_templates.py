"""Shell templates and unknown fields: loaded, analysed and rewritten without guessing."""

import re

import pytest
from google.protobuf import text_format

from surgery import caffe_pb2
from surgery.analysis.analyse import analyse
from surgery.cli import main
from surgery.errors import SurgeryError
from surgery.io.caffemodel import write_caffemodel
from surgery.io.netfile import load_net
from surgery.layers import UNKNOWN

from conftest import CORPUS, corpus_path, error_line, write_file
DEEPLAB_V2 = CORPUS / "deeplab_v2" / "vgg16_train.prototxt"
DEEPLAB_V1 = CORPUS / "deeplab_v1" / "DeepLab-LargeFOV_test.prototxt"

TEMPLATE = """\
name: "${NET_ID}"
layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 64 dim: 64 } }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 stride: 2 }
}
layer {
  name: "conv2"
  type: "Convolution"
  bottom: "conv1"
  top: "conv2"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 }
}
layer {
  name: "fc8_${EXP}"
  type: "Convolution"
  bottom: "conv2"
  top: "fc8_${EXP}"
  convolution_param {
    num_output: ${NUM_LABELS}
    kernel_size: 3
    pad: 1
  }
}
layer {
  name: "after"
  type: "Convolution"
  bottom: "fc8_${EXP}"
  top: "after"
  convolution_param { num_output: 4 kernel_size: 1 }
}
"""


def substitute(text):
    return re.sub(r"\$\{(\w+)\}", lambda m: "21" if m.group(1) == "NUM_LABELS" else "x", text)


def where(path, text, needle):
    """'FILE:LINE:COL' of the first occurrence of needle in text."""
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return f"{path}:{number}:{line.index(needle) + 1}"
    raise AssertionError(needle)


def test_open_channel_count_leaves_only_channels_unknown(tmp_path):
    loaded = load_net(write_file(tmp_path, "net.prototxt", TEMPLATE))
    assert [p.text for p in loaded.numeric_placeholders] == ["${NUM_LABELS}"]
    assert loaded.unknowns.values == {"fc8_${EXP}": {("convolution_param", "num_output")}}
    a = analyse(loaded.net, unknowns=loaded.unknowns)
    assert a.shapes["fc8_${EXP}"] == (1, None, 32, 32)
    assert a.shapes["after"] == (1, 4, 32, 32)
    assert a.param_shapes["fc8_${EXP}"] == [(None, 16, 3, 3), (None,)]
    assert a.param_shapes["after"] == [(4, None, 1, 1), (4,)]
    assert a.geometry["after"].stride == (2, 2) and a.geometry["after"].rf == (11, 11)
    assert not a.layer_stats[3].params and not a.totals.complete


def test_without_unknowns_the_open_field_is_an_error(tmp_path):
    loaded = load_net(write_file(tmp_path, "net.prototxt", TEMPLATE))
    with pytest.raises(SurgeryError, match="num_output"):
        analyse(loaded.net)


def test_dilate_carries_placeholders_and_output_substitutes(tmp_path, capsys):
    src = write_file(tmp_path, "net.prototxt", TEMPLATE)
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(src), "-s", "1", "-o", str(out)]) == 0
    text = out.read_text()
    assert re.findall(r"\$\{\w+\}", text) == re.findall(r"\$\{\w+\}", TEMPLATE)
    new_fc8 = "    num_output: ${NUM_LABELS}\n    kernel_size: 3\n    pad: 2\n    dilation: 2\n"
    assert new_fc8 in text
    net = text_format.Parse(substitute(text), caffe_pb2.NetParameter())
    assert list(net.layer[3].convolution_param.dilation) == [2]


def test_canonical_refuses_a_numeric_placeholder(tmp_path, capsys):
    src = write_file(tmp_path, "net.prototxt", TEMPLATE)
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(src), "-s", "1", "-o", str(out), "--canonical"]) == 2
    assert f"{where(src, TEMPLATE, '${NUM_LABELS}')}: template placeholder" in error_line(capsys.readouterr().err)
    assert not out.exists()


def test_open_stride_makes_the_layer_opaque(tmp_path, capsys):
    text = TEMPLATE.replace("pad: 1 stride: 2", "pad: 1 stride: ${S}")
    loaded = load_net(write_file(tmp_path, "net.prototxt", text))
    a = analyse(loaded.net, unknowns=loaded.unknowns)
    node = a.graph.node("conv1")
    assert node.rule is UNKNOWN and node.type == "Convolution"
    assert a.geometry["conv1"] is None and a.geometry["after"] is None
    assert a.shapes["conv1"] is None and "decides its window" in a.stopped["conv1"]
    out = tmp_path / "out.prototxt"      # the stride is open: dilate cannot tell what to do
    assert main(["dilate", str(tmp_path / "net.prototxt"), "-s", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "conv1" in err and "unknown" in err and not out.exists()


FORK = TEMPLATE.replace("num_output: ${NUM_LABELS}", "num_output: 21\n    fork_mode: 3") \
    .replace('name: "${NET_ID}"', 'name: "n"\nfancy_flag: true\nfancy_flag: false')


def test_unknown_fields_warn_once_per_name_and_keep_going(tmp_path, capsys):
    src = write_file(tmp_path, "net.prototxt", FORK)
    assert main(["inspect", str(src)]) == 0
    captured = capsys.readouterr()
    warnings = [l for l in captured.err.splitlines()    # the loader's, not the analysis's
                if "warning: " in l and "warning: layer '" not in l]
    assert len(warnings) == 2
    assert f"{src}:2:1: unknown field `fancy_flag` in caffe.NetParameter (2 times)" in warnings[0]
    assert f"{where(src, FORK, 'fork_mode')}: unknown field `fork_mode`" in warnings[1]
    assert "geometry" in warnings[1]
    assert "Convolution?" in captured.out       # the layer holding it is opaque


def test_unknown_geometry_field_stops_dilate_and_keeps_field(tmp_path, capsys):
    src = write_file(tmp_path, "net.prototxt", FORK)
    loaded = load_net(src)
    a = analyse(loaded.net, unknowns=loaded.unknowns)
    assert a.geometry["conv2"] is not None and a.geometry["fc8_${EXP}"] is None
    out = tmp_path / "out.prototxt"      # geometry stops at fc8: it cannot be dilated through
    for stride in ("2", "1"):
        assert main(["dilate", str(src), "-s", stride, "-o", str(out)]) == 2
        assert "fc8_${EXP}" in capsys.readouterr().err
        assert not out.exists()


@pytest.mark.parametrize("command", [["inspect"], ["upgrade"], ["dilate", "-s", "2", "-o", "X"],
                                     ["check", "MODEL"], ["init-weights", "-o", "Y"]])
def test_strict_turns_the_warning_into_a_located_error(tmp_path, capsys, command):
    src = write_file(tmp_path, "net.prototxt", FORK)
    args = [a.replace("X", str(tmp_path / "o.prototxt")).replace("Y", str(tmp_path / "w"))
            for a in command]
    if args[0] == "check":
        model = tmp_path / "no_layers.caffemodel"
        write_caffemodel(model, [], name="n")
        args = ["check", str(src), str(model), "--strict"]
    else:
        args = [args[0], str(src)] + args[1:] + ["--strict"]
    assert main(args) == 2
    line = error_line(capsys.readouterr().err)
    assert f"{src}:2:1:" in line and "fancy_flag" in line and "--strict" in line
    assert not (tmp_path / "o.prototxt").exists() and not (tmp_path / "w").exists()


def test_a_near_miss_is_a_typo_not_a_fork(tmp_path, capsys):
    src = write_file(tmp_path, "net.prototxt", TEMPLATE.replace("kernel_size: 1", "kernel_sise: 1"))
    assert main(["inspect", str(src)]) == 2
    assert "did you mean `kernel_size`" in error_line(capsys.readouterr().err)


def test_upgrade_refuses_to_lose_a_placeholder(tmp_path, capsys):
    v1 = ('layers { name: "c" type: CONVOLUTION bottom: "d" top: "c"\n'
          '  convolution_param { num_output: ${N} kernel_size: 1 } }\n')
    text = 'input: "d" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n' + v1
    src = write_file(tmp_path, "net.prototxt", text)
    assert main(["upgrade", str(src), "-o", str(tmp_path / "o.prototxt")]) == 2
    assert f"{where(src, text, '${N}')}: template placeholder ${{N}}" in error_line(capsys.readouterr().err)
    assert main(["init-weights", str(src), "-o", str(tmp_path / "w.caffemodel")]) == 2
    assert f"{where(src, text, '${N}')}:" in error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- corpus


def test_deeplab_v2_inspect_shows_unknowns_where_they_belong(capsys):
    corpus_path(DEEPLAB_V2)
    assert main(["inspect", str(DEEPLAB_V2), "--phase", "TRAIN", "--json"]) == 0
    import json
    data = json.loads(capsys.readouterr().out)
    blobs = data["blobs"]
    assert blobs["fc8_${EXP}"]["shape"] == [10, None, 41, 41]
    assert blobs["fc8_${EXP}"]["stride"] == [8, 8]
    assert blobs["fc7_1"]["shape"] == [10, 1024, 41, 41]
    assert data["totals"]["complete"] is False


def test_deeplab_v2_dilate_keeps_every_placeholder_byte_for_byte(tmp_path, capsys):
    corpus_path(DEEPLAB_V2)
    original = DEEPLAB_V2.read_text()
    out = tmp_path / "same.prototxt"
    assert main(["dilate", str(DEEPLAB_V2), "-s", "8", "-o", str(out)]) == 0
    assert out.read_bytes() == DEEPLAB_V2.read_bytes()
    out = tmp_path / "os4.prototxt"
    assert main(["dilate", str(DEEPLAB_V2), "-s", "4", "--pooling", "cover", "-o", str(out)]) == 0
    text = out.read_text()
    with_ph = lambda t: [l for l in t.splitlines() if "${" in l]
    assert with_ph(text) == with_ph(original)
    net = text_format.Parse(substitute(text), caffe_pb2.NetParameter())
    fc6 = [l for l in net.layer if l.name == "fc6_1"][0]
    assert list(fc6.convolution_param.dilation) == [12]
    assert [l for l in net.layer if l.name == "fc8_x_1"][0].convolution_param.num_output == 21


def test_deeplab_v1_template_loads_with_placeholders(capsys):
    corpus_path(DEEPLAB_V1)
    loaded = load_net(DEEPLAB_V1)
    assert loaded.notes and loaded.numeric_placeholders
    assert main(["inspect", str(DEEPLAB_V1), "--input-shape", "data=1,3,321,321"]) == 0
    assert "fc8_${EXP}" in capsys.readouterr().out


def test_bad_values_keep_the_did_you_mean_hints(tmp_path, capsys):
    text = 'layer {\n  name: "p"\n  type: "Pooling"\n  pooling_param { pool: MAXX kernel_size: 2 }\n}\n'
    src = write_file(tmp_path, "net.prototxt", text)
    assert main(["inspect", str(src)]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"{where(src, text, 'MAXX')}:" in line and "did you mean `MAX`" in line
