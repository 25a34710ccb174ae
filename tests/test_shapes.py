"""Caffe-exact shape and param-shape inference, one tiny text-built net per rule,
then checkpoints on real corpus nets derived by hand from their declared inputs."""


import pytest
from google.protobuf import text_format

from surgery import caffe_pb2
from surgery.analysis.analyse import analyse
from surgery.errors import SurgeryError
from surgery.layers import Role, pool_has_extra_window, pool_out_size, rule_for
from surgery.pair import Pair, Window

from conftest import corpus_net as corpus


def net(text):
    msg = caffe_pb2.NetParameter()
    text_format.Parse(text, msg)
    return msg


def inp(*dims, top="data"):
    d = " ".join(f"dim: {x}" for x in dims)
    return f'layer {{ name: "in_{top}" type: "Input" top: "{top}" input_param {{ shape {{ {d} }} }} }}\n'


def layer(name, type_, bottoms, tops=None, body=""):
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [name] if tops is None else ([tops] if isinstance(tops, str) else tops)
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {body} }}\n'


def run(text, **kw):
    return analyse(net(text), **kw)


def conv_body(**kw):
    fields = " ".join(f"{k}: {v}" for k, v in kw.items())
    return f"convolution_param {{ {fields} }}"


# --- convolution family ---------------------------------------------------

def test_conv_floor_formula_and_params():
    a = run(inp(2, 3, 7, 7) + layer("c", "Convolution", "data", body=conv_body(num_output=5, kernel_size=3, stride=2)))
    assert a.shapes["c"] == (2, 5, 3, 3)          # floor((7-3)/2)+1
    assert a.param_shapes["c"] == [(5, 3, 3, 3), (5,)]
    a = run(inp(1, 3, 8, 8) + layer("c", "Convolution", "data", body=conv_body(num_output=5, kernel_size=3, stride=2)))
    assert a.shapes["c"] == (1, 5, 3, 3)          # floor(5/2)+1: the last column is dropped


def test_conv_dilation_and_no_bias():
    a = run(inp(1, 3, 9, 9) + layer("c", "Convolution", "data",
                                    body=conv_body(num_output=4, kernel_size=3, dilation=2, pad=1, bias_term="false")))
    assert a.shapes["c"] == (1, 4, 7, 7)          # extent 5: 9+2-5+1
    assert a.param_shapes["c"] == [(4, 3, 3, 3)]


def test_per_axis_kernel_stride_pad_and_two_value_forms():
    body = "convolution_param { num_output: 2 kernel_h: 1 kernel_w: 7 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 3 }"
    a = run(inp(1, 3, 10, 10) + layer("c", "Convolution", "data", body=body))
    assert a.shapes["c"] == (1, 2, 5, 10)
    assert a.param_shapes["c"] == [(2, 3, 1, 7), (2,)]
    body = "convolution_param { num_output: 2 kernel_size: 3 kernel_size: 5 dilation: 1 dilation: 2 pad: 0 pad: 4 }"
    a = run(inp(1, 3, 12, 12) + layer("c", "Convolution", "data", body=body))
    assert a.shapes["c"] == (1, 2, 10, 12)        # w: extent 9, 12+8-9+1
    assert rule_for("Convolution").window(a.graph.node("c").layer) == Window(
        Pair(3, 5), Pair(1, 1), Pair(0, 4), Pair(1, 2))


def test_mixed_forms_are_refused():
    body = "convolution_param { num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3 }"
    with pytest.raises(SurgeryError, match="layer 'c'.*cannot be mixed"):
        run(inp(1, 3, 8, 8) + layer("c", "Convolution", "data", body=body))


