"""Caffe's own upgrade test cases: every step gives exactly Caffe's expected net.

The nets are in tests/data/caffe_upgrade (see its README): NAME.v0 is a V0 net,
NAME.padded the net after Caffe's padding-layer merge, NAME.v1 after its V0 upgrade and
NAME.v2 after its V1 upgrade. Caffe's tests compare messages, and so do these.
"""

from pathlib import Path

import pytest

from surgery import caffe_pb2
from surgery.io.prototxt import format_prototxt, parse_prototxt
from surgery.io.upgrade import upgrade_net
from surgery.io.upgrade_v0 import merge_padding_layers, upgrade_v0_net

DATA = Path(__file__).parent / "data" / "caffe_upgrade"


def net(name):
    path = DATA / f"{name}.prototxt"
    return parse_prototxt(path.read_text(encoding="utf-8"), str(path))


def test_the_cases_are_what_they_claim():
    """Guards the data: V0 files are V0, the V1/V2 files are the later forms."""
    for case in ("simple", "two_tops", "imagenet", "all_params"):
        v0 = net(f"{case}.v0")
        assert len(v0.layers) and all(entry.HasField("layer") for entry in v0.layers)
    for case in ("simple", "imagenet", "all_params"):
        v1 = net(f"{case}.v1")
        assert len(v1.layers) and not any(entry.HasField("layer") for entry in v1.layers)
    for case in ("simple", "imagenet"):
        v2 = net(f"{case}.v2")
        assert len(v2.layer) and not len(v2.layers)


@pytest.mark.parametrize("case", ["simple", "two_tops", "imagenet"])
def test_padding_layers_merge_as_in_caffe(case):
    v0 = net(f"{case}.v0")
    merged, sources = merge_padding_layers(v0)
    assert merged == net(f"{case}.padded")
    assert sources and all(v0.layers[i].layer.type == "padding" for i in sources)
    again, more = merge_padding_layers(merged)      # Caffe also tests idempotence
    assert again == merged and not more


def test_one_padding_layer_read_by_two_convolutions():
    merged, sources = merge_padding_layers(net("two_tops.v0"))
    readers = [e for e in merged.layers if e.layer.type == "conv"]
    assert len(sources) == 1 and len(readers) == 2
    assert all(e.layer.pad == 2 and list(e.bottom) == ["data"] for e in readers)


@pytest.mark.parametrize("case", ["simple", "all_params", "imagenet"])
def test_v0_to_v1_as_in_caffe(case):
    v1, notes = upgrade_v0_net(net(f"{case}.v0"))
    assert v1 == net(f"{case}.v1"), _first_difference(v1, net(f"{case}.v1"))
    assert any("V0 layer" in note for note in notes)


@pytest.mark.parametrize("case", ["simple", "imagenet"])
def test_v1_to_v2_as_in_caffe(case):
    v2, notes = upgrade_net(net(f"{case}.v1"))
    assert v2 == net(f"{case}.v2"), _first_difference(v2, net(f"{case}.v2"))
    assert len(notes) == 1 and "V1 `layers`" in notes[0]


@pytest.mark.parametrize("case", ["simple", "imagenet"])
def test_whole_upgrade_of_a_v0_net(case):
    v2, notes = upgrade_net(net(f"{case}.v0"))
    assert v2 == net(f"{case}.v2"), _first_difference(v2, net(f"{case}.v2"))
    assert any("padding layer" in note for note in notes)
    assert any("V0 layer" in note for note in notes)
    assert any("V1 `layers`" in note for note in notes)
    again, more = upgrade_net(v2)
    assert again == v2 and not more


def test_whole_upgrade_of_all_params_continues_to_the_input_layer():
    """Caffe's V0 case keeps the input header; the later steps of the whole upgrade
    then make it an Input layer, exactly as they do for its expected V1 net."""
    from_v0, _ = upgrade_net(net("all_params.v0"))
    from_v1, notes = upgrade_net(net("all_params.v1"))
    assert from_v0 == from_v1
    first = from_v0.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["input_data"])
    assert [list(s.dim) for s in first.input_param.shape] == [[64, 3, 32, 32]]
    assert any("Input layer" in note for note in notes)


def test_every_v0_type_of_caffe_is_covered_by_the_cases():
    """TestAllParams and TestImageNet between them use every V0 type Caffe knows,
    so the table of V0 types is checked against Caffe's expected V1 enums."""
    from surgery.io.upgrade_v0 import V0_TYPES
    used = {e.layer.type for case in ("all_params", "imagenet") for e in net(f"{case}.v0").layers}
    assert set(V0_TYPES) <= used


def _first_difference(got, want):
    a, b = format_prototxt(got).splitlines(), format_prototxt(want).splitlines()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {i + 1}: got {x!r}, Caffe expects {y!r}"
    return f"lengths differ: {len(a)} vs {len(b)} lines"


def test_messages_compare_presence_of_empty_blocks():
    """The comparisons above see an empty block as a difference, as Caffe's do."""
    a, b = caffe_pb2.LayerParameter(), caffe_pb2.LayerParameter()
    b.transform_param.SetInParent()
    assert a != b
