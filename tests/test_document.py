"""The prototxt document: byte-exact round trips, text_format-equal binding,
placeholders, unknown fields, and edits that touch only the lines they must."""

import difflib
import re
import sys

import pytest
from google.protobuf import text_format

from surgery import caffe_pb2
from surgery.errors import SurgeryError
from surgery.io import tokens
from surgery.io.document import Document, Raw

from conftest import corpus_files, corpus_path

PLACEHOLDER = re.compile(r"\$\{[^}]*\}")


def read(path):
    with open(path, encoding="utf-8", newline="") as fh:
        return fh.read()


def corpus(rel):
    path = corpus_path(rel)
    return read(path)


def schema_for(path):
    return caffe_pb2.SolverParameter if "solver" in path.name else caffe_pb2.NetParameter


def changed_lines(before, after):
    """(removed, added) lines of a unified diff."""
    diff = list(difflib.unified_diff(before.splitlines(True), after.splitlines(True), n=0))
    removed = [l[1:] for l in diff if l.startswith("-") and not l.startswith("---")]
    added = [l[1:] for l in diff if l.startswith("+") and not l.startswith("+++")]
    return removed, added


def strip_comments(text):
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


@pytest.fixture(scope="module")
def all_corpus():
    files = corpus_files()
    if not files:
        pytest.skip("corpus not present")
    return [(p, read(p)) for p in files]


# -- round trip and differential binding ------------------------------------

def test_every_corpus_file_round_trips_byte_for_byte(all_corpus):
    for path, text in all_corpus:
        assert Document.parse(text, str(path)).to_text() == text, path


def test_binding_equals_text_format_on_every_corpus_file(all_corpus):
    compared = 0
    for path, text in all_corpus:
        if PLACEHOLDER.search(strip_comments(text)):
            continue
        mtype = schema_for(path)
        ours, binding = Document.parse(text, str(path)).to_message(mtype)
        ref = mtype()
        if binding.unknown_fields:
            # Fork fields our schema lacks: compare with Parse skipping them.
            text_format.Parse(text, ref, allow_unknown_field=True)
        else:
            text_format.Parse(text, ref)
        assert ours == ref, path
        compared += 1
    assert compared >= 30


def test_binding_records_the_node_of_each_field(all_corpus):
    path, text = next((p, t) for p, t in all_corpus if p.name == "lenet.prototxt")
    net, binding = Document.parse(text, str(path)).to_message()
    conv = [i for i, l in enumerate(net.layer) if l.type == "Convolution"][0]
    node = binding.nodes[("layer", conv, "convolution_param", "num_output")]
    assert node.key == "num_output"
    line = text.splitlines()[node.name.line - 1]
    assert line[node.name.col - 1:].startswith("num_output")
    assert int(node.values[0].text) == net.layer[conv].convolution_param.num_output


SYNTAX = """# header comment
name:'n\\'et' "-x"   # adjacent strings, single quotes, escape
input: "data"
input_shape < dim: 1 dim: 3; dim: 0x10, dim: 8 >
layer {
\tname:"conv"   type: 'Convolution'
\tinclude: { phase: TEST }
\tconvolution_param { num_output: 4 kernel_size: [3, 3] dilation: [] }
\tparam { lr_mult: 1e-4 } param { lr_mult: -inf }
\tpropagate_down: t
}
layer { name: "p" type: "Pooling" pooling_param { pool: 1 kernel_size: 2 } }
"""


def test_syntax_variants_bind_like_text_format():
    doc = Document.parse(SYNTAX, "syntax.prototxt")
    assert doc.to_text() == SYNTAX
    ours, _ = doc.to_message()
    ref = caffe_pb2.NetParameter()
    text_format.Parse(SYNTAX, ref)
    assert ours == ref
    assert ours.name == "n'et-x"
    assert list(ours.input_shape[0].dim) == [1, 3, 16, 8]


def test_scanner_pattern_for_older_pythons_splits_the_same(all_corpus):
    """Before 3.11 the token pattern loses its possessive quantifiers (tokens.py): the
    greedy form must split every file into the same tokens."""
    greedy = re.compile(tokens.greedy(tokens._TOKEN_PATTERN), re.VERBOSE)
    assert greedy.pattern != tokens._TOKEN_RE.pattern or sys.version_info < (3, 11)
    texts = [text for _, text in all_corpus] + ['a: "x\\"y" b: \'z\' # c\n', 'a: "open\n']
    for text in texts:
        assert [m.groups() for m in greedy.finditer(text)] == \
            [m.groups() for m in tokens._TOKEN_RE.finditer(text)]