def test_group_param_shapes_and_divisibility():
    a = run(inp(1, 8, 6, 6) + layer("c", "Convolution", "data", body=conv_body(num_output=12, kernel_size=3, group=4)))
    assert a.param_shapes["c"] == [(12, 2, 3, 3), (12,)]
    with pytest.raises(SurgeryError, match="layer 'c'.*not divisible by group"):
        run(inp(1, 8, 6, 6) + layer("c", "Convolution", "data", body=conv_body(num_output=10, kernel_size=3, group=4)))
    with pytest.raises(SurgeryError, match="layer 'c'.*not divisible by group"):
        run(inp(1, 6, 6, 6) + layer("c", "Convolution", "data", body=conv_body(num_output=8, kernel_size=3, group=4)))


def test_output_too_small_is_an_error():
    with pytest.raises(SurgeryError, match="layer 'c'.*non-positive"):
        run(inp(1, 3, 2, 2) + layer("c", "Convolution", "data", body=conv_body(num_output=2, kernel_size=5)))


def test_depthwise_fork_ignores_num_output():
    a = run(inp(1, 6, 8, 8) + layer("dw", "ConvolutionDepthwise", "data",
                                    body=conv_body(num_output=99, kernel_size=3, stride=2, pad=1)))
    assert a.shapes["dw"] == (1, 6, 4, 4)
    assert a.param_shapes["dw"] == [(6, 1, 3, 3), (6,)]


def test_deconvolution():
    a = run(inp(1, 4, 5, 5) + layer("up", "Deconvolution", "data",
                                    body=conv_body(num_output=6, kernel_size=4, stride=2, pad=1, group=2)))
    assert a.shapes["up"] == (1, 6, 10, 10)       # 2*4 + 4 - 2
    assert a.param_shapes["up"] == [(4, 3, 4, 4), (6,)]


# --- pooling --------------------------------------------------------------

def pool(name, bottom, tops=None, **kw):
    fields = " ".join(f"{k}: {v}" for k, v in kw.items())
    return layer(name, "Pooling", bottom, tops, f"pooling_param {{ {fields} }}")


def test_pool_ceil_adds_extra_window_floor_does_not():
    a = run(inp(1, 2, 6, 6) + pool("p", "data", kernel_size=3, stride=2))
    assert a.shapes["p"] == (1, 2, 3, 3)          # ceil(3/2)+1
    a = run(inp(1, 2, 6, 6) + pool("p", "data", kernel_size=3, stride=2, round_mode="FLOOR"))
    assert a.shapes["p"] == (1, 2, 2, 2)
    a = run(inp(1, 2, 6, 6) + pool("p", "data", kernel_size=3, stride=2, ceil_mode="false"))
    assert a.shapes["p"] == (1, 2, 2, 2)
    a = run(inp(1, 2, 7, 7) + pool("p", "data", kernel_size=3, stride=2))
    assert a.shapes["p"] == (1, 2, 3, 3)          # exact fit: no extra window
    assert pool_has_extra_window(6, 3, 2) and not pool_has_extra_window(7, 3, 2)


def test_pool_pad_clip_rule():
    # ceil((5+2-2)/2)+1 = 4, but window 3 would start at 6 >= 5+1: clipped to 3.
    a = run(inp(1, 1, 5, 5) + pool("p", "data", kernel_size=2, stride=2, pad=1))
    assert a.shapes["p"] == (1, 1, 3, 3)
    assert pool_out_size(5, 2, 2, 1) == 3 and pool_out_size(6, 2, 2, 1) == 4


def test_pool_per_axis_global_and_mask_top():
    a = run(inp(1, 2, 9, 6) + pool("p", "data", kernel_h=3, kernel_w=2, stride_h=3, stride_w=2))
    assert a.shapes["p"] == (1, 2, 3, 3)
    a = run(inp(1, 2, 9, 6) + pool("g", "data", pool="AVE", global_pooling="true"))
    assert a.shapes["g"] == (1, 2, 1, 1)
    a = run(inp(1, 2, 8, 8) + pool("p", "data", ["p", "mask"], kernel_size=2, stride=2))
    assert a.shapes["p"] == a.shapes["mask"] == (1, 2, 4, 4)
    with pytest.raises(SurgeryError, match="layer 'p'.*MAX"):
        run(inp(1, 2, 8, 8) + pool("p", "data", ["p", "mask"], pool="AVE", kernel_size=2, stride=2))
    with pytest.raises(SurgeryError, match="layer 'p'.*smaller than kernel"):
        run(inp(1, 2, 8, 8) + pool("p", "data", kernel_size=2, pad=2))


