"""Legacy upgrade: V0, V1 layers, data fields, input header, BatchNorm specs, DeepLab hole."""

import re

import pytest

from surgery import caffe_pb2
from surgery.errors import SurgeryError
from surgery.io.prototxt import format_prototxt, parse_prototxt
from surgery.io.netfile import load_prototxt
from surgery.io.upgrade import upgrade_net

from conftest import CORPUS
VGG = CORPUS / "vgg" / "VGG_ILSVRC_16_layers_deploy.prototxt"
LARGEFOV = CORPUS / "deeplab_v1" / "DeepLab-LargeFOV_test.prototxt"

# Written out here, independently of the upgrader's own table.
EXPECTED_TYPES = {
    "CONVOLUTION": "Convolution", "RELU": "ReLU", "POOLING": "Pooling",
    "INNER_PRODUCT": "InnerProduct", "DROPOUT": "Dropout", "SOFTMAX": "Softmax",
    "IMAGE_SEG_DATA": "ImageSegData", "INTERP": "Interp", "MAT_WRITE": "MatWrite",
    "SILENCE": "Silence", "SEG_ACCURACY": "SegAccuracy",
}


def _v1_type(layer):
    return caffe_pb2.V1LayerParameter.LayerType.Name(layer.type)


def _upgrade(text):
    return upgrade_net(parse_prototxt(text))


# ---------------------------------------------------------------------------
# real nets


@pytest.mark.skipif(not VGG.is_file(), reason="shared corpus not available")
def test_vgg16_v1_upgrade_describes_the_same_network():
    old = load_prototxt(VGG, upgrade=False)
    new, notes = upgrade_net(old)
    assert len(old.layers) == 39 and len(old.layer) == 0
    assert list(old.input) == ["data"] and list(old.input_dim) == [1, 3, 224, 224]

    first, rest = new.layer[0], list(new.layer[1:])
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["data"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 3, 224, 224]]
    assert not new.input and not new.input_dim and not new.layers
    assert new.name == old.name

    assert [layer.name for layer in rest] == [layer.name for layer in old.layers]
    for before, after in zip(old.layers, rest):
        assert after.type == EXPECTED_TYPES[_v1_type(before)], before.name
        assert list(after.bottom) == list(before.bottom)
        assert list(after.top) == list(before.top)
        for block in ("convolution_param", "pooling_param", "inner_product_param",
                      "dropout_param"):
            assert after.HasField(block) == before.HasField(block)
            assert getattr(after, block) == getattr(before, block)
    assert sum(layer.type == "Convolution" for layer in rest) == 13
    assert sum(layer.type == "InnerProduct" for layer in rest) == 3
    assert any("39" in note for note in notes)
    assert any("Input layer" in note for note in notes)


@pytest.mark.skipif(not LARGEFOV.is_file(), reason="shared corpus not available")
def test_deeplab_largefov_hole_and_fork_types():
    text = LARGEFOV.read_text(encoding="utf-8")
    text = text.replace("${NUM_LABELS}", "21")
    text = re.sub(r"\$\{\w+\}", "x", text)
    old = parse_prototxt(text, str(LARGEFOV))
    new, notes = upgrade_net(old)
    by_name = {layer.name: layer for layer in new.layer}
    assert [layer.name for layer in new.layer] == [layer.name for layer in old.layers]

    for before, after in zip(old.layers, new.layer):
        assert after.type == EXPECTED_TYPES[_v1_type(before)], before.name
    assert by_name["data"].type == "ImageSegData"
    assert by_name["fc8_interp"].type == "Interp"
    assert by_name["fc8_interp"].interp_param.zoom_factor == 8
    assert by_name["fc8_mat"].type == "MatWrite"

    fc6 = by_name["fc6"].convolution_param
    assert list(fc6.dilation) == [12] and list(fc6.pad) == [12]
    assert not fc6.HasField("hole")
    for name in ("conv5_1", "conv5_2", "conv5_3"):
        assert list(by_name[name].convolution_param.dilation) == [2]
    assert list(by_name["conv4_1"].convolution_param.dilation) == []
    assert by_name["fc6"].HasField("strict_dim") and by_name["fc6"].strict_dim is False
    assert by_name["silence"].include[0].phase == caffe_pb2.TEST
    assert by_name["data"].image_data_param.has_label is False
    assert "hole" not in format_prototxt(new)
    assert sum("hole became dilation" in note for note in notes) == 4


# ---------------------------------------------------------------------------
# V1 details