# -- errors -----------------------------------------------------------------

@pytest.mark.parametrize("text, line, col", [
    ("layer {\n  name: \"a\"\n", 3, 1),                 # missing close brace
    ("layer {\n  name \"a\"\n}\n", 2, 8),               # missing colon
    ("layer {\n  name: \"a\n}\n", 2, 9),                # unterminated string
    ("a: 1\n  b: @\n", 2, 6),                            # bad character
    ("a: [1, 2\n", 2, 1),                                # unclosed list
    ("}\n", 1, 1),                                       # stray brace
])
def test_syntax_errors_name_file_line_col(text, line, col):
    with pytest.raises(SurgeryError) as info:
        Document.parse(text, "bad.prototxt")
    err = info.value
    assert (err.file, err.line, err.col) == ("bad.prototxt", line, col)
    assert str(err).startswith(f"bad.prototxt:{line}:{col}: ")
    assert "\n" not in str(err)


def test_bad_value_is_located():
    text = 'layer {\n  name: "c"\n  convolution_param { num_output: -3 }\n}\n'
    with pytest.raises(SurgeryError) as info:
        Document.parse(text, "v.prototxt").to_message()
    assert (info.value.line, info.value.col) == (3, 35)


def test_singular_field_twice_is_an_error_like_text_format():
    text = 'name: "a"\nname: "b"\n'
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text, caffe_pb2.NetParameter())
    with pytest.raises(SurgeryError) as info:
        Document.parse(text, "t.prototxt").to_message()
    assert info.value.line == 2


# -- unknown fields ---------------------------------------------------------

UNKNOWN = """layer {
  name: "c1"
  type: "Convolution"
  convolution_param {
    num_output: 8
    frobnicate: 3   # fork-only field
  }
  mystery_param { a: 1 }
}
layer {
  name: "r"
  type: "ReLU"
}
"""


def test_unknown_fields_are_kept_and_recorded():
    doc = Document.parse(UNKNOWN, "u.prototxt")
    net, binding = doc.to_message()
    assert net.layer[0].convolution_param.num_output == 8
    names = [(u.name, u.line, u.col, u.layer) for u in binding.unknown_fields]
    assert names == [("frobnicate", 6, 5, "c1"), ("mystery_param", 8, 3, "c1")]
    assert str(binding.unknown_fields[0]).startswith("u.prototxt:6:5: unknown field `frobnicate`")
    assert binding.geometry_unknown_layers() == ["c1"]
    doc.set_field("c1", "convolution_param.num_output", 16)
    out = doc.to_text()
    assert "    frobnicate: 3   # fork-only field\n" in out
    assert "  mystery_param { a: 1 }\n" in out


def test_strict_mode_names_file_line_col():
    with pytest.raises(SurgeryError) as info:
        Document.parse(UNKNOWN, "u.prototxt").to_message(strict=True)
    assert str(info.value) == ("u.prototxt:6:5: unknown field `frobnicate` in "
                               "caffe.ConvolutionParameter")


# -- placeholders -----------------------------------------------------------