# --- joins and plumbing ---------------------------------------------------

TWO = inp(1, 4, 6, 6) + inp(1, 2, 6, 6, top="b")


def test_eltwise_and_concat():
    a = run(inp(1, 4, 6, 6) + inp(1, 4, 6, 6, top="b") + layer("e", "Eltwise", ["data", "b"]))
    assert a.shapes["e"] == (1, 4, 6, 6)
    with pytest.raises(SurgeryError, match="layer 'e'.*'b' has shape"):
        run(TWO + layer("e", "Eltwise", ["data", "b"]))
    a = run(TWO + layer("cat", "Concat", ["data", "b"]))
    assert a.shapes["cat"] == (1, 6, 6, 6)
    with pytest.raises(SurgeryError, match="layer 'cat'"):
        run(inp(1, 4, 6, 6) + inp(1, 4, 5, 6, top="b") + layer("cat", "Concat", ["data", "b"]))
    a = run(inp(1, 4, 6, 6) + inp(1, 4, 5, 6, top="b")
            + layer("cat", "Concat", ["data", "b"], body="concat_param { concat_dim: 2 }"))
    assert a.shapes["cat"] == (1, 4, 11, 6)


def test_slice_points_and_equal_split():
    a = run(inp(1, 10, 4, 4) + layer("s", "Slice", "data", ["a", "b", "c"],
                                     "slice_param { slice_point: 2 slice_point: 7 }"))
    assert [a.shapes[t] for t in "abc"] == [(1, 2, 4, 4), (1, 5, 4, 4), (1, 3, 4, 4)]
    a = run(inp(1, 10, 4, 4) + layer("s", "Slice", "data", ["a", "b"]))
    assert a.shapes["a"] == a.shapes["b"] == (1, 5, 4, 4)
    with pytest.raises(SurgeryError, match="layer 's'.*evenly"):
        run(inp(1, 10, 4, 4) + layer("s", "Slice", "data", ["a", "b", "c"]))
    a = run(inp(1, 10, 4, 6) + layer("s", "Slice", "data", ["a", "b"], "slice_param { axis: -1 slice_point: 1 }"))
    assert a.shapes["b"] == (1, 10, 4, 5)


def test_flatten_reshape_permute():
    a = run(inp(2, 3, 4, 5) + layer("f", "Flatten", "data"))
    assert a.shapes["f"] == (2, 60)
    a = run(inp(2, 3, 4, 5) + layer("f", "Flatten", "data", body="flatten_param { axis: 1 end_axis: 2 }"))
    assert a.shapes["f"] == (2, 12, 5)
    a = run(inp(2, 3, 4, 5) + layer("r", "Reshape", "data", body="reshape_param { shape { dim: 0 dim: -1 dim: 10 } }"))
    assert a.shapes["r"] == (2, 6, 10)
    a = run(inp(2, 3, 4, 5) + layer("r", "Reshape", "data",
                                    body="reshape_param { shape { dim: 2 dim: 2 } axis: 2 num_axes: 1 }"))
    assert a.shapes["r"] == (2, 3, 2, 2, 5)
    with pytest.raises(SurgeryError, match="layer 'r'"):
        run(inp(2, 3, 4, 5) + layer("r", "Reshape", "data", body="reshape_param { shape { dim: 7 dim: -1 } }"))
    a = run(inp(2, 3, 4, 5) + layer("p", "Permute", "data", body="permute_param { order: 0 order: 2 order: 3 order: 1 }"))
    assert a.shapes["p"] == (2, 4, 5, 3)