def test_blobs_lr_and_weight_decay_pair_by_index():
    net, _ = _upgrade('layers { name: "c" type: CONVOLUTION blobs_lr: 1 blobs_lr: 2 '
                      'weight_decay: 1 param: "w" param: "b" param: "extra" '
                      'blob_share_mode: PERMISSIVE loss_weight: 0.5 '
                      'include { phase: TRAIN } exclude { stage: "x" } }')
    layer = net.layer[0]
    assert [(p.name, p.lr_mult) for p in layer.param] == [("w", 1), ("b", 2), ("extra", 1)]
    assert layer.param[0].decay_mult == 1 and not layer.param[1].HasField("decay_mult")
    assert layer.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not layer.param[1].HasField("share_mode")
    assert list(layer.loss_weight) == [0.5]
    assert layer.include[0].phase == caffe_pb2.TRAIN and layer.exclude[0].stage == ["x"]


def test_every_v1_param_block_is_carried_across():
    """Walk the schema: each *_param of V1LayerParameter must survive the upgrade."""
    v1 = caffe_pb2.V1LayerParameter(name="l", type=caffe_pb2.V1LayerParameter.CONVOLUTION)
    blocks = [f.name for f in v1.DESCRIPTOR.fields
              if f.message_type is not None and f.name.endswith("_param")]
    assert "convolution_param" in blocks and "transform_param" in blocks
    for name in blocks:
        getattr(v1, name).SetInParent()
    net = caffe_pb2.NetParameter()
    net.layers.append(v1)
    layer = upgrade_net(net)[0].layer[0]
    for name in blocks:
        assert layer.HasField(name), name


def test_every_v1_enum_type_has_a_name():
    names = caffe_pb2.V1LayerParameter.LayerType.keys()
    for enum_name in names:
        if enum_name == "NONE":
            continue
        net, _ = _upgrade(f'layers {{ name: "l" type: {enum_name} }}')
        assert net.layer[0].type and net.layer[0].type[0].isupper(), enum_name


def test_v1_data_transform_fields_move():
    net, notes = _upgrade('layers { name: "d" type: DATA top: "data" '
                          'data_param { source: "db" scale: 0.5 mean_file: "m" crop_size: 7 '
                          'mirror: true } }')
    layer = net.layer[0]
    assert layer.data_param.source == "db"
    assert not layer.data_param.HasField("scale") and not layer.data_param.HasField("crop_size")
    t = layer.transform_param
    assert (t.scale, t.mean_file, t.crop_size, t.mirror) == (0.5, "m", 7, True)
    assert any("transform_param" in note for note in notes)


def test_input_is_not_mutated():
    net = parse_prototxt('input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4 '
                         'layers { name: "c" type: CONVOLUTION convolution_param { hole: 2 } }')
    before = net.SerializeToString()
    new, _ = upgrade_net(net)
    assert net.SerializeToString() == before
    assert new is not net


def test_upgrade_is_idempotent():
    new, notes = _upgrade('input: "a" input_shape { dim: 2 } layers { name: "r" type: RELU }')
    again, notes_again = upgrade_net(new)
    assert notes and not notes_again and again == new


# ---------------------------------------------------------------------------
# input header


def test_several_inputs_with_input_dim():
    net, _ = _upgrade('input: "data" input: "im_info" input_dim: 1 input_dim: 3 '
                      'input_dim: 224 input_dim: 224 input_dim: 1 input_dim: 3 input_dim: 1 '
                      'input_dim: 1 layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    first = net.layer[0]
    assert list(first.top) == ["data", "im_info"]
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 3, 224, 224], [1, 3, 1, 1]]
    assert net.layer[1].name == "r"


def test_several_inputs_with_input_shape():
    net, _ = _upgrade('input: "a" input_shape { dim: 1 dim: 3 } input: "b" '
                      'input_shape { dim: 5 }')
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[1, 3], [5]]
    assert list(net.layer[0].top) == ["a", "b"]


@pytest.mark.parametrize("header", [
    'input: "a" input_dim: 1 input_dim: 3 input_dim: 8',
    'input: "a" input: "b" input_shape { dim: 1 }',
    'input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1',
])
def test_bad_input_header(header):
    with pytest.raises(SurgeryError, match="input"):
        _upgrade(header)


def test_bare_input_is_dropped():
    net, notes = _upgrade('input: "data" layer { name: "r" type: "ReLU" }')
    assert [layer.name for layer in net.layer] == ["r"] and not net.input
    assert any("dropped" in note for note in notes)


# ---------------------------------------------------------------------------
# hole


