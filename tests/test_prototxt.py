"""Prototxt reading/writing: corpus round trips and the one-line error messages."""


import pytest

import surgery
from surgery import caffe_pb2
from surgery.errors import SurgeryError
from surgery.io.netfile import load_prototxt
from surgery.io.prototxt import (
    format_prototxt,
    parse_prototxt,
    read_text,
    save_prototxt,
)

from conftest import CORPUS, corpus_files


def _corpus_nets():
    """The corpus nets, solvers and templates (with ${...} placeholders) left out."""
    return [path for path in corpus_files() if "solver" not in path.name
            and "${" not in path.read_text(encoding="utf-8", errors="replace")]


CORPUS_NETS = _corpus_nets()


@pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not available")
def test_corpus_has_nets():
    assert len(CORPUS_NETS) >= 20


@pytest.mark.parametrize("path", CORPUS_NETS, ids=lambda p: str(p.relative_to(CORPUS)))
@pytest.mark.parametrize("upgrade", [False, True], ids=["raw", "upgraded"])
def test_corpus_round_trip(path, upgrade, tmp_path):
    net = load_prototxt(path, upgrade=upgrade)
    assert len(net.layer) + len(net.layers) > 0
    text = format_prototxt(net)
    again = parse_prototxt(text, "formatted")
    assert again == net
    assert format_prototxt(again) == text
    out = tmp_path / "out.prototxt"
    save_prototxt(net, out)
    assert out.read_text(encoding="utf-8") == text
    assert load_prototxt(out, upgrade=False) == net