def test_crop():
    a = run(inp(1, 3, 20, 22) + inp(1, 5, 16, 16, top="ref")
            + layer("cr", "Crop", ["data", "ref"], body="crop_param { axis: 2 offset: 2 }"))
    assert a.shapes["cr"] == (1, 3, 16, 16)
    with pytest.raises(SurgeryError, match="layer 'cr'.*exceeds"):
        run(inp(1, 3, 20, 22) + inp(1, 5, 16, 16, top="ref")
            + layer("cr", "Crop", ["data", "ref"], body="crop_param { axis: 2 offset: 2 offset: 7 }"))


def test_inner_product_axis_and_transpose():
    a = run(inp(2, 3, 4, 5) + layer("fc", "InnerProduct", "data", body="inner_product_param { num_output: 7 }"))
    assert a.shapes["fc"] == (2, 7)
    assert a.param_shapes["fc"] == [(7, 60), (7,)]
    a = run(inp(2, 3, 4, 5) + layer("fc", "InnerProduct", "data",
                                    body="inner_product_param { num_output: 7 axis: 2 transpose: true bias_term: false }"))
    assert a.shapes["fc"] == (2, 3, 7)
    assert a.param_shapes["fc"] == [(20, 7)]


def test_softmax_losses_accuracy():
    text = (inp(4, 10, 3, 3) + inp(4, 1, 3, 3, top="label")
            + layer("prob", "Softmax", "data")
            + layer("loss", "SoftmaxWithLoss", ["data", "label"], ["loss", "p2"])
            + layer("acc", "Accuracy", ["data", "label"], ["acc", "per_class"]))
    a = run(text)
    assert a.shapes["prob"] == (4, 10, 3, 3)
    assert a.shapes["loss"] == () and a.shapes["p2"] == (4, 10, 3, 3)
    assert a.shapes["acc"] == () and a.shapes["per_class"] == (10,)


# --- fork layers ----------------------------------------------------------

def interp(body):
    return run(inp(1, 2, 9, 9) + layer("i", "Interp", "data", body=f"interp_param {{ {body} }}")).shapes["i"]


def test_interp_rules():
    assert interp("zoom_factor: 4") == (1, 2, 33, 33)             # 9 + 8*3
    assert interp("shrink_factor: 4") == (1, 2, 3, 3)             # 8//4 + 1
    assert interp("height: 5 width: 7") == (1, 2, 5, 7)
    assert interp("zoom_factor: 2 pad_beg: -1 pad_end: -1") == (1, 2, 13, 13)
    assert interp("shrink_factor: 2 zoom_factor: 3") == (1, 2, 13, 13)  # 5, then 5+4*2
    a = run(inp(1, 2, 9, 9) + inp(1, 1, 4, 6, top="ref") + layer("i", "Interp", ["data", "ref"]))
    assert a.shapes["i"] == (1, 2, 4, 6)
    with pytest.raises(SurgeryError, match="layer 'i'"):
        interp("pad_beg: 1 zoom_factor: 2")


def test_norm_layers_param_shapes():
    text = (inp(1, 6, 4, 4)
            + layer("bn", "BatchNorm", "data", "data")
            + layer("sc", "Scale", "data", "data", "scale_param { bias_term: true }")
            + layer("psp", "BN", "data", "data", "bn_param { frozen: true }")
            + layer("seg", "BN", "data", "data", "bn_param { bn_mode: INFERENCE }")
            + layer("pr", "PReLU", "data", "data")
            + layer("prs", "PReLU", "data", "data", "prelu_param { channel_shared: true }")
            + layer("nm", "Normalize", "data", "n1", "norm_param { channel_shared: false }")
            + layer("nms", "Normalize", "data", "n2"))
    p = run(text).param_shapes
    assert p["bn"] == [(6,), (6,), (1,)]
    assert p["sc"] == [(6,), (6,)]
    assert p["psp"] == [(1, 6, 1, 1)] * 4
    assert p["seg"] == [(1, 6, 1, 1)] * 2
    assert p["pr"] == [(6,)] and p["prs"] == [(1,)]
    assert p["nm"] == [(6,)] and p["nms"] == [()]


