"""Files a fork accepts must load: unknown enum values and fork fields near BVLC names.

What a fork adds is kept verbatim with a warning. Only where it could change a layer's
geometry or weight shapes (a window block, a pooling method, an InnerProduct's width...)
is it taken seriously: a value there makes the layer opaque, and a near miss of a real
field there is refused as a typo. `--strict` refuses everything the schema lacks.
"""

import json

import pytest

from surgery.analysis.analyse import analyse
from surgery.io.netfile import load_net
from surgery.layers import UNKNOWN
from conftest import run_cli, write_file

NET = """\
name: "fork"
layer {
  name: "data"
  type: "Input"
  top: "data"
  top: "label"
  input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } shape { dim: 1 } }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 }
}
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layer {
  name: "conv2"
  type: "Convolution"
  bottom: "pool1"
  top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 }
}
layer {
  name: "gp"
  type: "Pooling"
  bottom: "conv2"
  top: "gp"
  pooling_param { pool: AVE global_pooling: true }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "gp"
  bottom: "label"
  top: "loss"
  loss_param { ignore_label: 255 normalization: VALID }
}
"""


def where(path, text, needle):
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return f"{path}:{number}:{line.index(needle) + 1}"
    raise AssertionError(needle)


def warnings(err):
    """The loader's warnings about what the schema lacks (not inspect's analysis warnings)."""
    return [line for line in err.splitlines() if line.startswith("caffe-surgery: warning: ")
            and not line.startswith("caffe-surgery: warning: layer '")]


# -- 1. unknown enum values ---------------------------------------------------

FORK_VALUE = NET.replace("normalization: VALID", "normalization: PER_PIXEL_FORK")


def test_an_unknown_enum_value_loads_with_a_warning(tmp_path):
    src = write_file(tmp_path, "net.prototxt", FORK_VALUE)
    code, out, err = run_cli("inspect", str(src))
    assert code == 0, err
    [line] = warnings(err)
    assert where(src, FORK_VALUE, "PER_PIXEL_FORK") in line
    assert "`PER_PIXEL_FORK`" in line and "normalization" in line and "kept verbatim" in line
    assert "geometry" not in line           # a loss mode decides no shape
    assert "Pooling?" not in out and "conv2" in out


def test_an_unknown_enum_value_round_trips_through_upgrade_and_dilate(tmp_path):
    src = write_file(tmp_path, "net.prototxt", FORK_VALUE)
    up = tmp_path / "up.prototxt"
    assert run_cli("upgrade", str(src), "-o", str(up))[0] == 0
    assert up.read_text() == FORK_VALUE
    out = tmp_path / "os2.prototxt"
    code, _, err = run_cli("dilate", str(src), "-s", "2", "--pooling", "cover", "-o", str(out))
    assert code == 0, err
    text = out.read_text()
    assert "  loss_param { ignore_label: 255 normalization: PER_PIXEL_FORK }\n" in text
    assert text != FORK_VALUE and "dilation: 2" in text


def test_canonical_output_says_it_dropped_an_unknown_value(tmp_path):
    src = write_file(tmp_path, "net.prototxt", FORK_VALUE)
    out = tmp_path / "o.prototxt"
    code, _, err = run_cli("dilate", str(src), "-s", "2", "--pooling", "cover", "-o", str(out),
                           "--canonical")
    assert code == 0
    assert any("PER_PIXEL_FORK" in line and "dropped" in line for line in err.splitlines()), err


def test_an_unknown_pooling_method_makes_the_pool_opaque(tmp_path):
    text = NET.replace("pool: MAX", "pool: LPNORM")
    src = write_file(tmp_path, "net.prototxt", text)
    loaded = load_net(src)
    assert "pool1" in loaded.unknowns.opaque
    a = analyse(loaded.net, unknowns=loaded.unknowns)
    assert a.graph.node("pool1").rule is UNKNOWN and a.graph.node("pool1").type == "Pooling"
    assert a.geometry["conv2"] is None
    code, out, err = run_cli("inspect", str(src))
    assert code == 0
    [line] = warnings(err)
    assert "`LPNORM`" in line and "geometry" in line
    assert "Pooling?" in out