def test_deeplab_v2_template_placeholders_and_edit_survive_substitution():
    text = corpus("deeplab_v2/vgg16_train.prototxt")
    doc = Document.parse(text, "vgg16_train.prototxt")
    assert doc.to_text() == text
    net, binding = doc.to_message()
    # Count placeholder-bearing values independently: one per non-comment line.
    lines = [l for l in strip_comments(text).splitlines() if PLACEHOLDER.search(l)]
    assert len(binding.placeholders) == len(lines)
    assert {t for _, t in binding.placeholders} == {
        l.split(":", 1)[1].strip() for l in lines}
    # Numeric placeholders stay unset; string ones keep their literal text.
    for path, ptext in binding.placeholders:
        target = net
        for step in path[:-1]:
            target = target[step] if isinstance(step, int) else getattr(target, step)
        last = path[-1]
        if ptext.startswith('"'):
            value = target[last] if isinstance(last, int) else getattr(target, last)
            assert value == ptext.strip('"')
        elif not isinstance(last, int):
            assert not target.HasField(last)
    by_layer = binding.placeholders_by_layer()
    fc8 = [l.name for l in net.layer if l.name.startswith("fc8_") and l.type == "Convolution"]
    assert fc8 and all(("convolution_param", "num_output") in [p for p, _ in by_layer[n]]
                       for n in fc8)

    conv = next(n for n in doc.layer_names() if n == "conv5_1")
    doc.set_field(conv, "convolution_param.dilation", [4])
    edited = doc.to_text()
    removed, added = changed_lines(text, edited)
    assert len(added) == 1 and len(removed) <= 1 and added[0].strip() == "dilation: 4"
    values = {"NET_ID": "deeplab", "NUM_LABELS": "21", "EXP": "voc12",
              "DATA_ROOT": "/data", "TRAIN_SET": "train_aug"}
    substituted = PLACEHOLDER.sub(lambda m: values.get(m.group(0)[2:-1], "x"), edited)
    net = caffe_pb2.NetParameter()
    text_format.Parse(substituted, net)
    layer = next(l for l in net.layer if l.name == "conv5_1")
    assert list(layer.convolution_param.dilation) == [4]
    assert net.name == "deeplab"


def test_bare_placeholder_in_string_field_is_kept_literally():
    text = 'name: ${NET}\nlayer { name: "fc8_${EXP}" type: "Convolution"\n' \
           '  convolution_param { num_output: ${N} kernel_size: 1 } }\n'
    net, binding = Document.parse(text, "p.prototxt").to_message()
    assert net.name == "${NET}" and net.layer[0].name == "fc8_${EXP}"
    assert not net.layer[0].convolution_param.HasField("num_output")
    assert binding.placeholders == [(("name",), "${NET}"),
                                    (("layer", 0, "name"), '"fc8_${EXP}"'),
                                    (("layer", 0, "convolution_param", "num_output"), "${N}")]


# -- edits ------------------------------------------------------------------

def test_changing_a_dilation_changes_exactly_one_line():
    text = corpus("ssd/SSD_300x300_deploy.prototxt")
    doc = Document.parse(text, "ssd.prototxt")
    doc.set_field("conv5_2", "convolution_param.dilation", [2])
    removed, added = changed_lines(text, doc.to_text())
    assert [l.strip() for l in removed] == ["dilation: 1"]
    assert [l.strip() for l in added] == ["dilation: 2"]
    assert removed[0].replace("1", "2") == added[0]


def test_resnet101_set_stride_and_add_dilation_one_line_each():
    text = corpus("resnet_kaiming/ResNet-101-deploy.prototxt")
    doc = Document.parse(text, "r101.prototxt")
    doc.set_field("res5a_branch2a", "convolution_param.stride", [1])
    removed, added = changed_lines(text, doc.to_text())
    assert (removed, added) == (["\t\tstride: 2\n"], ["\t\tstride: 1\n"])

    doc = Document.parse(text, "r101.prototxt")
    doc.set_field("res5a_branch2b", "convolution_param.dilation", [2])
    out = doc.to_text()
    removed, added = changed_lines(text, out)
    assert removed == [] and added == ["\t\tdilation: 2\n"]
    net, _ = Document.parse(out, "r101.prototxt").to_message()
    layer = next(l for l in net.layer if l.name == "res5a_branch2b")
    assert list(layer.convolution_param.dilation) == [2]


def test_new_field_follows_space_indentation():
    text = corpus("bvlc_examples/lenet.prototxt")
    doc = Document.parse(text, "lenet.prototxt")
    doc.set_field("conv2", "convolution_param.dilation", 2)
    removed, added = changed_lines(text, doc.to_text())
    sibling = next(l for l in text.splitlines(True) if l.strip().startswith("kernel_size"))
    indent = sibling[:len(sibling) - len(sibling.lstrip())]
    assert removed == [] and added == [f"{indent}dilation: 2\n"]