def test_scale_with_second_bottom_and_axpy():
    text = inp(1, 6, 4, 4) + inp(1, 6, top="w") + layer("sc", "Scale", ["data", "w"])
    with pytest.raises(SurgeryError, match="layer 'sc'.*does not match"):
        run(text)    # (1, 6) lines up with axes 1-2, i.e. (6, 4)
    text = (inp(1, 6, 4, 4) + inp(1, 6, top="w")
            + layer("sc", "Scale", ["data", "w"], "s", "scale_param { axis: 0 bias_term: true }"))
    a = run(text)
    assert a.shapes["s"] == (1, 6, 4, 4) and a.param_shapes["sc"] == [(1, 6)]
    text = inp(1, 6, 4, 4) + inp(6, top="w") + layer("sc", "Scale", ["data", "w"], "s")
    assert run(text).param_shapes["sc"] == []
    text = (inp(1, 6, 4, 4) + inp(1, 6, 1, 1, top="a") + inp(1, 6, 4, 4, top="y")
            + layer("ax", "Axpy", ["a", "data", "y"]))
    assert run(text).shapes["ax"] == (1, 6, 4, 4)


def test_upsample_shuffle_priorbox():
    a = run(inp(1, 3, 5, 7) + pool("p", "data", ["p", "m"], kernel_size=2, stride=2)
            + layer("up", "Upsample", ["p", "m"], body="upsample_param { scale: 2 }")
            + layer("up2", "Upsample", ["p", "m"], body="upsample_param { scale: 2 upsample_h: 5 upsample_w: 7 }"))
    assert a.shapes["p"] == (1, 3, 3, 4)
    assert a.shapes["up"] == (1, 3, 6, 8) and a.shapes["up2"] == (1, 3, 5, 7)
    with pytest.raises(SurgeryError, match="layer 'sh'"):
        run(inp(1, 8, 2, 2) + layer("sh", "ShuffleChannel", "data", body="shuffle_channel_param { group: 3 }"))
    a = run(inp(1, 8, 3, 5) + inp(1, 3, 30, 30, top="img")
            + layer("pb", "PriorBox", ["data", "img"],
                    body="prior_box_param { min_size: 30 max_size: 60 aspect_ratio: 2 aspect_ratio: 3 flip: true }"))
    assert a.shapes["pb"] == (1, 2, 3 * 5 * 6 * 4)   # ratios 1,2,1/2,3,1/3 -> 5 + 1 max


def test_sources_and_overrides():
    a = run('layer { name: "d" type: "DummyData" top: "x" top: "y" '
            'dummy_data_param { num: 2 channels: 3 height: 4 width: 5 num: 2 channels: 1 height: 1 width: 1 } }')
    assert a.shapes["x"] == (2, 3, 4, 5) and a.shapes["y"] == (2, 1, 1, 1)
    a = run('layer { name: "m" type: "MemoryData" top: "x" top: "l" '
            'memory_data_param { batch_size: 8 channels: 3 height: 32 width: 30 } }')
    assert a.shapes["x"] == (8, 3, 32, 30) and a.shapes["l"] == (8,)
    text = inp(1, 3, 10, 10) + layer("c", "Convolution", "data", body=conv_body(num_output=2, kernel_size=3))
    assert run(text, input_shapes={"data": (2, 3, 20, 20)}).shapes["c"] == (2, 2, 18, 18)
    with pytest.raises(SurgeryError, match="'c'.*not an input"):
        run(text, input_shapes={"c": (1, 2, 3, 3)})
    a = run('input: "im" input_dim: 1 input_dim: 3 input_dim: 6 input_dim: 6\n'
            + layer("c", "Convolution", "im", body=conv_body(num_output=2, kernel_size=3)))
    assert a.shapes["c"] == (1, 2, 4, 4)


