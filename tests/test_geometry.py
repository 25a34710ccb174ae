"""Receptive field, stride and centre offset per blob; join alignment; FLOPs and memory."""

import time

from google.protobuf import text_format

from surgery import caffe_pb2
from surgery.analysis.analyse import analyse
from surgery.analysis.geometry import ORIGIN, Geometry, apply_window
from surgery.pair import Pair, Window

from conftest import corpus_net as corpus


def run(text, **kw):
    msg = caffe_pb2.NetParameter()
    text_format.Parse(text, msg)
    return analyse(msg, **kw)


IN = 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }\n'


def conv(name, bottom, k=3, s=1, p=0, d=1, top=None, n=4):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top or name}" '
            f'convolution_param {{ num_output: {n} kernel_size: {k} stride: {s} pad: {p} dilation: {d} }} }}\n')


def g(stride, rf, offset):
    return Geometry(Pair(*stride), Pair(*rf), Pair(*offset))


def test_apply_window_formula():
    w = Window(Pair(3, 7), Pair(2, 1), Pair(1, 0), Pair(1, 2))
    out = apply_window(g((4, 4), (11, 11), (1.5, 1.5)), w)
    # extent (3, 13): rf 11 + 2*4, 11 + 12*4; offset 1.5 + (1-1)*4, 1.5 + (6-0)*4
    assert out == g((8, 4), (19, 59), (1.5, 25.5))
    assert apply_window(ORIGIN, Window(Pair(2, 2), Pair(2, 2), Pair(0, 0), Pair(1, 1))).offset == Pair(0.5, 0.5)


def test_chain_of_windows():
    text = (IN + conv("c1", "data", k=3, s=2, p=1) + conv("c2", "c1", k=3, s=1, p=1, d=2)
            + 'layer { name: "r" type: "ReLU" bottom: "c2" top: "c2" }\n'
            + 'layer { name: "p" type: "Pooling" bottom: "c2" top: "p" pooling_param { kernel_size: 2 stride: 2 } }\n')
    a = run(text)
    assert a.geometry["data"] == ORIGIN
    assert a.geometry["c1"] == g((2, 2), (3, 3), (0, 0))
    assert a.geometry["c2"] == g((2, 2), (11, 11), (2, 2))      # extent 5 at stride 2; (2-1)*2
    assert a.geometry["p"] == g((4, 4), (13, 13), (3, 3))       # + 1*2 ; + 0.5*2
    assert not a.warnings


def test_aligned_join_takes_max_rf():
    text = (IN + conv("a", "data", k=3, p=1) + conv("b", "data", k=5, p=2)
            + 'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }\n')
    a = run(text)
    assert a.geometry["sum"] == g((1, 1), (5, 5), (0, 0))
    assert not a.warnings


def test_misaligned_join_is_a_warning_naming_the_layer():
    text = (IN + conv("a", "data", k=3, s=2, p=1)
            + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { kernel_size: 2 stride: 2 } }\n'
            + 'layer { name: "cat" type: "Concat" bottom: "a" bottom: "p" top: "cat" }\n')
    a = run(text)
    assert a.shapes["cat"] == (1, 7, 16, 16)
    assert len(a.warnings) == 1 and "layer 'cat'" in a.warnings[0] and "misaligned" in a.warnings[0]
    assert a.geometry["cat"].rf == Pair(3, 3)
    text = (IN + conv("a", "data", k=3, s=2, p=1) + conv("b", "data", k=3, s=1, p=1, n=4)
            + conv("b2", "b", k=1, s=2, n=4)
            + 'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b2" top: "sum" }\n')
    a = run(text)
    assert a.geometry["a"].offset == a.geometry["b2"].offset and not a.warnings


def test_collapse_resample_unknown_end_geometry():
    text = (IN + conv("c", "data")
            + 'layer { name: "gp" type: "Pooling" bottom: "c" top: "gp" pooling_param { pool: AVE global_pooling: true } }\n'
            + 'layer { name: "fc" type: "InnerProduct" bottom: "c" top: "fc" inner_product_param { num_output: 3 } }\n'
            + 'layer { name: "up" type: "Deconvolution" bottom: "c" top: "up" convolution_param { num_output: 4 kernel_size: 4 stride: 2 } }\n'
            + 'layer { name: "x" type: "Mystery" bottom: "c" top: "x" }\n'
            + conv("after", "x"))
    a = run(text)
    assert a.geometry["c"] is not None
    for blob in ("gp", "fc", "up", "x", "after"):
        assert a.geometry[blob] is None, blob


