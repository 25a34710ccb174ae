"""A net made runnable for an engine, in memory (surgery/engines/prepare.py), and what
each layer's rule answers (`for_engine`, `bvlc_form`, `form_blobs`).

The numeric checks run the prepared net in OpenCV against the fork's formula computed
here in numpy from the original layer's own blobs (an independent computation of what
the fork layer does); the same checks in real Caffe are tests/test_caffe_forks.py.
"""

import numpy as np
import pytest

from surgery.analysis.analyse import analyse
from surgery.builder import NetBuilder
from surgery.cli import main
from surgery.engines.pylayers import forklayers as fl
from surgery.engines.prepare import prepare
from surgery.errors import SurgeryError
from surgery.io import caffemodel as cm
from surgery.io.netfile import load_net
from surgery.io.prototxt import parse_prototxt, save_prototxt
from surgery.layers import FORK_MODULE, rule_for
from surgery.models.segmentation import deeplab_v2_vgg
from surgery.transform.bvlc import form_weights
from surgery.weights.writer import write as write_weights

from conftest import corpus_path, write_file

F32 = np.float32


def _types(net):
    return [layer.type for layer in net.layer]


def _layer(net, name):
    return next(layer for layer in net.layer if layer.name == name)


HEAD = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 7 dim: 7 } } }\n'


def _net(text, head=HEAD):
    return parse_prototxt(head + text)


# --------------------------------------------------------------------------- data and sinks

def test_a_test_net_runs_from_an_input_without_its_writers():
    """DeepLab v2's test net: ImageSegData becomes an Input of the crop size; MatWrite and
    the Silence of label and data_dim are left out, and with them the tops nobody reads."""
    net = deeplab_v2_vgg(width=0.0625, crop=65)
    for engine in ("caffe", "opencv"):
        p = prepare(analyse(net), engine)
        data = p.net.layer[0]
        assert data.type == "Input" and list(data.top) == ["data"]
        assert [tuple(s.dim) for s in data.input_param.shape] == [(1, 3, 65, 65)]
        assert "MatWrite" not in _types(p.net) and "Silence" not in _types(p.net)
        assert {"fc8_mat", "silence"} <= set(p.left_out) and p.inputs == ["data"]
        assert not any(layer.include or layer.exclude for layer in p.net.layer)


TRAIN = """\
layer { name: "data" type: "ImageSegData" top: "data" top: "label"
  include { phase: TRAIN }
  transform_param { crop_size: 33 } image_data_param { source: "l.txt" batch_size: 2 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 stride: 4 } }
layer { name: "label_shrink" type: "Interp" bottom: "label" top: "label_shrink"
  interp_param { shrink_factor: 4 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label_shrink" top: "loss" }
layer { name: "accuracy" type: "SegAccuracy" bottom: "conv" bottom: "label_shrink" top: "accuracy" }
"""


def test_a_train_net_loses_its_losses_and_what_only_feeds_them():
    """The label is read only by a shrink that feeds the loss and the accuracy: all three
    go, and the label with them; the scores stay (nobody reads them now, but they are
    computed from the image)."""
    net = parse_prototxt(TRAIN)
    p = prepare(analyse(net, phase="TRAIN"), "caffe")
    assert [layer.name for layer in p.net.layer] == ["data", "conv"]
    assert list(p.net.layer[0].top) == ["data"] and not p.labels
    assert {"loss", "accuracy", "label_shrink"} <= set(p.left_out)


def test_a_label_a_running_layer_reads_is_an_input_fed_zeros(tmp_path):
    text = TRAIN + ('layer { name: "both" type: "Concat" bottom: "data" bottom: "label" '
                    'top: "both" }\n')
    p = prepare(analyse(parse_prototxt(text), phase="TRAIN"), "opencv")
    assert p.labels == {"label"} and p.inputs == ["data", "label"]
    shapes = [tuple(s.dim) for s in p.net.layer[0].input_param.shape]
    assert shapes == [(2, 3, 33, 33), (2, 1, 33, 33)]


