"""Legacy upgrade: V1 layers, input header, DeepLab hole; real corpus nets and small cases."""

import re

import pytest

from surgery import caffe_pb2
from surgery.errors import SurgeryError
from surgery.io.prototxt import format_prototxt, load_prototxt, parse_prototxt
from surgery.io.upgrade import upgrade_net

from _corpus import CORPUS
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


def test_v0_refused():
    with pytest.raises(SurgeryError, match="V0") as info:
        _upgrade('layers { layer { name: "conv1" type: "conv" num_output: 4 } }')
    assert "conv1" in str(info.value)