def test_remove_layer_removes_exactly_its_block_and_separator():
    text = corpus("resnet_kaiming/ResNet-101-deploy.prototxt")
    doc = Document.parse(text, "r101.prototxt")
    doc.remove_layer("res5c_relu")
    removed, added = changed_lines(text, doc.to_text())
    lines = text.splitlines(True)
    start = next(i for i, l in enumerate(lines) if 'name: "res5c_relu"' in l)
    while not lines[start].startswith("layer"):
        start -= 1
    end = start
    while lines[end] != "}\n":
        end += 1
    if not lines[start - 1].strip():      # its separating blank line goes with it
        start -= 1
    assert added == [] and len(removed) == end + 1 - start
    assert doc.to_text() == "".join(lines[:start] + lines[end + 1:])
    assert "res5c_relu" not in doc.layer_names()


def test_repeated_values_rewrite_remove_and_insert():
    text = ("layer {\n  name: \"c\"\n  convolution_param {\n    kernel_size: 3\n"
            "    stride: 2\n    stride: 2  # h, w\n    pad: [1, 1]\n  }\n}\n")
    doc = Document.parse(text, "r.prototxt")
    doc.set_field("c", "convolution_param.stride", [1])        # N=2 -> M=1
    doc.set_field("c", "convolution_param.kernel_size", [3, 5])  # N=1 -> M=2
    doc.set_field("c", "convolution_param.pad", [2, 2, 0])     # list form grows
    out = doc.to_text()
    assert out == ("layer {\n  name: \"c\"\n  convolution_param {\n    kernel_size: 3\n"
                   "    kernel_size: 5\n    stride: 1\n    pad: [2, 2, 0]\n  }\n}\n")
    doc.set_field("c", "convolution_param.pad", [4])
    assert "    pad: [4]\n" in doc.to_text()
    net, _ = Document.parse(doc.to_text()).to_message()
    assert list(net.layer[0].convolution_param.kernel_size) == [3, 5]


def test_inline_block_edits_stay_inline():
    text = 'layer {\n  name: "in"\n  input_param { shape: { dim: 1 dim: 3 } }\n}\n'
    doc = Document.parse(text)
    doc.set_field("in", "input_param.shape.dim", [1, 3, 224, 224])
    assert doc.to_text() == ('layer {\n  name: "in"\n'
                             '  input_param { shape: { dim: 1 dim: 3 dim: 224 dim: 224 } }\n}\n')
    doc.set_field("in", "input_param.shape.dim", [2])
    assert '  input_param { shape: { dim: 2 } }\n' in doc.to_text()


def test_create_missing_block_and_remove_field():
    text = 'layer {\n\tname: "p"\n\ttype: "Pooling"\n\tpooling_param {\n\t\tpool: MAX\n' \
           '\t\tstride: 2\n\t}\n}\n'
    doc = Document.parse(text)
    assert doc.remove_field("p", "pooling_param.stride")
    doc.set_field("p", "pooling_param.pool", "AVE")
    doc.set_field("p", "param.lr_mult", 0)
    assert doc.to_text() == ('layer {\n\tname: "p"\n\ttype: "Pooling"\n\tpooling_param {\n'
                             '\t\tpool: AVE\n\t}\n\tparam {\n\t\tlr_mult: 0\n\t}\n}\n')
    assert not doc.remove_field("p", "pooling_param.stride")
    with pytest.raises(SurgeryError):
        doc.set_field("p", "pooling_param.pool", "NOT_A_METHOD")


def test_rename_add_after_and_top_field():
    text = corpus("bvlc_examples/lenet.prototxt")
    doc = Document.parse(text, "lenet.prototxt")
    doc.rename_layer("ip2", "ip2_new")
    doc.add_layer_after("ip2_new", 'layer {\n  name: "extra"\n  type: "ReLU"\n'
                                   '  bottom: "ip2"\n  top: "ip2"\n}')
    doc.set_field("extra", "relu_param.negative_slope", 0.5)
    doc.set_top_field("name", "LeNet2")
    out = doc.to_text()
    names = Document.parse(out).layer_names()
    assert names[names.index("ip2_new") + 1] == "extra"
    net, _ = Document.parse(out).to_message()
    assert net.name == "LeNet2"
    assert next(l for l in net.layer if l.name == "extra").relu_param.negative_slope == 0.5
    removed, added = changed_lines(text, out)
    assert len(removed) == 2          # the net name and the layer name
    with pytest.raises(SurgeryError) as info:
        doc.find_layer("nope")
    assert "nope" in str(info.value)