def test_hole_h_w_differ_gives_two_dilations():
    net, _ = _upgrade('layer { name: "c" type: "Convolution" '
                      'convolution_param { kernel_size: 3 hole_h: 2 hole_w: 4 } }')
    assert list(net.layer[0].convolution_param.dilation) == [2, 4]


def test_hole_equal_to_dilation_is_dropped():
    net, notes = _upgrade('layer { name: "c" type: "Convolution" '
                          'convolution_param { hole: 3 dilation: 3 } }')
    conv = net.layer[0].convolution_param
    assert list(conv.dilation) == [3] and not conv.HasField("hole")
    assert notes


def test_hole_disagreeing_with_dilation_names_layer():
    with pytest.raises(SurgeryError) as info:
        _upgrade('layer { name: "conv5" type: "Convolution" '
                 'convolution_param { hole: 2 dilation: 4 } }')
    assert "layer 'conv5'" in str(info.value) and "disagree" in str(info.value)


# ---------------------------------------------------------------------------
# refusals


def test_mixed_layer_and_layers_refused():
    with pytest.raises(SurgeryError, match="mixes `layer`"):
        _upgrade('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }')


# ---------------------------------------------------------------------------
# V0 (Caffe's own cases are in test_upgrade_caffe_cases.py; these are the edges)

V0_CONV = ('layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 } '
           'bottom: "data" top: "conv1" }')
V0_INPUT = 'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8 '


def test_v0_net_is_upgraded():
    net, notes = _upgrade(V0_INPUT + V0_CONV)
    assert [layer.type for layer in net.layer] == ["Input", "Convolution"]
    conv = net.layer[1].convolution_param
    assert (conv.num_output, list(conv.kernel_size)) == (4, [3])
    assert any("V0 layer" in note for note in notes)


@pytest.mark.parametrize("text, expect", [
    ('layers { layer { name: "x" type: "fancy" } }', "type 'fancy'"),
    ('layers { layer { name: "r" type: "relu" num_output: 3 } }', "`num_output` does not belong"),
    (V0_INPUT + 'layers { layer { name: "p" type: "padding" pad: 1 } bottom: "data" top: "p" } '
     'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }', "only a 'conv' or 'pool'"),
    (V0_INPUT + 'layers { layer { name: "c" type: "conv" } bottom: "nowhere" top: "c" }',
     "bottom 'nowhere'"),
    (V0_CONV + ' layers { name: "r" type: RELU }', "V1 layer in a V0 net"),
])
def test_v0_problems_caffe_stops_at_name_the_layer(text, expect):
    with pytest.raises(SurgeryError, match=re.escape(expect)) as info:
        _upgrade(text)
    assert info.value.layer


def test_v0_fields_caffe_drops_are_dropped_with_a_note():
    net, notes = _upgrade('debug_info: true ' + V0_INPUT +
                          'layers { layer { name: "d" type: "data" source: "db" new_num: 5 } '
                          'top: "x" blobs_lr: 3 }')
    assert not net.HasField("debug_info") and len(net.layer[1].param) == 0
    assert any("`new_num`" in note and "blobs_lr" in note for note in notes)
    assert any("debug_info" in note for note in notes)


def test_unread_padding_layer_is_removed_with_a_note():
    net, notes = _upgrade(V0_INPUT + 'layers { layer { name: "p" type: "padding" pad: 1 } '
                          'bottom: "data" top: "p" } ' + V0_CONV)
    assert [layer.name for layer in net.layer] == ["input", "conv1"]
    assert not net.layer[1].convolution_param.pad
    assert any("no layer reads" in note for note in notes)


def test_padding_merge_sets_pad_on_a_pool_layer():
    net, _ = _upgrade(V0_INPUT + 'layers { layer { name: "p" type: "padding" pad: 2 } '
                      'bottom: "data" top: "p" } layers { layer { name: "pool" type: "pool" '
                      'kernelsize: 3 stride: 2 pool: AVE } bottom: "p" top: "pool" }')
    pool = net.layer[1]
    assert list(pool.bottom) == ["data"]
    assert (pool.pooling_param.pad, pool.pooling_param.pool) == (2, caffe_pb2.PoolingParameter.AVE)


# ---------------------------------------------------------------------------
# data transformation and BatchNorm steps