def test_unknown_layer_stops_inference_downstream():
    text = (inp(1, 3, 8, 8) + layer("c1", "Convolution", "data", body=conv_body(num_output=2, kernel_size=3))
            + layer("weird", "MyCustomLayer", "c1")
            + layer("c2", "Convolution", "weird", body=conv_body(num_output=2, kernel_size=3))
            + layer("py", "Python", "c1", "pyout"))
    a = run(text)
    assert a.shapes["c1"] == (1, 2, 6, 6)
    assert a.shapes["weird"] is None and a.shapes["c2"] is None and a.shapes["pyout"] is None
    assert set(a.stopped) == {"weird", "py"}
    assert "MyCustomLayer" in a.stopped["weird"]
    assert a.param_shapes["c2"] == [None, None]   # weight and bias, sizes unknown
    assert any("weird" in w for w in a.warnings)
    a = run('layer { name: "d" type: "Data" top: "data" top: "label" }'
            + layer("c", "Convolution", "data", body=conv_body(num_output=2, kernel_size=3)))
    assert a.shapes["c"] is None and "d" in a.stopped
    a = run('layer { name: "d" type: "Data" top: "data" top: "label" }'
            + layer("c", "Convolution", "data", body=conv_body(num_output=2, kernel_size=3)),
            input_shapes={"data": (1, 3, 5, 5)})
    assert a.shapes["c"] == (1, 2, 3, 3) and "d" not in a.stopped


def test_in_place_shape_change_is_refused():
    text = inp(1, 3, 8, 8) + layer("f", "Flatten", "data", "data")
    with pytest.raises(SurgeryError, match="layer 'f'.*in-place"):
        run(text)


# --- real nets ------------------------------------------------------------



def test_alexnet_conv1():
    a = analyse(corpus("bvlc_alexnet/deploy.prototxt"))
    assert a.shapes["conv1"] == (10, 96, 55, 55)     # (227-11)/4+1
    assert a.shapes["pool1"] == (10, 96, 27, 27)     # ceil((55-3)/2)+1
    assert a.shapes["pool5"] == (10, 256, 6, 6)
    assert a.param_shapes["conv2"] == [(256, 48, 5, 5), (256,)]   # group 2
    assert a.param_shapes["fc6"] == [(4096, 9216), (4096,)]


def test_vgg16_pool5_from_v1_file():
    a = analyse(corpus("vgg/VGG_ILSVRC_16_layers_deploy.prototxt"))
    assert a.shapes["pool5"][1:] == (512, 7, 7)
    assert a.param_shapes["fc6"] == [(4096, 25088), (4096,)]


def test_googlenet_and_squeezenet():
    a = analyse(corpus("bvlc_googlenet/deploy.prototxt"))
    assert a.shapes["pool1/3x3_s2"][2:] == (56, 56)  # ceil((112-3)/2)+1
    assert a.shapes["pool5/7x7_s1"] == (10, 1024, 1, 1)
    a = analyse(corpus("squeezenet/SqueezeNet_v1.0_deploy.prototxt"))
    assert a.shapes["pool1"][2:] == (55, 55)         # 227 -> conv 111 -> pool ceil(108/2)+1
    assert a.shapes["fire9/concat"][1:] == (512, 13, 13)
    assert a.shapes["conv10"][2:] == (15, 15)        # 1x1 conv with pad 1
    assert a.shapes["pool10"][1:] == (1000, 1, 1)


def test_densenet_ceil_mode_false():
    a = analyse(corpus("densenet/DenseNet_121.prototxt"))
    assert a.shapes["conv1"][2:] == (112, 112)
    assert a.shapes["pool1"][2:] == (56, 56)         # CEIL would give 57
    assert a.shapes["conv5_blk/bn"] == (1, 1024, 7, 7)


