"""Commands write a changed net as a minimal edit of the input file (io/preserve.py)."""

import difflib
import json

import pytest

from surgery.cli import main
from surgery.io.netfile import load_net
from surgery.io.preserve import render
from surgery.io.prototxt import format_prototxt, parse_prototxt

from conftest import CORPUS, corpus_files, corpus_path, write_file

RESNET101 = CORPUS / "resnet_kaiming" / "ResNet-101-deploy.prototxt"
DEEPLAB_V1 = CORPUS / "deeplab_v1" / "DeepLab-LargeFOV_test.prototxt"


def corpus_nets():
    return [p for p in corpus_files("*/*.prototxt") if "solver" not in p.name]


def changed(before, after):
    """(removed lines, added lines) of an ndiff."""
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


# The old-style input header both toy nets below declare.
INPUT_DIMS = """\
input: "data"
input_dim: 1
input_dim: 3
input_dim: 32
input_dim: 32
"""
# A small strided net in the style of real files: comments, tabs, an input header.
HEADER_NET = """\
# a toy backbone
name: "toy"   # trailing comment
""" + INPUT_DIMS + """\
layer {
\tname: "conv1"
\ttype: "Convolution"
\tbottom: "data"
\ttop: "conv1"
\tconvolution_param {
\t\tnum_output: 8
\t\tkernel_size: 3
\t\tpad: 1
\t\tstride: 2   # downsample
\t}
}
# the second stage
layer {
\tname: "conv2"
\ttype: "Convolution"
\tbottom: "conv1"
\ttop: "conv2"
\tconvolution_param {
\t\tnum_output: 8
\t\tkernel_size: 3
\t\tpad: 1
\t}
}
"""


def test_dilate_edits_only_the_changed_fields_with_tab_indent(tmp_path, capsys):
    src = write_file(tmp_path, "net.prototxt", HEADER_NET)
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(src), "-s", "1", "-o", str(out)]) == 0
    text = out.read_text()
    removed, added = changed(HEADER_NET, text)
    assert removed == ["\t\tstride: 2   # downsample", "\t\tpad: 1"]
    assert added == ["\t\tstride: 1   # downsample", "\t\tpad: 2", "\t\tdilation: 2"]
    assert "input_dim: 32" in text and text.startswith("# a toy backbone\n")


def test_noop_and_upgrade_keep_bytes(tmp_path, capsys):
    src = write_file(tmp_path, "net.prototxt", HEADER_NET)
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(src), "-s", "2", "-o", str(out)]) == 0
    assert out.read_bytes() == src.read_bytes()
    current = HEADER_NET.split("layer {", 1)[1]
    src2 = write_file(tmp_path, "cur.prototxt",
                      "# keep me\r\nlayer {" + current.replace("\n", "\r\n"))
    assert main(["upgrade", str(src2), "-o", str(tmp_path / "up.prototxt")]) == 0
    assert (tmp_path / "up.prototxt").read_bytes() == src2.read_bytes()


def test_diff_prints_the_edit(tmp_path, capsys):
    src = write_file(tmp_path, "net.prototxt", HEADER_NET)
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(src), "-s", "1", "-o", str(out), "--diff", "-"]) == 0
    diff = capsys.readouterr().out
    assert f"--- {src}" in diff and f"+++ {out}" in diff
    assert "-\t\tstride: 2   # downsample" in diff and "+\t\tdilation: 2" in diff


def test_canonical_writes_protobuf_text(tmp_path, capsys):
    src = write_file(tmp_path, "net.prototxt", HEADER_NET)
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(src), "-s", "1", "-o", str(out), "--canonical"]) == 0
    text = out.read_text()
    assert "#" not in text and "\t" not in text
    net = parse_prototxt(text)          # the upgraded net: the header became an Input layer
    assert [l.type for l in net.layer] == ["Input", "Convolution", "Convolution"]
    assert list(net.layer[2].convolution_param.dilation) == [2]


V1_HOLE_NET = """\
name: "v1"
layers {
  name: "data" type: DATA top: "data"
}
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 }
}
layers {
  name: "conv2" type: CONVOLUTION bottom: "conv1" top: "conv2"
  convolution_param {
    num_output: 4
    kernel_size: 3
    pad: 2
    hole: 2
  }
}
"""