def test_an_unknown_value_that_decides_the_graph_is_an_error(tmp_path):
    text = NET.replace('  top: "loss"\n', '  top: "loss"\n  include { phase: TRIAN }\n')
    src = write_file(tmp_path, "net.prototxt", text)
    code, _, err = run_cli("inspect", str(src))
    assert code == 2 and len(err.splitlines()) == 1
    assert where(src, text, "TRIAN") in err and "`TRAIN`" in err


def test_strict_refuses_an_unknown_value(tmp_path):
    src = write_file(tmp_path, "net.prototxt", FORK_VALUE)
    code, _, err = run_cli("inspect", str(src), "--strict")
    assert code == 2 and len(err.splitlines()) == 1
    assert where(src, FORK_VALUE, "PER_PIXEL_FORK") in err and "--strict" in err


# -- 2. the typo guard: an error only where shapes depend on it ----------------

def _kept_with_a_hint(tmp_path, text, near):
    """`text` loads with one warning naming `near` and keeping the field, and an upgrade
    writes it back unchanged; returns the file."""
    src = write_file(tmp_path, "net.prototxt", text)
    code, out, err = run_cli("inspect", str(src))
    assert code == 0, err
    [line] = warnings(err)
    assert f"did you mean `{near}`?" in line and "kept verbatim" in line
    up = tmp_path / "up.prototxt"
    assert run_cli("upgrade", str(src), "-o", str(up))[0] == 0
    assert up.read_text() == text
    return src


@pytest.mark.parametrize("old, new, near", [
    # a fork's loss/data/test-time field one slip away from a BVLC one
    ("normalization: VALID", "normalization: VALID normalise: true", "normalize"),
    ('  top: "loss"\n', '  top: "loss"\n  softmax_loss_param { temperature: 2 }\n',
     "softmax_param"),
    ("normalization: VALID", "normalization: VALIDE", "VALID"),
])
def test_a_near_miss_outside_shape_params_is_a_warning(tmp_path, old, new, near):
    src = _kept_with_a_hint(tmp_path, NET.replace(old, new), near)
    code, _, err = run_cli("inspect", str(src), "--strict")
    assert code == 2 and len(err.splitlines()) == 1 and f"`{near}`" in err


@pytest.mark.parametrize("old, new, near", [
    ("kernel_size: 3 pad: 1 stride: 2", "kernel_sise: 3 pad: 1 stride: 2", "kernel_size"),
    ("num_output: 8 kernel_size: 3 pad: 1 }", "num_outputs: 8 kernel_size: 3 pad: 1 }",
     "num_output"),
    ("pool: MAX", "pool: MAXX", "MAX"),
    ("pooling_param {", "pooling_parm {", "pooling_param"),
    ('  bottom: "pool1"\n', '  botom: "pool1"\n', "bottom"),
    ("shape { dim: 1 } }", "shape { dim: 1 } shapes { dim: 1 } }", "shape"),
])
def test_a_near_miss_where_shapes_depend_on_it_is_an_error(tmp_path, old, new, near):
    text = NET.replace(old, new)
    assert text != NET
    src = write_file(tmp_path, "net.prototxt", text)
    code, _, err = run_cli("inspect", str(src))
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"did you mean `{near}`" in err


@pytest.mark.parametrize("block, like", [
    # YOLO v2's Region layer: more than one slip from `reduction_param`
    ("region_param { classes: 20 coords: 4 num: 5 }", "reduction_param"),
    # a fork's pooling block beside BVLC's (two letters more than `pooling_param`)
    ("pspooling_param { bins: 2 }", "pooling_param"),
])
def test_a_fork_block_that_only_resembles_a_real_one_is_kept(tmp_path, block, like):
    """The typo guard refuses one slip (a letter added, dropped, changed or swapped); a
    fork's own block that merely looks like a BVLC one loads, kept verbatim, the likeness
    named in the warning."""
    _kept_with_a_hint(tmp_path, NET.replace('  name: "conv2"\n', f'  name: "conv2"\n  {block}\n'),
                      like)


@pytest.mark.parametrize("block", ["interp_param { zoom_facter: 2 }",
                                   "crop_param { ofset: 2 }",
                                   "inner_product_param { num_outputs: 10 }",
                                   "reshape_param { shap { dim: 0 } }"])