def test_placeholder_values_can_be_written_raw():
    text = 'layer {\n  name: "fc8"\n  convolution_param {\n    num_output: 21\n  }\n}\n'
    doc = Document.parse(text)
    doc.set_field("fc8", "convolution_param.num_output", Raw("${NUM_LABELS}"))
    doc.rename_layer("fc8", "fc8_${EXP}")
    assert doc.to_text() == text.replace("21", "${NUM_LABELS}").replace('"fc8"', '"fc8_${EXP}"')


def test_duplicate_layer_names_are_refused_by_name():
    text = corpus("bvlc_examples/lenet_train_test.prototxt")
    doc = Document.parse(text)
    dup = [n for n in doc.layer_names() if doc.layer_names().count(n) > 1]
    assert dup
    with pytest.raises(SurgeryError) as info:
        doc.set_field(dup[0], "include.phase", "TEST")
    assert "share this name" in str(info.value)


# -- robustness -------------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

_PIECES = ["layer", "name", "convolution_param", "num_output", "dilation", "pad", ":",
           "{", "}", "<", ">", "[", "]", ",", ";", " ", "\n", "\t", "# c\n", '"a\\x"',
           "'b'", '"\\u12"', "1", "-1", "1e-4", "-inf", "0x1F", "99999999999", "true",
           "MAX", "${N}", "x_${E}", "$", "@", '"open']


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_any_input_round_trips_or_fails_with_a_located_error(pieces):
    text = "".join(pieces)
    try:
        doc = Document.parse(text, "f.prototxt")
    except SurgeryError as err:
        assert err.file == "f.prototxt" and err.line is not None
        return
    assert doc.to_text() == text
    try:
        doc.to_message()
    except SurgeryError as err:
        assert err.line is not None


# Layouts around layer blocks: comments above and after, blank lines or none, two blocks
# on a line, a last block with no newline. Removing blocks from a document read part by
# part (blocks kept as text, LazyField) must give the text removing them from one parsed
# whole gives.
LAYOUTS = [
    'name: "n"\nlayer { name: "a" }\nlayer { name: "b" }\nlayer { name: "c" }\n',
    'layer { name: "a" }\n\nlayer { name: "b" }\n\nlayer { name: "c" }\n',
    '# head\nlayer { name: "a" }\n# about b\nlayer { name: "b" }  # b\n\n# about c\n\n'
    'layer {\n  name: "c"\n}\n# tail\n',
    'layer { name: "a" } layer { name: "b" }\nlayer { name: "c" } # c\nlayer { name: "d" }',
    '  layer {\n    name: "a"\n  }\n\n\n  layer {\n    name: "b"\n  }\n  layer { name: "c" }\n',
    'layer { name: "a" }\n\nlayer { name: "b" }\nlayer { name: "c" }\n\n\n',
]


@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
def test_removing_blocks_kept_as_text_matches_removing_parsed_ones(layout):
    """Blocks are removed by node, as the minimal edit does (by name would read them all)."""
    text = LAYOUTS[layout]
    count = len(Document.parse(text, "net.prototxt").layers())
    runs = [[k] for k in range(count)] + [[k, k + 1] for k in range(count - 1)] + \
        [[k + 1, k] for k in range(count - 1)] + [list(range(count))]
    for run in runs:
        parsed = Document.parse(text, "net.prototxt")
        lazy = Document.read_bound(text, "net.prototxt")[0]
        blocks = (parsed.layers(), lazy.layers())
        assert sum(type(f) is tokens.LazyField for f in blocks[1]) >= count - 1
        for k in run:
            parsed.remove_layer(blocks[0][k])
            lazy.remove_layer(blocks[1][k])
        assert lazy.to_text() == parsed.to_text(), (run, text)


@pytest.mark.parametrize("read", ["parsed", "kept as text"])
def test_removing_a_block_keeps_the_comments_above_it(read):
    text = ('layer { name: "a" }\n# about b\nlayer { name: "b" }  # b\n\n'
            '# about c\nlayer { name: "c" }\n')
    doc = Document.parse(text, "n") if read == "parsed" else Document.read_bound(text, "n")[0]
    doc.remove_layer(doc.layers()[1])
    assert doc.to_text() == ('layer { name: "a" }\n# about b\n\n'
                             '# about c\nlayer { name: "c" }\n')
