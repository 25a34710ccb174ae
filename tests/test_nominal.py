"""Coarsening limits, directly (analysis/nominal.py and LayerRule.coarsen_limit): how much
coarser a blob may be made with every layer that reads it still exact. A kernel larger
than 1 allows what divides its dilation, its pad and its output's limit; the expected
numbers are worked out by hand in each case."""

import pytest

from surgery import caffe_pb2
from surgery.analysis.analyse import analyse
from surgery.analysis.nominal import coarsen_limits
from surgery.io.netfile import load_text
from surgery.layers import rule_for
from surgery.pair import Pair


def conv(kernel, pad=0, dilation=1, stride=1):
    layer = caffe_pb2.LayerParameter(name="conv", type="Convolution")
    cp = layer.convolution_param
    cp.num_output = 4
    if isinstance(kernel, tuple):
        cp.kernel_h, cp.kernel_w = kernel
    else:
        cp.kernel_size.append(kernel)
    if pad:
        cp.pad.append(pad)
    cp.dilation.append(dilation)
    cp.stride.append(stride)
    return layer


def pool(kernel, pad=0, stride=1, global_pooling=False):
    layer = caffe_pb2.LayerParameter(name="pool", type="Pooling")
    pp = layer.pooling_param
    pp.kernel_size, pp.pad, pp.stride, pp.global_pooling = kernel, pad, stride, global_pooling
    return layer


@pytest.mark.parametrize("layer, out, want", [
    (conv(3, pad=4, dilation=4), 8, 4),          # gcd(4, 4, 8)
    (conv(3, pad=2, dilation=4), 8, 2),          # the pad divides less than the dilation
    (conv(3, pad=6, dilation=6), 4, 2),          # gcd(6, 6, 4): the output's limit too
    (conv(3, pad=4, dilation=4), 0, 4),          # an unlimited output leaves gcd(4, 4)
    (conv(3, pad=0, dilation=4), 8, 4),          # a pad of 0 divides by anything
    (conv(3, pad=1, dilation=1), 8, 1),
    (conv(1), 8, 8),                             # a 1x1 has no taps to spread
    (conv(1, pad=2), 8, 2),                      # ... but its pad must divide
    (conv(3, pad=4, dilation=4, stride=2), 6, 2),
    (pool(3, pad=1), 8, 1),                      # no dilation: nothing
    (pool(2, stride=2), 8, 1),
    (pool(7, global_pooling=True), 8, 0),        # averages whatever map it gets
    (caffe_pb2.LayerParameter(name="relu", type="ReLU"), 8, 8),   # passes its output's
])
def test_a_layer_allows_what_divides_its_dilation_its_pad_and_its_output(layer, out, want):
    assert rule_for(layer.type).coarsen_limit(layer, Pair(out, out)) == Pair(want, want)


def test_each_axis_has_its_own_limit():
    layer = conv((3, 1), dilation=4)
    layer.convolution_param.pad_h, layer.convolution_param.pad_w = 2, 3
    del layer.convolution_param.pad[:]
    # h: gcd(4, 2, 8); w: a 1-wide axis, gcd(pad 3, 8)
    assert rule_for(layer.type).coarsen_limit(layer, Pair(8, 8)) == Pair(2, 1)


def test_the_options_that_make_it_approximate():
    rule = rule_for("Pooling")
    assert rule.coarsen_limit(pool(3, pad=1), Pair(8, 8), narrow=True) == Pair(0, 0)
    dilated = conv(3, pad=2, dilation=3)
    assert rule_for("Convolution").coarsen_limit(dilated, Pair(8, 8),
                                                 round_dilation=True) == Pair(8, 8)


STEM = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 64 dim: 64 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "c1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
"""

NET = STEM + """layer { name: "conv2" type: "Convolution" bottom: "c1" top: "c2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 4 dilation: 4 } }
layer { name: "conv3" type: "Convolution" bottom: "c2" top: "c3"
        convolution_param { num_output: 4 kernel_size: 3 pad: 2 dilation: 4 } }
layer { name: "conv4" type: "Convolution" bottom: "c3" top: "c4"
        convolution_param { num_output: 4 kernel_size: 1 } }
"""

JOIN = STEM + """layer { name: "a" type: "Convolution" bottom: "c1" top: "a"
        convolution_param { num_output: 4 kernel_size: 3 pad: 4 dilation: 4 } }
layer { name: "b" type: "Convolution" bottom: "c1" top: "b"
        convolution_param { num_output: 4 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }
layer { name: "conv3" type: "Convolution" bottom: "sum" top: "c3"
        convolution_param { num_output: 4 kernel_size: 3 pad: 8 dilation: 8 } }
"""


def limits(text):
    return {blob: tuple(limit) for blob, limit in coarsen_limits(analyse(load_text(text).net)).items()}


def test_a_blobs_limit_is_the_gcd_over_the_kernels_that_read_it():
    # c4 and c3: nothing with taps reads them (0, no limit); c2: conv3 allows
    # gcd(4, 2, 0) = 2; c1: conv2 allows gcd(4, 4, 2) = 2; data: the input stays (1).
    assert limits(NET) == {"data": (1, 1), "c1": (2, 2), "c2": (2, 2), "c3": (0, 0),
                           "c4": (0, 0)}


def test_a_join_gives_its_inputs_one_limit():
    # sum: conv3 allows gcd(8, 8) = 8; the Eltwise shares it with a and b; c1: a allows
    # gcd(4, 4, 8) = 4, b gcd(2, 2, 8) = 2, so 2.
    assert limits(JOIN) == {"data": (1, 1), "c1": (2, 2), "a": (8, 8), "b": (8, 8),
                            "sum": (8, 8), "c3": (0, 0)}