def test_pspnet_fork_layers():
    a = analyse(corpus("pspnet/pspnet101_VOC2012_473.prototxt"))
    assert a.shapes["conv5_3_pool1_interp"][2:] == (60, 60)
    assert a.param_shapes["conv1_1_3x3_s2/bn"] == [(1, 64, 1, 1)] * 4
    assert not a.stopped


# --- registry windows: read and write back in the file's form -------------

def one_layer(text):
    msg = caffe_pb2.LayerParameter()
    text_format.Parse(text, msg)
    return msg


def param_text(msg):
    return text_format.MessageToString(msg, as_one_line=True)


def W(k, s, p, d):
    return Window(Pair.of(k), Pair.of(s), Pair.of(p), Pair.of(d))


def test_conv_with_window_keeps_repeated_single_values():
    rule = rule_for("Convolution")
    layer = one_layer('name: "c" type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 }')
    new = rule.with_window(layer, W(3, 1, 2, 2))
    assert param_text(new.convolution_param) == "num_output: 4 pad: 2 kernel_size: 3 stride: 1 dilation: 2"
    assert rule.window(new) == W(3, 1, 2, 2)
    assert rule.window(layer) == W(3, 2, 1, 1)            # the input is untouched
    new = rule.with_window(layer, W(3, (1, 2), (2, 1), (2, 1)))
    assert list(new.convolution_param.stride) == [1, 2] and list(new.convolution_param.dilation) == [2, 1]


def test_conv_with_window_adds_no_default_fields():
    rule = rule_for("Convolution")
    layer = one_layer('name: "c" type: "Convolution" convolution_param { num_output: 4 kernel_size: 1 }')
    assert param_text(rule.with_window(layer, W(1, 1, 0, 1)).convolution_param) == "num_output: 4 kernel_size: 1"
    # A dilation brought back to 1 is dropped (issue 25: a round trip gives back the text),
    # unless the file itself wrote 1.
    layer = one_layer('name: "c" type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 dilation: 2 }')
    assert list(rule.with_window(layer, W(3, 1, 0, 1)).convolution_param.dilation) == []
    layer = one_layer('name: "c" type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 dilation: 1 }')
    assert list(rule.with_window(layer, W(3, 1, 0, 1)).convolution_param.dilation) == [1]


def test_conv_with_window_keeps_h_w_form():
    rule = rule_for("Convolution")
    layer = one_layer('name: "c" type: "Convolution" '
                      'convolution_param { num_output: 4 kernel_h: 1 kernel_w: 7 pad_h: 0 pad_w: 3 }')
    new = rule.with_window(layer, W((1, 7), (2, 2), (0, 6), (1, 2)))
    cp = new.convolution_param
    assert (cp.kernel_h, cp.kernel_w, cp.pad_h, cp.pad_w) == (1, 7, 0, 6)
    assert (cp.stride_h, cp.stride_w) == (2, 2) and not len(cp.stride) and not len(cp.pad)
    assert list(cp.dilation) == [1, 2]                      # no dilation_h/w exists in Caffe
    assert rule.window(new) == W((1, 7), 2, (0, 6), (1, 2))


def test_pooling_with_window():
    rule = rule_for("Pooling")
    layer = one_layer('name: "p" type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }')
    assert param_text(rule.with_window(layer, W(3, 1, 1, 1)).pooling_param) == \
        "pool: MAX kernel_size: 3 stride: 1 pad: 1"
    new = rule.with_window(layer, W(3, (1, 2), 0, 1))
    assert (new.pooling_param.stride_h, new.pooling_param.stride_w) == (1, 2)
    assert not new.pooling_param.HasField("stride") and rule.window(new) == W(3, (1, 2), 0, 1)
    with pytest.raises(SurgeryError, match="layer 'p'.*dilation"):
        rule.with_window(layer, W(3, 1, 2, 2))
    glob = one_layer('name: "g" type: "Pooling" pooling_param { pool: AVE global_pooling: true }')
    assert rule.window(glob) is None and rule.collapses(glob) and rule.reads_window(layer)
    with pytest.raises(SurgeryError, match="layer 'g'"):
        rule.with_window(glob, W(3, 1, 0, 1))


