"""The NetBuilder writes fields through the schema, in the forms Caffe files use."""

import pytest

from surgery.builder import NetBuilder, fill, window_fields
from surgery import caffe_pb2
from surgery.errors import SurgeryError


def test_layer_sets_nested_and_repeated_fields_through_descriptors():
    b = NetBuilder("t")
    layer = b.layer("Convolution", "conv", ["data"], convolution_param=dict(
        num_output=8, kernel_size=[7], stride=[2], pad=[3],
        weight_filler=dict(type="msra")), param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)])
    assert list(layer.top) == ["conv"]
    p = layer.convolution_param
    assert (p.num_output, list(p.kernel_size), list(p.stride), list(p.pad)) == (8, [7], [2], [3])
    assert p.weight_filler.type == "msra"
    assert [s.lr_mult for s in layer.param] == [1, 2] and layer.param[1].decay_mult == 0


def test_enum_values_by_name_and_unknown_names_are_errors():
    b = NetBuilder()
    layer = b.layer("Pooling", "p", "x", pooling_param=dict(pool="AVE"))
    assert layer.pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    with pytest.raises(SurgeryError, match="no field 'kernal_size'"):
        b.layer("Pooling", "q", "x", pooling_param=dict(kernal_size=3))
    with pytest.raises(SurgeryError, match="'MEAN'"):
        b.layer("Pooling", "r", "x", pooling_param=dict(pool="MEAN"))


def test_windows_use_h_w_fields_only_when_axes_differ():
    assert window_fields(kernel=3, stride=2, pad=1) == {"kernel_size": 3, "stride": 2, "pad": 1}
    assert window_fields(kernel=(1, 7), pad=(0, 3)) == {
        "kernel_h": 1, "kernel_w": 7, "pad_h": 0, "pad_w": 3}
    b = NetBuilder()
    b.conv("c", "x", num_output=4, kernel=(3, 5), stride=(2, 1), dilation=2, group=4, bias=False)
    p = b.net.layer[0].convolution_param
    assert (p.kernel_h, p.kernel_w, p.stride_h, p.stride_w) == (3, 5, 2, 1)
    assert list(p.kernel_size) == [] and list(p.dilation) == [2]
    assert p.group == 4 and not p.bias_term


def test_in_place_chain_and_joins():
    b = NetBuilder()
    b.input("data", (1, 3, 8, 8))
    x = b.conv("conv1", "data", num_output=4, kernel=3, pad=1)
    b.bn_scale(x, bn="bn1", scale="scale1", relu="relu1")
    y = b.pool("pool", x, global_pooling=True, method="AVE")
    z = b.eltwise("sum", [x, y], operation="PROD")
    b.concat("cat", [x, z])
    b.fc("fc", "cat", num_output=10)
    b.dropout("drop", "fc", ratio=0.3)
    b.softmax("prob", "fc")
    layers = {l.name: l for l in b.net.layer}
    for name in ("bn1", "scale1", "relu1"):
        assert list(layers[name].bottom) == list(layers[name].top) == ["conv1"]
    assert layers["bn1"].batch_norm_param.use_global_stats
    assert layers["scale1"].scale_param.bias_term
    assert layers["pool"].pooling_param.global_pooling
    assert not layers["pool"].pooling_param.HasField("kernel_size")
    assert layers["sum"].eltwise_param.operation == caffe_pb2.EltwiseParameter.PROD
    assert list(layers["cat"].bottom) == ["conv1", "sum"]
    assert abs(layers["drop"].dropout_param.dropout_ratio - 0.3) < 1e-7
    assert list(layers["data"].input_param.shape[0].dim) == [1, 3, 8, 8]


def test_fill_works_on_any_message():
    shape = fill(caffe_pb2.BlobShape(), {"dim": [2, 3]})
    assert list(shape.dim) == [2, 3]