def test_v1_file_stays_v1_and_dilation_is_written_as_hole(tmp_path, capsys):
    src = write_file(tmp_path, "v1.prototxt", V1_HOLE_NET)
    out = tmp_path / "out.prototxt"
    args = ["dilate", str(src), "-s", "1", "-o", str(out), "--input-shape", "data=1,3,33,33"]
    assert main(args) == 0
    text = out.read_text()
    removed, added = changed(V1_HOLE_NET, text)
    assert removed == ["  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 }",
                       "    pad: 2", "    hole: 2"]
    assert added == ["  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 }",
                     "    pad: 4", "    hole: 4"]
    assert "layers {" in text and "dilation" not in text


def test_an_added_layer_is_inserted_and_the_rest_kept(tmp_path):
    src = write_file(tmp_path, "net.prototxt", HEADER_NET)
    loaded = load_net(src)
    new = type(loaded.net)()
    new.CopyFrom(loaded.net)
    extra = new.layer.add()
    extra.CopyFrom(new.layer[1])
    extra.name = "conv1_copy"
    extra.top[0] = "copy"
    text, note = render(loaded, new)
    assert note is None
    assert text.startswith(HEADER_NET.rstrip("\n"))      # every original line kept
    assert 'name: "conv1_copy"' in text
    assert load_net(write_file(tmp_path, "o.prototxt", text)).net == new


def test_fallback_to_canonical_is_noted(tmp_path):
    src = write_file(tmp_path, "net.prototxt", HEADER_NET)
    loaded = load_net(src)
    new = type(loaded.net)()
    new.CopyFrom(loaded.net)
    layers = list(new.layer)
    del new.layer[:]
    new.layer.extend([layers[0]] + layers[1:][::-1])    # reordered: no minimal edit spells it
    text, note = render(loaded, new)
    assert note and "canonical" in note
    assert parse_prototxt(text) == new