def test_data_step_fills_every_data_layer_as_caffe_does():
    """Once one layer needs the step, Caffe gives every Data/ImageData/WindowData layer its
    block and a transform_param, empty or not; a DeepLab ImageSegData layer is not touched."""
    net, _ = _upgrade('layers { name: "a" type: DATA data_param { mirror: true } } '
                      'layers { name: "b" type: IMAGE_DATA } '
                      'layers { name: "c" type: IMAGE_SEG_DATA image_data_param { crop_size: 3 } }')
    a, b, c = net.layer
    assert a.transform_param.mirror and not a.data_param.HasField("mirror")
    assert b.HasField("image_data_param") and b.HasField("transform_param")
    assert c.image_data_param.crop_size == 3 and not c.HasField("transform_param")


def test_data_step_is_skipped_when_no_layer_needs_it():
    net, notes = _upgrade('layers { name: "b" type: IMAGE_DATA }')
    assert not net.layer[0].HasField("transform_param")
    assert not any("transform_param" in note for note in notes)


def _batch_norm(params, type_name="BatchNorm"):
    specs = " ".join(f'param {{ name: "p{i}" lr_mult: 1 }}' for i in range(params))
    return f'layer {{ name: "bn" type: "{type_name}" {specs} }}'


def test_batch_norm_with_three_param_specs_is_frozen():
    """Caffe sets lr_mult and decay_mult to 0 in each spec and leaves the rest."""
    net, notes = _upgrade(_batch_norm(3))
    specs = net.layer[0].param
    assert [(p.name, p.lr_mult, p.decay_mult) for p in specs] == [
        ("p0", 0, 0), ("p1", 0, 0), ("p2", 0, 0)]
    assert all(p.HasField("decay_mult") for p in specs)
    assert any("BatchNorm" in note and "'bn'" in note for note in notes)


def test_frozen_batch_norm_needs_no_note():
    text = _batch_norm(3).replace("lr_mult: 1", "lr_mult: 0 decay_mult: 0")
    net, notes = _upgrade(text)
    assert net == parse_prototxt(text) and not notes


@pytest.mark.parametrize("params, type_name", [(2, "BatchNorm"), (4, "BatchNorm"), (3, "BN"),
                                               (3, "Scale")])
def test_other_param_specs_stay(params, type_name):
    net, notes = _upgrade(_batch_norm(params, type_name))
    assert net == parse_prototxt(_batch_norm(params, type_name)) and not notes


# ---------------------------------------------------------------------------
# V0 through the commands

CAFFE_CASES = __import__("pathlib").Path(__file__).parent / "data" / "caffe_upgrade"


def test_upgrade_command_on_a_v0_file(tmp_path, capsys):
    from surgery.cli import main

    out = tmp_path / "out.prototxt"
    assert main(["upgrade", str(CAFFE_CASES / "imagenet.v0.prototxt"), "-o", str(out)]) == 0
    expected = parse_prototxt((CAFFE_CASES / "imagenet.v2.prototxt").read_text())
    assert parse_prototxt(out.read_text()) == expected
    err = capsys.readouterr().err
    for step in ("padding layer", "V0 layer", "V1 `layers`", "standard formatting"):
        assert step in err, step


def test_dilate_on_a_v0_file_writes_the_canonical_form_with_a_note(tmp_path, capsys):
    from surgery.cli import main

    src = tmp_path / "v0.prototxt"
    src.write_text("# a V0 net\n" + V0_INPUT.replace("8", "32") +
                   '\nlayers { layer { name: "c1" type: "conv" num_output: 2 kernelsize: 3 '
                   'stride: 2 } bottom: "data" top: "c1" }\n'
                   'layers { layer { name: "c2" type: "conv" num_output: 2 kernelsize: 3 } '
                   'bottom: "c1" top: "c2" }\n')
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(src), "-s", "1", "-o", str(out)]) == 0
    assert "V0" in capsys.readouterr().err
    net = parse_prototxt(out.read_text())
    assert [layer.type for layer in net.layer] == ["Input", "Convolution", "Convolution"]
    assert list(net.layer[1].convolution_param.stride) == [1]
    assert list(net.layer[2].convolution_param.dilation) == [2]


def test_v0_net_with_a_number_placeholder_is_refused(tmp_path):
    from surgery.io.netfile import load_net

    src = tmp_path / "t.prototxt"
    src.write_text(V0_INPUT + '\nlayers {\n  layer { name: "c" type: "conv" '
                   'num_output: ${N} kernelsize: 1 }\n  bottom: "data" top: "c"\n}\n')
    with pytest.raises(SurgeryError, match=re.escape("${N}")) as info:
        load_net(src)
    assert (info.value.line, info.value.file) == (3, str(src))