@pytest.mark.parametrize("path", CORPUS_NETS, ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_upgraded_nets_are_current(path):
    net = load_prototxt(path)
    assert len(net.layers) == 0
    assert not net.input and not net.input_dim and not net.input_shape
    assert all(layer.type for layer in net.layer)


# ---------------------------------------------------------------------------
# error messages


def _error(text, **kwargs):
    with pytest.raises(SurgeryError) as info:
        parse_prototxt(text, "net.prototxt", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return info.value, message


def test_unknown_field_suggests_close_name():
    err, message = _error('layer {\n  name: "c"\n  convolution_param {\n    dilaton: 2\n  }\n}\n')
    assert (err.line, err.col) == (4, 5)
    assert message.startswith("net.prototxt:4:5: ")
    assert "`dilaton`: did you mean `dilation`?" in message


def test_fork_field_at_layer_level_says_where_it_belongs():
    _, message = _error('layer {\n  name: "fc6"\n  hole: 12\n}\n')
    assert "net.prototxt:3:3" in message
    assert "ConvolutionParameter" in message and "convolution_param { hole: ... }" in message


def test_layer_param_at_net_level_points_to_layer():
    _, message = _error("pooling_param { pool: MAX }\n")
    assert "`layer { pooling_param { ... } }`" in message


def test_unknown_enum_value_suggests():
    _, message = _error('layer { name: "p" pooling_param { pool: AVG } }')
    assert "`AVG`: did you mean `AVE`?" in message


def test_v1_enum_type_in_current_layer_form():
    _, message = _error('layer {\n  name: "c"\n  type: INNER_PRODUCT\n}\n')
    assert "net.prototxt:3:9" in message
    assert '"InnerProduct"' in message


def test_template_placeholder_is_named():
    text = 'name: "${NET_ID}"\nlayer {\n  name: "fc8"\n  convolution_param { num_output: ${NUM_LABELS} }\n}\n'
    err, message = _error(text)
    assert (err.line, err.col) == (4, 35)
    assert "template placeholder ${NUM_LABELS}" in message and "load_net" in message


def test_placeholder_inside_strings_is_fine():
    net = parse_prototxt('name: "${NET_ID}"\nlayer { name: "fc8_${EXP}" type: "ReLU" } # ${X}\n')
    assert net.layer[0].name == "fc8_${EXP}"


def test_solver_file_is_recognised():
    _, message = _error('net: "train.prototxt"\nbase_lr: 0.01\n')
    assert "solver" in message


def test_syntax_error_has_position():
    err, message = _error('layer {\n  name: "a"\n')
    assert err.line is not None and err.col is not None
    assert message.startswith("net.prototxt:")


def test_solver_parses_with_solver_type():
    solver = parse_prototxt('net: "x.prototxt"\nbase_lr: 0.01\n', "s.prototxt",
                            message_type=caffe_pb2.SolverParameter)
    assert solver.base_lr == pytest.approx(0.01)


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n"])
def test_empty_file(text):
    _, message = _error(text)
    assert "empty" in message


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_bytes(b'name: "a"\nlayer { name: "\xff" }\n')
    with pytest.raises(SurgeryError) as info:
        load_prototxt(path)
    assert str(info.value).startswith(f"{path}:2:16: not UTF-8")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SurgeryError, match="no such file"):
        read_text(tmp_path / "nope.prototxt")
    with pytest.raises(SurgeryError, match="directory"):
        read_text(tmp_path)


# ---------------------------------------------------------------------------
# formatting and the public load/save


def test_format_is_canonical_and_schema_ordered():
    net = parse_prototxt('layer { top: "b" bottom: "a" type: "ReLU" name: "r" }\nname: "n"\n')
    assert format_prototxt(net) == (
        'name: "n"\nlayer {\n  name: "r"\n  type: "ReLU"\n  bottom: "a"\n  top: "b"\n}\n'
    )


def test_format_keeps_non_ascii_names_readable():
    net = parse_prototxt('name: "réseau"')
    assert 'name: "réseau"' in format_prototxt(net)


def test_save_refuses_to_overwrite_input(tmp_path):
    path = tmp_path / "a.prototxt"
    path.write_text('name: "a"\n')
    net = load_prototxt(path)
    net.name = "b"
    with pytest.raises(SurgeryError, match="is the input file"):
        save_prototxt(net, path, inputs=(path,))
    assert path.read_text() == 'name: "a"\n'
    save_prototxt(net, path, inputs=(path,), in_place=True)
    assert load_prototxt(path).name == "b"


def test_public_load_save_dispatch(tmp_path):
    net = parse_prototxt('name: "n"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\n'
                         'input_dim: 8\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    surgery.save(net, tmp_path / "n.prototxt")
    loaded = surgery.load(tmp_path / "n.prototxt")
    assert [layer.type for layer in loaded.layer] == ["Input", "ReLU"]
    assert surgery.load(tmp_path / "n.prototxt", upgrade=False) == net

    surgery.save(net, tmp_path / "n.caffemodel")
    assert surgery.load(tmp_path / "n.caffemodel", upgrade=False) == net
    assert (tmp_path / "n.caffemodel").read_bytes() == net.SerializeToString()

    blob = caffe_pb2.BlobProto(data=[1.0, 2.0])
    blob.shape.dim.extend([2])
    surgery.save(blob, tmp_path / "mean.binaryproto")
    assert surgery.load(tmp_path / "mean.binaryproto") == blob


def test_public_load_save_errors(tmp_path):
    with pytest.raises(SurgeryError, match="unknown file type"):
        surgery.load(tmp_path / "x.h5")
    with pytest.raises(SurgeryError, match="holds a NetParameter"):
        surgery.save(caffe_pb2.BlobProto(), tmp_path / "x.caffemodel")
    (tmp_path / "junk.caffemodel").write_bytes(b"\xff\xff\xff")
    with pytest.raises(SurgeryError, match="junk.caffemodel"):
        surgery.load(tmp_path / "junk.caffemodel")


def test_singular_field_given_twice():
    err, message = _error('layer {\n  name: "a"\n  name: "b"\n}\n')
    assert err.line == 3
    assert "`name` is given twice in one LayerParameter" in message
