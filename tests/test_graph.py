"""build_graph: phase filtering, blob bookkeeping, and Caffe's wiring errors."""

import pytest
from google.protobuf import text_format

from surgery import caffe_pb2
from surgery.errors import SurgeryError
from surgery.analysis.graph import build_graph


def net(text):
    msg = caffe_pb2.NetParameter()
    text_format.Parse(text, msg)
    return msg


INPUT = 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'


def conv(name, bottom, top=None):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top or name}" '
            'convolution_param { num_output: 4 kernel_size: 3 } }\n')


def relu(name, blob):
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


def test_phase_filtering_keeps_original_indices():
    text = (INPUT
            + 'layer { name: "train_only" type: "ReLU" bottom: "data" top: "t" include { phase: TRAIN } }\n'
            + conv("c1", "data")
            + 'layer { name: "not_test" type: "ReLU" bottom: "c1" top: "u" exclude { phase: TEST } }\n'
            + 'layer { name: "test_only" type: "ReLU" bottom: "c1" top: "v" include { phase: TEST } }\n')
    g = build_graph(net(text), phase="TEST")
    assert [n.name for n in g.nodes] == ["in", "c1", "test_only"]
    assert [n.index for n in g.nodes] == [0, 2, 4]
    assert [layer.name for layer in g.net.layer] == ["in", "c1", "test_only"]
    g = build_graph(net(text), phase="TRAIN")
    assert [n.name for n in g.nodes] == ["in", "train_only", "c1", "not_test"]


def test_input_net_is_not_modified():
    original = net(INPUT + conv("c1", "data") + 'layer { name: "x" type: "ReLU" bottom: "c1" top: "x" include { phase: TRAIN } }')
    before = original.SerializeToString()
    build_graph(original, phase="TEST")
    assert original.SerializeToString() == before


def test_stage_and_level_rules():
    text = (INPUT
            + 'layer { name: "deploy" type: "ReLU" bottom: "data" top: "a" include { stage: "deploy" } }\n'
            + 'layer { name: "not_deploy" type: "ReLU" bottom: "data" top: "b" include { not_stage: "deploy" } }\n'
            + 'layer { name: "deep" type: "ReLU" bottom: "data" top: "c" include { min_level: 2 } }\n')
    names = lambda g: [n.name for n in g.nodes]
    assert names(build_graph(net(text))) == ["in", "not_deploy"]
    assert names(build_graph(net(text), stages=("deploy",))) == ["in", "deploy"]
    assert names(build_graph(net(text), level=3)) == ["in", "not_deploy", "deep"]
    stated = net('state { stage: "deploy" level: 2 }\n' + text)
    assert names(build_graph(stated)) == ["in", "deploy", "deep"]


def test_writers_consumers_and_inputs():
    text = INPUT + conv("c1", "data") + relu("r1", "c1") + relu("r2", "c1") + conv("c2", "c1")
    g = build_graph(net(text))
    assert g.producer("c1").name == "c1"
    assert [n.name for n in g.writers("c1")] == ["c1", "r1", "r2"]
    assert g.last_writer("c1").name == "r2"
    assert [n.name for n in g.consumers("c1")] == ["r1", "r2", "c2"]
    assert [n.name for n in g.consumers("data")] == ["c1"]
    assert g.producer("nope") is None and g.writers("nope") == [] and g.consumers("nope") == []
    assert g.inputs == ["data"]
    assert g.is_in_place(g.node("r1"), "c1") and not g.is_in_place(g.node("c2"), "c2")
    assert g.blobs == ["data", "c1", "c2"]
    with pytest.raises(SurgeryError, match="no such layer"):
        g.node("missing")


def test_header_inputs_are_inputs_without_producer():
    g = build_graph(net('input: "img" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n' + conv("c1", "img")))
    assert g.inputs == ["img"]
    assert g.producer("img") is None
    assert [n.name for n in g.consumers("img")] == ["c1"]


def test_bottom_never_produced_names_the_layer():
    with pytest.raises(SurgeryError) as err:
        build_graph(net(INPUT + conv("c1", "nothing")))
    assert "layer 'c1'" in str(err.value) and "'nothing'" in str(err.value)


def test_bottom_only_produced_later_is_a_cycle_error():
    text = INPUT + conv("a", "b_out", "a_out") + conv("b", "a_out", "b_out")
    with pytest.raises(SurgeryError, match="only produced later, by layer 'b'"):
        build_graph(net(text))


def test_second_writer_that_is_not_in_place():
    text = INPUT + conv("c1", "data", "x") + conv("c2", "data", "x")
    with pytest.raises(SurgeryError) as err:
        build_graph(net(text))
    assert "layer 'c2'" in str(err.value) and "already produced by 'c1'" in str(err.value)


def test_in_place_needs_matching_position():
    # top 0 rewrites bottom 1: Caffe treats that as a second producer, not in place.
    text = (INPUT + conv("c1", "data", "a") + conv("c2", "data", "b")
            + 'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "b" }\n')
    with pytest.raises(SurgeryError, match="already produced"):
        build_graph(net(text))


def test_duplicate_names_and_include_exclude_both():
    with pytest.raises(SurgeryError, match="share the name"):
        build_graph(net(INPUT + conv("c1", "data") + conv("c1", "c1", "c1b")))
    bad = INPUT + 'layer { name: "x" type: "ReLU" bottom: "data" top: "x" include { phase: TEST } exclude { phase: TRAIN } }'
    with pytest.raises(SurgeryError, match="not both"):
        build_graph(net(bad))


def test_v1_layers_are_refused_and_phase_validated():
    with pytest.raises(SurgeryError, match="V1"):
        build_graph(net('layers { name: "c" type: CONVOLUTION }'))
    with pytest.raises(SurgeryError, match="unknown phase"):
        build_graph(net(INPUT), phase="VAL")
    assert [n.name for n in build_graph(net(INPUT), phase="train").nodes] == ["in"]