def test_registry_roles_and_unknown():
    assert rule_for("Deconvolution").role is Role.RESAMPLE
    assert rule_for("Eltwise").role is Role.JOIN and rule_for("SoftmaxWithLoss").role is Role.SINK
    unknown = rule_for("NoSuchType")
    assert unknown.role is Role.UNKNOWN and rule_for("Python").role is Role.UNKNOWN
    assert rule_for("ReLU").window(one_layer('name: "r" type: "ReLU"')) is None
    with pytest.raises(SurgeryError, match="layer 'r'"):
        rule_for("ReLU").with_window(one_layer('name: "r" type: "ReLU"'), W(1, 1, 0, 1))


def test_data_layer_label_follows_the_given_image_size():
    text = ('layer { name: "d" type: "DenseImageData" top: "data" top: "label" '
            'dense_image_data_param { source: "x" batch_size: 1 } }\n'
            + layer("score", "Convolution", "data", body=conv_body(num_output=5, kernel_size=1))
            + layer("loss", "SoftmaxWithLoss", ["score", "label"], [])
            + layer("acc", "SegAccuracy", ["score", "label"], "acc"))
    a = run(text)
    assert a.shapes["label"] is None and "d" in a.stopped
    a = run(text, input_shapes={"data": (2, 3, 12, 16)})
    assert a.shapes["label"] == (2, 1, 12, 16)
    assert a.shapes["acc"] == (1, 1, 1, 3)       # DeepLab: accuracy, recall, IoU
    assert a.out_shapes["loss"] == [] and not a.stopped
    a = run('layer { name: "d" type: "Data" top: "data" top: "label" }', input_shapes={"data": (4, 3, 8, 8)})
    assert a.shapes["label"] == (4,)


def test_a_misspelt_type_gets_a_suggestion():
    a = run(inp(1, 3, 8, 8) + layer("c1", "Convolutoin", "data", body=conv_body(num_output=2, kernel_size=3)))
    assert 'did you mean "Convolution"' in a.stopped["c1"]


def test_window_follows_every_edit_of_the_layer():
    """Windows are memoised on the parameter block's bytes: the same layer message edited
    in place, or a copy with another window, must give its own window, and a bad window
    must fail each time it is asked, naming its layer."""
    conv = caffe_pb2.LayerParameter(name="c", type="Convolution")
    conv.convolution_param.kernel_size.append(3)
    rule = rule_for("Convolution")
    assert rule.window(conv) == Window(Pair(3, 3), Pair(1, 1), Pair(0, 0), Pair(1, 1))
    conv.convolution_param.stride.append(2)
    conv.convolution_param.dilation.append(2)
    assert rule.window(conv) == Window(Pair(3, 3), Pair(2, 2), Pair(0, 0), Pair(2, 2))
    wide = rule.with_window(conv, Window(Pair(3, 3), Pair(1, 1), Pair(4, 4), Pair(4, 4)))
    assert rule.window(wide).pad == Pair(4, 4) and rule.window(conv).pad == Pair(0, 0)
    pool = caffe_pb2.LayerParameter(name="p", type="Pooling")
    pool.pooling_param.kernel_size = 2
    assert rule_for("Pooling").window(pool).kernel == Pair(2, 2)
    pool.pooling_param.global_pooling = True
    assert rule_for("Pooling").window(pool) is None
    for name in ("bad1", "bad2"):
        bad = caffe_pb2.LayerParameter(name=name, type="Convolution")
        bad.convolution_param.kernel_size.append(0)
        for _ in range(2):
            with pytest.raises(SurgeryError, match="must be positive") as info:
                rule.window(bad)
            assert info.value.layer == name