def test_crop_shifts_the_grid():
    text = (IN + conv("c", "data", k=3, s=2, p=0)
            + 'layer { name: "ref" type: "Input" top: "ref" input_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } } }\n'
            + 'layer { name: "cr" type: "Crop" bottom: "c" bottom: "ref" top: "cr" crop_param { axis: 2 offset: 3 } }\n')
    a = run(text)
    assert a.geometry["c"] == g((2, 2), (3, 3), (1, 1))
    assert a.geometry["cr"] == g((2, 2), (3, 3), (7, 7))        # 1 + 3 pixels at stride 2


def test_geometry_needs_no_input_size():
    text = ('layer { name: "d" type: "Data" top: "data" top: "label" }\n'
            + conv("c1", "data", k=7, s=2, p=3) + conv("c2", "c1", k=3, p=1))
    a = run(text)
    assert a.shapes["c2"] is None
    assert a.geometry["c2"] == g((2, 2), (11, 11), (0, 0))


def test_flops_params_and_memory():
    text = (IN + conv("c", "data", k=3, p=1, n=8)
            + 'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }\n'
            + 'layer { name: "fc" type: "InnerProduct" bottom: "c" top: "fc" inner_product_param { num_output: 10 } }\n')
    a = run(text)
    stats = {s.name: s for s in a.layer_stats}
    assert stats["c"].flops == 8 * 32 * 32 * 3 * 9
    assert stats["c"].params == 8 * 3 * 9 + 8
    assert stats["c"].activations == 8 * 32 * 32
    assert stats["r"].activations == 0 and stats["r"].params == 0      # in place: no new memory
    assert stats["fc"].flops == 10 * 8 * 32 * 32
    t = a.totals
    assert t.params == stats["c"].params + stats["fc"].params
    assert t.flops == stats["c"].flops + stats["fc"].flops
    assert t.activations == 3 * 32 * 32 + 8 * 32 * 32 + 10 and t.complete




def test_resnet101_receptive_fields():
    a = analyse(corpus("resnet_kaiming/ResNet-101-deploy.prototxt"))
    assert a.geometry["res4b22"].rf == Pair(835, 835)
    assert a.geometry["res4b22"].stride == Pair(16, 16)
    assert a.geometry["res5c"].rf == Pair(1027, 1027)
    assert a.geometry["res5c"].stride == Pair(32, 32)
    assert not a.warnings


def test_real_misalignment_is_reported():
    # ENet's initial block concatenates a 3x3/s2/p1 conv with a 2x2/s2 pool: half a pixel apart.
    a = analyse(corpus("enet/enet_deploy_final.prototxt"))
    assert any("concat0_1" in w and "misaligned" in w for w in a.warnings)


def test_resnet152_analysis_speed():
    net = corpus("resnet_kaiming/ResNet-152-deploy.prototxt")
    start = time.perf_counter()
    a = analyse(net)
    elapsed = time.perf_counter() - start
    print(f"ResNet-152 deploy analysed in {elapsed * 1000:.1f} ms ({len(a.graph.nodes)} layers)")
    assert a.shapes["res5c"] == (1, 2048, 7, 7)


def test_the_identity_window_keeps_a_geometry_as_it_is():
    """infer_geometry passes a pointwise layer's or a join's input geometry on without
    apply_window: the two must agree, value and type, on whole and half-pixel offsets."""
    from surgery.layers import IDENTITY

    for g in [Geometry(Pair(4, 4), Pair(35, 35), Pair(0, 0)),
              Geometry(Pair(8, 16), Pair(100, 90), Pair(0.5, -1.5)),
              Geometry(Pair(1, 1), Pair(1, 1), Pair(-3, 2.5))]:
        kept = apply_window(g, IDENTITY)
        assert kept == g
        assert [type(v) for v in kept.offset] == [type(v) for v in g.offset]