def test_a_python_data_layer_becomes_an_input_of_the_given_size():
    """FCN's train nets read VOC through a Python layer: its size comes from
    --input-shape; a size left unknown for a top that runs is one clear line."""
    text = ('layer { name: "data" type: "Python" top: "data" top: "label" python_param { '
            'module: "voc_layers" layer: "SBDDSegDataLayer" } }\n'
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
            'convolution_param { num_output: 2 kernel_size: 1 } }\n'
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label" }\n')
    net = parse_prototxt(text)
    p = prepare(analyse(net, input_shapes={"data": (1, 3, 9, 9)}), "caffe")
    assert _types(p.net) == ["Input", "Convolution"] and list(p.net.layer[0].top) == ["data"]
    with pytest.raises(SurgeryError, match=r"--input-shape data=N,C,H,W"):
        prepare(analyse(net), "caffe")


# --------------------------------------------------------------------------- fork layers

PSP_BN = ('layer { name: "bn" type: "BN" bottom: "data" top: "y" '
          'bn_param { frozen: true eps: 0.001 } param { lr_mult: 1 } param { lr_mult: 1 } '
          'param { lr_mult: 0 } param { lr_mult: 0 } }\n')
SEGNET_BN = ('layer { name: "bn" type: "BN" bottom: "data" top: "out" '
             'bn_param { bn_mode: INFERENCE scale_filler { type: "constant" value: 1 } } }\n')


def _bn_blobs(rng, c=4, count=4):
    blobs = [rng.uniform(0.5, 2, (1, c, 1, 1)), rng.standard_normal((1, c, 1, 1)),
             rng.standard_normal((1, c, 1, 1)), rng.uniform(0.5, 2, (1, c, 1, 1))]
    return [b.astype(F32) for b in blobs[:count]]


def _run_opencv(net, weights, x, blob):
    pytest.importorskip("cv2")
    from surgery.engines.engine import get_engine

    return get_engine("opencv").run(net, weights, {"data": x}, [blob])[blob]


def _prepared_weights(tmp_path, net, p, blobs, name="bn"):
    source = tmp_path / "w.caffemodel"
    cm.write_caffemodel(source, [dict(name=name, type="BN", blobs=blobs)])
    summary = cm.read_caffemodel(source)
    plan = form_weights(p.forms, summary, retype=False)
    out = tmp_path / "prepared.caffemodel"
    write_weights(plan, out, source=summary)
    return out


@pytest.mark.parametrize("engine", ["caffe", "opencv"])
def test_pspnet_bn_is_batchnorm_and_scale_with_its_eps(engine):
    p = prepare(analyse(_net(PSP_BN)), engine)
    assert _types(p.net) == ["Input", "BatchNorm", "Scale"]
    norm, scale = p.net.layer[1:]
    assert norm.name == "bn" and scale.name == "bn_scale"
    assert norm.batch_norm_param.use_global_stats
    assert norm.batch_norm_param.eps == pytest.approx(1e-3)
    assert list(norm.bottom) == ["data"] and list(norm.top) == ["y"]
    assert list(scale.bottom) == list(scale.top) == ["y"] and scale.scale_param.bias_term
    assert [s.lr_mult for s in scale.param] == [0, 0]     # frozen: the fork forces lr 0


def test_pspnet_bn_prepared_computes_the_forks_formula_in_opencv(tmp_path):
    """The fork at TEST: ((x - mean) * (var + eps)^-0.5) * slope + bias, per channel, from
    its four (1, C, 1, 1) blobs slope, bias, mean, variance."""
    rng = np.random.default_rng(0)
    blobs = _bn_blobs(rng)
    p = prepare(analyse(_net(PSP_BN)), "opencv")
    weights = _prepared_weights(tmp_path, p.net, p, blobs)
    summary = cm.read_caffemodel(weights)
    assert [b.shape for b in summary.layer("bn").blobs] == [(4,), (4,), (1,)]
    assert [b.shape for b in summary.layer("bn_scale").blobs] == [(4,), (4,)]
    x = rng.standard_normal((1, 4, 7, 7)).astype(F32)
    slope, bias, mean, var = (b.astype(np.float64) for b in blobs)
    want = (x - mean) * (var + np.float64(F32(1e-3))) ** -0.5 * slope + bias
    got = _run_opencv(p.net, weights, x, "y")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_segnet_inference_bn_is_one_scale_in_opencv(tmp_path):
    """x * scale + shift (bit for bit in Caffe's Scale, tests/test_caffe_forks.py; OpenCV
    fuses the multiply-add, one rounding instead of two)."""
    rng = np.random.default_rng(1)
    blobs = _bn_blobs(rng, count=2)
    p = prepare(analyse(_net(SEGNET_BN)), "opencv")
    assert _types(p.net) == ["Input", "Scale"] and p.net.layer[1].name == "bn"
    weights = _prepared_weights(tmp_path, p.net, p, blobs)
    x = rng.standard_normal((1, 4, 7, 7)).astype(F32)
    np.testing.assert_allclose(_run_opencv(p.net, weights, x, "out"), x * blobs[0] + blobs[1],
                               rtol=2e-7, atol=1e-7)


def test_segnet_learn_bn_runs_as_a_python_layer_in_caffe_only():
    text = SEGNET_BN.replace("bn_mode: INFERENCE", "bn_mode: LEARN")
    rule = rule_for("BN")
    layer = _net(text).layer[1]
    assert rule.bvlc_form(layer) is None and rule.for_engine(layer, "opencv") is None
    (python,) = rule.for_engine(layer, "caffe")
    assert python.type == "Python" and python.python_param.layer == "BatchBN"


def test_depthwise_and_relu6_and_rounding_forms():
    dw = _net('layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw" '
              'convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }\n'
              'layer { name: "r6" type: "ReLU6" bottom: "dw" top: "dw" }\n'
              'layer { name: "p" type: "Pooling" bottom: "dw" top: "p" '
              'pooling_param { pool: MAX kernel_size: 2 stride: 2 ceil_mode: false } }\n')
    caffe = prepare(analyse(dw), "caffe").net
    assert _types(caffe) == ["Input", "Convolution", "Clip", "Pooling"]
    conv, clip, pool = caffe.layer[1:]
    assert conv.convolution_param.group == 4 and (clip.clip_param.min, clip.clip_param.max) == (0, 6)
    assert pool.pooling_param.round_mode == pool.pooling_param.FLOOR
    assert not pool.pooling_param.HasField("ceil_mode")
    opencv = prepare(analyse(dw), "opencv").net
    assert _types(opencv) == ["Input", "Convolution", "ReLU6", "Pooling"]
    assert not opencv.layer[3].pooling_param.ceil_mode        # OpenCV reads ceil_mode
    floor = _net('layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param '
                 '{ pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR } }\n')
    pp = prepare(analyse(floor), "opencv").net.layer[1].pooling_param
    assert not pp.HasField("round_mode") and pp.HasField("ceil_mode") and not pp.ceil_mode
    clip = _net('layer { name: "c" type: "Clip" bottom: "data" top: "data" '
                'clip_param { min: 0 max: 6 } }\n')
    assert _types(prepare(analyse(clip), "opencv").net) == ["Input", "ReLU6"]
    assert _types(prepare(analyse(clip), "caffe").net) == ["Input", "Clip"]


def test_interp_is_a_python_layer_in_caffe_and_sized_for_opencv():
    net = _net('layer { name: "s" type: "Interp" bottom: "data" top: "s" '
               'interp_param { shrink_factor: 2 } }\n'
               'layer { name: "z" type: "Interp" bottom: "data" top: "z" '
               'interp_param { zoom_factor: 3 shrink_factor: 2 } }\n'
               'layer { name: "b" type: "Interp" bottom: "s" bottom: "data" top: "b" }\n'
               'layer { name: "k" type: "Interp" bottom: "data" top: "k" '
               'interp_param { zoom_factor: 2 } }\n')
    caffe = prepare(analyse(net), "caffe").net
    assert _types(caffe)[1:] == ["Python"] * 4
    python = caffe.layer[2].python_param
    assert (python.module, python.layer) == (FORK_MODULE, "Interp")
    assert python.param_str == '{"shrink_factor": 2, "zoom_factor": 3}'
    opencv = prepare(analyse(net), "opencv").net
    sized = {layer.name: (layer.interp_param.height, layer.interp_param.width, list(layer.bottom))
             for layer in opencv.layer[1:]}
    assert sized["s"] == (4, 4, ["data"]) and sized["z"] == (10, 10, ["data"])
    assert sized["b"] == (7, 7, ["s"])              # the second bottom's size, then dropped
    assert _layer(opencv, "k") == _layer(net, "k")   # OpenCV zooms as the fork does
    cropped = _net('layer { name: "c" type: "Interp" bottom: "data" top: "c" '
                   'interp_param { shrink_factor: 2 pad_end: -1 } }\n')
    with pytest.raises(SurgeryError, match="pad_beg/pad_end.*--engine caffe"):
        prepare(analyse(cropped), "opencv")


def test_sized_interp_in_opencv_is_the_forks_shrink_and_zoom(tmp_path):
    """OpenCV runs shrink 4 zoom 3 (DeepLab's 0.75 scale) as the size it gives: the
    values are the fork's (forklayers.interp, written from its source) to a few ulp."""
    net = _net('layer { name: "z" type: "Interp" bottom: "data" top: "z" '
               'interp_param { zoom_factor: 3 shrink_factor: 4 } }\n',
               HEAD.replace("dim: 7 dim: 7", "dim: 33 dim: 29"))
    p = prepare(analyse(net), "opencv")
    weights = tmp_path / "none.caffemodel"
    cm.write_caffemodel(weights, [])
    x = np.random.default_rng(2).standard_normal((1, 4, 33, 29)).astype(F32)
    want = fl.interp(x, {"zoom_factor": 3, "shrink_factor": 4})
    got = _run_opencv(p.net, weights, x, "z")
    assert got.shape == want.shape == (1, 4, 25, 22)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(x).max())