def test_the_typo_guard_covers_every_block_that_decides_shapes(tmp_path, block):
    text = NET.replace('  loss_param', f"  {block}\n  loss_param")
    src = write_file(tmp_path, "net.prototxt", text)
    code, _, err = run_cli("inspect", str(src))
    assert code == 2 and len(err.splitlines()) == 1 and "did you mean" in err, err


def test_an_unknown_field_in_any_shape_block_makes_the_layer_opaque(tmp_path):
    text = NET.replace("input_param { shape", "input_param { fork_layout: 1 shape")
    loaded = load_net(write_file(tmp_path, "net.prototxt", text))
    assert "data" in loaded.unknowns.opaque


def test_every_parameter_block_the_registry_reads_is_classified():
    """A new rule that reads a new block must say whether the block decides shapes."""
    import inspect
    import re

    from surgery import layers

    read = set(re.findall(r"\b([a-z_]+_param)\b", inspect.getsource(layers)))
    leaves_shapes_alone = {"accuracy_param", "softmax_param", "eltwise_param", "loss_param", "dropout_param",
                           "relu_param", "batch_norm_param", "clip_param",
                           "python_param"}   # values, not shapes
    data_sources = {"data_param", "image_data_param", "dense_image_data_param",
                    "memory_data_param", "window_data_param", "transform_param"}
    assert read - layers.SHAPE_PARAMS - leaves_shapes_alone - data_sources == set()


# -- YOLO v2's passthrough Reorg: shapes known, no grid ------------------------

YOLO = """name: "yolo2-mini"
input: "data"
input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "reorg" type: "Reorg" bottom: "conv1" top: "reorg" reorg_param { stride: 2 } }
layer { name: "concat" type: "Concat" bottom: "reorg" bottom: "conv2" top: "concat" }
layer { name: "conv3" type: "Convolution" bottom: "concat" top: "conv3"
  convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "region" type: "Region" bottom: "conv3" top: "region"
  region_param { classes: 0 coords: 4 num: 1 } }
"""


def test_reorg_moves_pixels_into_channels_and_the_weights_after_it_follow(tmp_path):
    src = write_file(tmp_path, "yolo.prototxt", YOLO)
    code, out, err = run_cli("inspect", str(src), "--json")
    assert code == 0, err
    blobs = json.loads(out)["blobs"]
    assert blobs["reorg"]["shape"] == [1, 16, 16, 16]       # 4 x 32 x 32 -> 4*2*2 x 16 x 16
    assert blobs["concat"]["shape"] == [1, 24, 16, 16]
    assert blobs["reorg"]["stride"] is None                 # Darknet's order has no grid
    weights = tmp_path / "yolo.caffemodel"
    assert run_cli("init-weights", str(src), "-o", str(weights))[0] == 0
    from surgery.io.caffemodel import read_caffemodel

    assert read_caffemodel(weights).layer("conv3").blobs[0].shape == (5, 24, 1, 1)


@pytest.mark.parametrize("params, shape", [("reorg_param { stride: 2 reverse: true }", [1, 1, 64, 64]),
                                           ("reorg_param { stride: 4 }", [1, 64, 8, 8])])
def test_reorg_reverse_and_other_strides(tmp_path, params, shape):
    text = YOLO.replace("reorg_param { stride: 2 }", params).split('layer { name: "concat"')[0]
    src = write_file(tmp_path, "yolo.prototxt", text)
    code, out, err = run_cli("inspect", str(src), "--json")
    assert code == 0, err
    assert json.loads(out)["blobs"]["reorg"]["shape"] == shape


def test_a_reorg_whose_input_does_not_divide_is_refused_as_caffe_would(tmp_path):
    src = write_file(tmp_path, "yolo.prototxt",
                     YOLO.replace("dim: 32 dim: 32", "dim: 31 dim: 31"))
    code, out, err = run_cli("inspect", str(src))
    assert code == 2
    assert err.splitlines()[-1] == ("caffe-surgery: error: layer 'reorg': its input 31x31 "
                                    "does not divide by stride 2")
