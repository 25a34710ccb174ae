"""The quick binding of plain layer blocks (io/quickbind.py) agrees with the lossless
reading: the same message, the same records (placeholders, unknown fields and values),
the same document text and block spans, and the same error, on every file. Each file is
read twice, once with the quick path and once with it turned off."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from surgery.errors import SurgeryError
from surgery.io import quickbind
from surgery.io.document import Document
from surgery.io.tokens import LazyField
from conftest import corpus_files

ROOT = Path(__file__).resolve().parents[1]


def read(text, *, quick):
    """What reading `text` gives: (message bytes, records, text, spans, quick count) or
    the error; `quick` False reads every block the lossless way."""
    counted = []
    real = quickbind.QuickBinder.block

    def block(self, start):
        found = real(self, start) if quick else None
        counted.append(found is not None)
        return found

    quickbind.QuickBinder.block = block
    try:
        doc, message, binding = Document.read_bound(text, "net.prototxt")
    except SurgeryError as exc:
        return ("error", str(exc), exc.line, exc.col)
    finally:
        quickbind.QuickBinder.block = real
    spans = [f.span[1:] if type(f) is LazyField else None for f in doc.root.fields]
    records = ([(p.path, p.text) for p in binding.placeholders],
               [tuple(u) for u in binding.unknown_fields])
    return (message.SerializeToString(deterministic=True), records, doc.to_text(), spans,
            sum(counted))


def assert_same(text, *, quick_expected=None):
    fast, slow = read(text, quick=True), read(text, quick=False)
    assert fast[:4] == slow[:4]
    if quick_expected is not None:
        assert fast[4] == quick_expected, fast[4]
    return fast


PLAIN = '''name: "n"   # a comment
layer {
  name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } }
}

# above conv1
layer {
  name: 'conv1'
  type: "Convolution"  # trailing
  bottom: "data"
  top: "conv1"
  param { lr_mult: 1 decay_mult: 1 }
  param: { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 8
    kernel_size: 3 stride: 2 pad: 1
    weight_filler { type: "gaussian" std: 1e-2 }
    bias_term: true
  }
}
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer: { name: " relu 1 é" type: "ReLU" bottom: "pool1" top: "pool1" }
'''


def test_plain_blocks_are_bound_quickly_and_agree():
    """Every layer block but the first (which sets the indent) is plain here."""
    assert_same(PLAIN, quick_expected=3)


@pytest.mark.parametrize("layout", ["crlf", "tabs", "bom", "comments inside", "hash in string",
                                    "no final newline", "one line"])
def test_plain_blocks_in_other_layouts_agree(layout):
    text = {
        "crlf": PLAIN.replace("\n", "\r\n"),
        "tabs": PLAIN.replace("  ", "\t"),
        "bom": "\ufeff" + PLAIN,
        "comments inside": PLAIN.replace(" { ", " {  # open\n ").replace(' top:', ' # t\n top:'),
        "hash in string": PLAIN.replace('"pool1"', '"pool#1"'),
        "no final newline": PLAIN.rstrip("\n"),
        "one line": PLAIN.replace("\n", " ").replace("# a comment", "").replace(
            "# above conv1", "").replace("# trailing", ""),
    }[layout]
    quick = assert_same(text)[4]
    # A file all on one line never shows its indentation, which the lossless reading of a
    # block finds and the quick one does not: every block is read the lossless way.
    assert quick == 0 if layout == "one line" else quick >= 1


# Each replaces the text of pool1's block (and what follows) with something not plain.
NOT_PLAIN = {
    "placeholder": 'layer { name: "p" type: "Pooling" pooling_param { kernel_size: ${K} } }',
    "placeholder in a string": 'layer { name: "${NAME}" type: "ReLU" bottom: "a" top: "a" }',
    "unknown field": 'layer { name: "p" type: "ReLU" fork_option: 3 }',
    "unknown enum value": 'layer { name: "p" type: "Pooling" pooling_param { pool: FANCY } }',
    "list": 'layer { name: "p" type: "Concat" bottom: ["a", "b"] top: "c" }',
    "angle brackets": 'layer < name: "p" type: "ReLU" >',
    "separator": 'layer { name: "p" type: "ReLU" };',
    "separator on its own line": 'layer { name: "p" type: "ReLU" }\n,\n',
    "separator inside": 'layer { name: "p"; type: "ReLU", }',
    "escaped string": 'layer { name: "p\\"q" type: "ReLU" }',
    "concatenated strings": 'layer { name: "p" "q" type: "ReLU" }',
    "field given twice": 'layer { name: "p" name: "q" }',
    "message given twice": 'layer { name: "p" pooling_param { pool: MAX } pooling_param { } }',
    "bad number": 'layer { name: "p" convolution_param { num_output: 1.5 } }',
    "negative unsigned": 'layer { name: "p" convolution_param { num_output: -1 } }',
    "string for a number": 'layer { name: "p" convolution_param { num_output: "3" } }',
    "word for a string": 'layer { name: p }',
    "scalar for a message": 'layer { name: "p" convolution_param: 3 }',
    "block for a scalar": 'layer { name { } }',
    "no colon": 'layer { name "p" }',
    "bad character": 'layer { name: "p" type: "ReLU" } @',
    "unclosed": 'layer { name: "p" type: "ReLU" ',
    "unterminated string": 'layer { name: "p',
    "glued placeholder": 'layer { name: "p" top: "t" bottom: "b" type: fc_${X} }',
    "bad character then plain": 'layer { name: "p" ? }\nlayer { name: "q" }',
    "error then plain": 'layer { name: "p" type: 3 }\nlayer { name: "q" }',
    "deep": "layer { " + "convolution_param { " * 120 + "}" * 121,
    "bare key": "layer",
    "key then end": "layer {",
}


@pytest.mark.parametrize("case", sorted(NOT_PLAIN))
def test_a_block_that_is_not_plain_reads_as_before(case):
    text = PLAIN + NOT_PLAIN[case] + '\nlayer { name: "last" type: "ReLU" bottom: "pool1" ' \
                                     'top: "pool1" }\n'
    assert_same(text)


def test_the_quick_path_binds_the_plain_blocks_around_one_that_is_not():
    text = PLAIN + NOT_PLAIN["unknown field"] + '\nlayer { name: "z" type: "ReLU" }\n'
    assert assert_same(text)[4] == 4      # pool1, relu1 and the last one; not the fork's


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_plain_text_reads_as_before(data):
    """Characters deleted, repeated or inserted anywhere: both ways agree, errors included."""
    text = PLAIN
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        how = data.draw(st.sampled_from(["delete", "insert", "repeat"]))
        if how == "delete":
            text = text[:at] + text[at + 1:]
        elif how == "insert":
            text = text[:at] + data.draw(st.sampled_from(list('{}:;,<>[]"\'#$\n x1'))) + text[at:]
        else:
            text = text[:at] + text[at:at + 5] + text[at:]
    assert_same(text)


NETS = sorted(p for p in (ROOT / "models").rglob("*.prototxt")) + \
    [p for p in corpus_files() if p.stat().st_size < 2_000_000]


@pytest.mark.parametrize("path", NETS, ids=[str(p.relative_to(p.parents[1])) for p in NETS])
def test_published_and_generated_nets_read_as_before(path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        pytest.skip("not UTF-8")
    assert_same(text)