def test_axpy_operands_swapped_for_opencv_compute_senets_axpy(tmp_path):
    """OpenCV's importer computes a*bottom[2] + bottom[1]; fed (a, y, x) it computes SENet's
    a*x + y, checked on the blobs it computes."""
    b = NetBuilder("se")
    b.input("data", (1, 4, 6, 6))
    x = b.conv("x", "data", num_output=4, kernel=3, pad=1)
    g = b.pool("g", x, global_pooling=True, method="AVE")
    a = b.conv("a", g, num_output=4, kernel=1)
    b.layer("Sigmoid", "sig", [a], [a])
    b.layer("Axpy", "axpy", [a, x, "data"], ["out"])
    weights = tmp_path / "se.caffemodel"
    save_prototxt(b.net, tmp_path / "se.prototxt")
    assert main(["init-weights", str(tmp_path / "se.prototxt"), "-o", str(weights)]) == 0
    p = prepare(analyse(b.net), "opencv")
    assert list(_layer(p.net, "axpy").bottom) == ["a", "data", "x"]
    pytest.importorskip("cv2")
    from surgery.engines.engine import get_engine

    data = np.random.default_rng(3).standard_normal((1, 4, 6, 6)).astype(F32)
    out = get_engine("opencv").run(p.net, weights, {"data": data}, ["a", "x", "out"])
    np.testing.assert_allclose(out["out"], out["a"] * out["x"] + data, rtol=1e-5, atol=1e-6)