@pytest.mark.parametrize("path", corpus_nets(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_round_trip_through_the_commands(path, tmp_path, capsys):
    """No change gives identical bytes: upgrade when nothing needs upgrading, else a
    dilate whose target stride the net already meets."""
    out = tmp_path / "out.prototxt"
    if not load_net(path).notes:
        assert main(["upgrade", str(path), "-o", str(out)]) == 0
    else:       # the net's own output stride: nothing to convert
        assert main(["dilate", str(path), "-s", str(_output_stride(path)), "-o", str(out)]) == 0
    assert out.read_bytes() == path.read_bytes()


def _output_stride(path):
    from surgery.analysis.analyse import analyse

    loaded = load_net(path)
    return max(analyse(loaded.net, unknowns=loaded.unknowns).output_stride())


def test_resnet101_diff_matches_the_change_list(tmp_path, capsys):
    corpus_path(RESNET101)
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(RESNET101), "-s", "8", "--head", "cut", "-o", str(out),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    before, after = RESNET101.read_text(), out.read_text()
    replaced = added = 0
    for c in report["changes"]:
        if c["action"] != "rewrite":
            continue
        b, a = c["before"], c["after"]
        replaced += (b["stride"] != a["stride"]) + (b["pad"] != a["pad"])
        added += b["dilation"] == [1, 1] and a["dilation"] != [1, 1]
    loaded = load_net(RESNET101)
    gone = {c["layer"] for c in report["changes"] if c["action"] == "remove"}
    block_lines = 0
    text_lines = loaded.text.splitlines()
    for node in loaded.document.layers():
        name = node.messages[0].find("name")[0].values[0].text.strip('"')
        if name in gone:
            block_lines += node.last().line - node.first().line + 1
            # a removed block takes the blank line that separated it from the one above
            block_lines += not text_lines[node.first().line - 2].strip()
    removed_lines, added_lines = changed(before, after)
    assert replaced > 0 and added > 0 and block_lines > 0
    assert len(removed_lines) == replaced + block_lines
    assert len(added_lines) == replaced + added
    assert all(line.strip().startswith(("stride:", "pad:", "dilation:")) for line in added_lines)
    assert loaded.text.splitlines()[:10] == after.splitlines()[:10]   # input header kept


def test_deeplab_v1_template_keeps_v1_hole_and_placeholders(tmp_path, capsys):
    corpus_path(DEEPLAB_V1)
    out = tmp_path / "out.prototxt"
    assert main(["dilate", str(DEEPLAB_V1), "-s", "4", "--pooling", "cover",
                 "--cut-after", "fc8_${EXP}", "-o", str(out)]) == 0
    text = out.read_text()
    assert "layers {" in text and "dilation" not in text and "hole: 4" in text
    assert "num_output: ${NUM_LABELS}" in text and 'name: "fc8_${EXP}"' in text


def test_a_layer_rewritten_under_a_new_name_is_edited_in_place(tmp_path, capsys):
    """fcn renames fc6 to fc6-conv and changes its type: the block is edited where it
    stands, comments around it stay, and no canonical fallback is needed."""
    from surgery.cli import main
    from surgery.weights.initweights import init_weights
    from surgery.models import build

    net = build("vgg16", width=0.125, fc_width=32, input_size=64)
    src = tmp_path / "vgg.prototxt"
    src.write_text("# VGG, commented\n" + format_prototxt(net))
    init_weights(net, tmp_path / "w.caffemodel")
    out = tmp_path / "fcn.prototxt"
    assert main(["fcn", str(src), "--weights", str(tmp_path / "w.caffemodel"), "-o", str(out),
                 "--weights-out", str(tmp_path / "fcn.caffemodel")]) == 0
    assert "note:" not in capsys.readouterr().err
    text = out.read_text()
    assert text.startswith("# VGG, commented\n")
    assert 'name: "fc6-conv"' in text and "inner_product_param" not in text


# A template with a `${NUM}` in a number field and a field the schema lacks, in the layer
# the rewrite edits (conv2 gets pad 2 and dilation 2 at output stride 1), and a classifier
# the rewrite leaves alone.
TEMPLATE_NET = """\
name: "toy"
""" + INPUT_DIMS + """\
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 }
}
layer {
  name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  fork_option: 3
  convolution_param { num_output: ${NUM} kernel_size: 3 pad: 1 }
}
layer {
  name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
  convolution_param { num_output: ${NUM} kernel_size: 1 }
}
"""


def _dilated(tmp_path):
    from surgery.transform.dilate import dilate

    loaded = load_net(write_file(tmp_path, "tpl.prototxt", TEMPLATE_NET))
    new, _ = dilate(loaded.net, output_stride=1, unknowns=loaded.unknowns)
    return loaded, new


def _faulty_set_field(monkeypatch, fault):
    """Make the document's editor also do `fault(doc, layer)` after setting conv2's pad:
    the reload check must notice what the edit broke."""
    from surgery.io.document import Document

    real = Document.set_field

    def set_field(doc, layer, path, value):
        real(doc, layer, path, value)
        if path == "convolution_param.pad" and doc.find_layer(layer) is doc.find_layer("conv2"):
            fault(doc, layer)

    monkeypatch.setattr(Document, "set_field", set_field)


def test_template_edit_keeps_placeholders_and_unknown_fields(tmp_path):
    loaded, new = _dilated(tmp_path)
    text, note = render(loaded, new)
    assert note is None
    removed, added = changed(TEMPLATE_NET, text)
    assert removed == ["  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 }",
                       "  convolution_param { num_output: ${NUM} kernel_size: 3 pad: 1 }"]
    assert added == ["  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 1 }",
                     "  convolution_param { num_output: ${NUM} kernel_size: 3 pad: 2 "
                     "dilation: 2 }"]


@pytest.mark.parametrize("fault, why", [
    (lambda doc, layer: doc.set_field(layer, "convolution_param.kernel_size", 5),
     "did not load back"),
    (lambda doc, layer: doc.remove_field(layer, "convolution_param.num_output"),
     "an edit touched a placeholder"),
    (lambda doc, layer: doc.remove_field(layer, "fork_option"),
     "an edit touched an unknown field"),
], ids=["wrong value", "lost placeholder", "lost unknown field"])
def test_reload_check_catches_a_broken_edit(tmp_path, monkeypatch, fault, why):
    """A wrong value, a lost placeholder (a number placeholder is unset in the net, so
    only the check sees it) and a lost unknown field are all caught; canonical text would
    lose the placeholders, so the edit is refused."""
    from surgery.errors import SurgeryError

    loaded, new = _dilated(tmp_path)
    _faulty_set_field(monkeypatch, fault)
    with pytest.raises(SurgeryError, match=why):
        render(loaded, new)


def test_reload_check_catches_a_broken_edit_without_template(tmp_path, monkeypatch):
    """Without placeholders the broken edit falls back to canonical text, with a note."""
    src = write_file(tmp_path, "net.prototxt", HEADER_NET)
    loaded = load_net(src)
    from surgery.transform.dilate import dilate

    new, _ = dilate(loaded.net, output_stride=1)
    _faulty_set_field(monkeypatch, lambda doc, layer: doc.remove_field(
        layer, "convolution_param.num_output"))
    text, note = render(loaded, new)
    assert note and "did not load back" in note and "canonical" in note
    assert parse_prototxt(text) == new