def test_python_layers_name_classes_the_fork_module_defines():
    """Every Python layer the registry declares is a class of forklayers.py (read from
    its source: the classes exist only where caffe imports)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(fl))
    classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    nets = {"Interp": 'interp_param { zoom_factor: 2 }', "Upsample": 'upsample_param { scale: 2 }',
            "ShuffleChannel": 'shuffle_channel_param { group: 2 }', "Normalize": "",
            "Permute": 'permute_param { order: 0 order: 2 order: 3 order: 1 }',
            "Axpy": ""}
    for kind, params in nets.items():
        layer = parse_prototxt(f'layer {{ name: "l" type: "{kind}" bottom: "a" bottom: "b" '
                               f'bottom: "c" top: "t" {params} }}').layer[0]
        (python,) = rule_for(kind).for_engine(layer, "caffe")
        assert python.python_param.module == FORK_MODULE
        assert python.python_param.layer in classes, kind


def test_a_layer_with_a_field_the_schema_lacks_runs_as_it_is():
    text = HEAD + PSP_BN.replace("frozen: true", "frozen: true moving_average: true")
    loaded = load_net_text(text)
    as_is = {uf.layer for uf in loaded.binding.unknown_fields}
    assert as_is == {"bn"}
    p = prepare(analyse(loaded.net), "opencv", as_is=as_is)
    assert _types(p.net) == ["Input", "BN"]


def load_net_text(text):
    from surgery.io.netfile import load_text

    return load_text(text, "mem.prototxt")


def test_the_v1_largefov_net_prepared_for_caffe_has_only_bvlc_fields():
    """DeepLab v1's V1 file: IMAGE_SEG_DATA is an Input, MAT_WRITE and SILENCE are left
    out, INTERP is the fork's Python layer, and the fork's layer-level strict_dim goes
    (BVLC's parser would refuse it)."""
    path = corpus_path("deeplab_v1", "DeepLab-LargeFOV_test.prototxt")
    text = path.read_text().replace("${NUM_LABELS}", "21").replace("${EXP}", "voc12")
    loaded = load_net_text(text)
    assert any(layer.HasField("strict_dim") for layer in loaded.net.layer)
    p = prepare(analyse(loaded.net, input_shapes={"data": (1, 3, 65, 65)}), "caffe")
    assert p.net.layer[0].type == "Input" and list(p.net.layer[0].top) == ["data"]
    assert not any(layer.HasField("strict_dim") for layer in p.net.layer)
    assert {"ImageSegData", "MatWrite", "Silence", "Interp"}.isdisjoint(_types(p.net))
    assert _layer(p.net, "fc8_interp").python_param.layer == "Interp"


# --------------------------------------------------------------------------- verify's side

TEMPLATE = HEAD + ('layer { name: "conv_${EXP}" type: "Convolution" bottom: "data" '
                   'top: "conv" convolution_param { num_output: ${NUM} kernel_size: 3 } }\n')


def test_define_fills_a_template_and_open_placeholders_are_one_line(tmp_path, capsys):
    src = write_file(tmp_path, "t.prototxt", TEMPLATE)
    filled = write_file(tmp_path, "f.prototxt",
                        TEMPLATE.replace("${EXP}", "a").replace("${NUM}", "2"))
    weights = tmp_path / "w.caffemodel"
    assert main(["init-weights", str(filled), "-o", str(weights)]) == 0
    capsys.readouterr()
    args = ["verify", str(src), str(src), "--weights", str(weights), "--engine", "opencv"]
    assert main(args + ["--define", "EXP=a"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "${NUM}" in err and "--define NUM=VALUE" in err
    assert f"{src}:2:" in err                       # where it is in the file as written
    assert main(args + ["--define", "NUM=2"]) == 2
    err = capsys.readouterr().err.strip()
    line, col = TEMPLATE.splitlines()[1], None
    col = line.index('"conv_${EXP}"') + 1
    assert f"{src}:2:{col}: " in err and "--define EXP=VALUE" in err, err
    assert main(args + ["--define", "EXP=a", "--define", "NUMS=2"]) == 2
    assert "NUMS" in capsys.readouterr().err
    assert main(args + ["--define", "EXP=a", "--define", "NUM=2"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert src.read_text() == TEMPLATE                 # the files are never changed


def test_define_values_are_checked_when_parsed(capsys):
    assert main(["verify", "a", "b", "--weights", "w", "--define", "NOEQUALS"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_a_window_past_the_map_giving_one_output_is_the_map():
    """dilate keeps PSPNet's one-bin pool at the map's scale (60 on a 59 map at OS 4):
    Caffe clips it, OpenCV refuses it; 59 computes the same."""
    net = _net('layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
               'pooling_param { pool: AVE kernel_size: 8 stride: 8 } }\n'
               'layer { name: "q" type: "Pooling" bottom: "data" top: "q" '
               'pooling_param { pool: AVE kernel_size: 4 stride: 4 } }\n')
    for engine in ("caffe", "opencv"):
        p = prepare(analyse(net), engine).net
        assert _layer(p, "p").pooling_param.kernel_size == 7
        assert _layer(p, "p").pooling_param.stride == 8
        assert _layer(p, "q") == _layer(net, "q")
