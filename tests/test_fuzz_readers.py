"""Fuzzing the readers where users meet them: the CLI.

tests/test_caffemodel.py and tests/test_document.py fuzz the reader functions; here
`caffe-surgery inspect` (prototxt) and `caffe-surgery weights` / `check` (caffemodel)
get damaged files. Whatever the bytes, the result is exit 0 or exit 2 with exactly one
line on stderr: never a traceback, a hang or unbounded memory. The deep-nesting cases
also run in a real child process with a time and address-space limit.
"""

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from surgery.errors import SurgeryError
from surgery.io.caffemodel import read_caffemodel, write_caffemodel
from surgery.io.document import Document
from surgery.io.prototxt import parse_prototxt
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SMALL_NET = b"""name: "small"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 dilation: 2 group: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "conv2" bottom: "conv2" top: "sum" }
"""


def assert_clean_outcome(rc, err, *, allowed=(0, 2)):
    """Exit 2 with exactly one error line (last, after any warnings the loader gave about
    unknown fields), or exit 0 with at most warnings/notes."""
    assert rc in allowed, (rc, err[-2000:])
    assert "Traceback" not in err
    lines = err.splitlines()
    if rc == 2:
        assert lines and lines[-1].startswith("caffe-surgery: error: "), err[-2000:]
        lines = lines[:-1]
    assert all(l.startswith(("caffe-surgery: warning: ", "caffe-surgery: note: "))
               for l in lines), err[-2000:]


def assert_one_line_error(rc, err):
    """Exit 2 and nothing on stderr but the one error line."""
    assert_clean_outcome(rc, err, allowed=(2,))
    assert len(err.splitlines()) == 1, err[-2000:]


# --------------------------------------------------------------------------- prototxt

def deep_braces(n):
    return "layer {" * n + "}" * n


# The loader keeps unknown fields (with a warning), so these must fail on syntax or values.
PROTOTXT_CASES = {
    "deep_closers": "}" * 100_000,
    "deep_lists": "layer { bottom: " + "[" * 100_000,
    "huge_integer": 'layer { name: "a" type: "Input" top: "d" input_param { shape { dim: '
                    + "9" * 5000 + " } } }",
    "negative_uint": 'layer { name: "c" type: "Convolution" convolution_param { num_output: -1 } }',
    "uint32_overflow": 'layer { name: "c" type: "Convolution" '
                       'convolution_param { num_output: 4294967296 } }',
    "unterminated_string": 'layer { name: "abc',
    "nul_bytes": 'layer { name: "a\x00b" type: "ReLU" }\x00\x00',
    "only_colon": ":",
    "long_name": "x" * 1_000_000 + " 1",
    "many_fields": "name: 'n' " * 100_000,
}


@pytest.mark.parametrize("case", sorted(PROTOTXT_CASES))
def test_inspect_on_malformed_prototxt_is_one_line(tmp_path, case):
    path = tmp_path / f"{case}.prototxt"
    path.write_text(PROTOTXT_CASES[case], encoding="utf-8")
    rc, _out, err = run_cli("inspect", path)
    assert_one_line_error(rc, err)
    assert str(path) in err



DEEP_CASES = {
    "deep_braces": deep_braces(100_000),
    "deep_unclosed": "layer {" * 100_000,
    "deep_in_valid_block": 'layer { name: "a" convolution_param ' + "{ weight_filler " * 50_000,
}


@pytest.mark.parametrize("case", sorted(DEEP_CASES))
def test_inspect_on_deeply_nested_prototxt_is_one_line(tmp_path, case):
    path = tmp_path / f"{case}.prototxt"
    path.write_text(DEEP_CASES[case], encoding="utf-8")
    rc, _out, err = run_cli("inspect", path)
    assert_one_line_error(rc, err)


@pytest.mark.parametrize("text", [
    'layer { name: "a" type: "Dropout" dropout_param { dropout_ratio: 1e99999 } }',  # inf
    "x" * 1_000_000 + ": 1",                                # an unknown field, kept
    'layer { name: "a" type: "Input" top: "d" input_param { shape { dim: 1 dim: 3 '
    'dim: 100000000 dim: 100000000 } } }',
])
def test_inspect_on_odd_but_parseable_prototxt_exits_cleanly(tmp_path, text):
    path = tmp_path / "odd.prototxt"
    path.write_text(text)
    rc, _out, err = run_cli("inspect", path)
    assert_clean_outcome(rc, err)


@pytest.mark.parametrize("data", [
    b'layer { name: "\xff\xfe" type: "ReLU" }',          # bad UTF-8 in a string
    b"# caf\xe9\nname: 'x'",                             # Latin-1 in a comment
    b"\xef\xbb\xbf\xef\xbb",                              # BOM then a cut sequence
    bytes(range(256)),
])
def test_inspect_on_bad_utf8_names_the_position(tmp_path, data):
    path = tmp_path / "bad.prototxt"
    path.write_bytes(data)
    rc, _out, err = run_cli("inspect", path)
    assert_one_line_error(rc, err)
    assert f"{path}:" in err  # file:line:col


def _mutate(data, edits):
    buf = bytearray(data)
    for pos, op, byte in edits:
        pos %= len(buf) + 1
        if op == 0 and pos < len(buf):
            buf[pos] = byte
        elif op == 1:
            buf.insert(pos, byte)
        elif pos < len(buf):
            del buf[pos]
    return bytes(buf)


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 2),
                           st.sampled_from(b'{}[]:;,"\'#\n 0129-.exyz_\xff')), min_size=1, max_size=6)


@FUZZ
@given(edits=EDITS)
def test_inspect_on_mutated_prototxt_never_crashes(tmp_path, edits):
    path = tmp_path / "mutated.prototxt"
    path.write_bytes(_mutate(SMALL_NET, edits))
    rc, _out, err = run_cli("inspect", path)
    assert_clean_outcome(rc, err)


@FUZZ
@given(cut=st.integers(0, len(SMALL_NET)))
def test_inspect_on_truncated_prototxt_never_crashes(tmp_path, cut):
    path = tmp_path / "cut.prototxt"
    path.write_bytes(SMALL_NET[:cut])
    rc, _out, err = run_cli("inspect", path, "--json")
    assert_clean_outcome(rc, err)


@FUZZ
@given(data=st.binary(max_size=300))
def test_parse_prototxt_on_random_bytes_raises_only_surgery_error(data):
    try:
        parse_prototxt(data, "random.prototxt")
    except SurgeryError as exc:
        assert "\n" not in str(exc) and "random.prototxt" in str(exc)


def test_document_parse_on_deep_nesting_raises_surgery_error():
    with pytest.raises(SurgeryError):
        Document.parse(deep_braces(100_000), "deep.prototxt")


def test_inspect_on_a_shape_with_too_many_axes_is_one_line(tmp_path):
    dims = " ".join(["dim: 2"] * 1100)
    path = tmp_path / "axes.prototxt"
    path.write_text(f'layer {{ name: "a" type: "Input" top: "d" '
                    f'input_param {{ shape {{ {dims} }} }} }}')
    rc, _out, err = run_cli("inspect", path)
    assert_one_line_error(rc, err)


# --------------------------------------------------------------------------- caffemodel

def varint(value):
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def key(number, wire):
    return varint(number << 3 | wire)


def field(number, payload):
    return key(number, 2) + varint(len(payload)) + payload


def layer(name, *blobs):
    """A LayerParameter (NetParameter field 100) with name and blobs (field 7)."""
    return field(100, field(1, name) + field(2, b"Convolution") + b"".join(field(7, b) for b in blobs))


def blob(values, dims):
    """A BlobProto: packed float data (5) and shape (7) of packed dims (1)."""
    packed = b"".join(varint(d) for d in dims)
    return field(5, np.asarray(values, "<f4").tobytes()) + field(7, field(1, packed))


CAFFEMODEL_CASES = {
    "length_past_end": key(100, 2) + varint(1000) + b"\x0a\x01a",
    "huge_length": key(100, 2) + varint((1 << 64) - 1),
    "varint_too_long": b"\x80" * 20,
    "wire_type_7": key(3, 7),
    "stray_end_group": key(3, 4),
    "field_zero": key(0, 0) + b"\x00",
    "nested_groups_top": key(9, 3) * 100_000,
    "nested_groups_in_layer": field(100, key(50, 3) * 50_000),
    "name_as_varint": field(100, key(1, 0) + b"\x05"),
    "blob_as_varint": field(100, field(1, b"a") + key(7, 0) + b"\x01"),
    "ragged_floats": layer(b"a", field(5, b"\x00" * 7)),
    "data_past_blob_end": field(100, field(1, b"a") + key(7, 2) + varint(3) + field(5, b"\0" * 8)),
    "too_many_axes": layer(b"a", field(7, field(1, b"\x01" * 40))),
    "huge_name": field(100, field(1, b"n" * 200_000)),
    "text_file": SMALL_NET,
    "truncated_header": field(100, layer(b"conv", blob([1, 2, 3], [3])))[:3],
}


@pytest.mark.parametrize("case", sorted(CAFFEMODEL_CASES))
def test_weights_on_malformed_caffemodel_is_one_line(tmp_path, case):
    path = tmp_path / f"{case}.caffemodel"
    path.write_bytes(CAFFEMODEL_CASES[case])
    rc, _out, err = run_cli("weights", path)
    assert_one_line_error(rc, err)
    assert str(path) in err


def test_check_on_malformed_caffemodel_is_one_line(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_bytes(SMALL_NET)
    model = tmp_path / "bad.caffemodel"
    model.write_bytes(CAFFEMODEL_CASES["length_past_end"])
    rc, _out, err = run_cli("check", net, model)
    assert_one_line_error(rc, err)


def test_bad_utf8_names_are_read_leniently_like_caffe(tmp_path):
    # proto2 strings are not validated by Caffe's C++ protobuf, so such a file loads there.
    path = tmp_path / "names.caffemodel"
    path.write_bytes(layer(b"conv\xff\xfe", blob([1, 2], [2])))
    rc, out, err = run_cli("weights", path, "--json")
    assert rc == 0 and not err
    assert json.loads(out)["layers"][0]["blobs"] == [[2]]


def test_huge_declared_shape_without_data_is_listed_not_allocated(tmp_path):
    path = tmp_path / "claims.caffemodel"
    dims = b"".join(varint(d) for d in (1 << 40, 1 << 40))
    path.write_bytes(layer(b"fc", field(7, field(1, dims))))
    rc, out, err = run_cli("weights", path, "--json")
    assert rc == 0, err
    assert json.loads(out)["layers"][0]["blobs"] == [[1 << 40, 1 << 40]]


@pytest.fixture(scope="module")
def valid_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "ok.caffemodel"
    rng = np.random.default_rng(0)
    write_caffemodel(path, [
        {"name": "conv1", "type": "Convolution", "blobs": [rng.normal(size=(8, 3, 3, 3)),
                                                           rng.normal(size=8)]},
        {"name": "relu1", "type": "ReLU", "bottom": ["conv1"], "top": ["conv1"]},
        {"name": "conv2", "type": "Convolution", "blobs": [rng.normal(size=(4, 4, 3, 3))]},
    ], name="small")
    return path.read_bytes()


@FUZZ
@given(cut=st.integers(0, 5000))
def test_weights_on_truncated_caffemodel_never_crashes(tmp_path, valid_model, cut):
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(valid_model[:cut % len(valid_model)])
    rc, out, err = run_cli("weights", path, "--json")
    assert_clean_outcome(rc, err)
    if rc == 0:
        json.loads(out)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 2), st.integers(0, 255)),
                      min_size=1, max_size=4))
def test_weights_on_mutated_caffemodel_never_crashes(tmp_path, valid_model, edits):
    path = tmp_path / "mutated.caffemodel"
    path.write_bytes(_mutate(valid_model, edits))
    rc, out, err = run_cli("weights", path, "--json")
    assert_clean_outcome(rc, err)
    if rc == 0:
        summary = read_caffemodel(path)
        assert len(json.loads(out)["layers"]) == len(summary.layers)


# --------------------------------------------------------------------------- real processes

def _limited():
    """Child pre-exec: 2 GiB of address space, 60 s of CPU."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))


# Short ids: pytest puts the test id in PYTEST_CURRENT_TEST, and a 100k-brace id in the
# environment makes the child's exec fail with "argument list too long".
@pytest.mark.parametrize("command,suffix,data", [
    pytest.param("inspect", ".prototxt", deep_braces(100_000).encode(), id="deep-braces"),
    pytest.param("inspect", ".prototxt", b"\xff" * 10 + b"layer {" * 100_000, id="bad-utf8-deep"),
    pytest.param("weights", ".caffemodel", CAFFEMODEL_CASES["nested_groups_top"], id="nested-groups"),
    pytest.param("weights", ".caffemodel", CAFFEMODEL_CASES["huge_length"], id="huge-length"),
])
def test_cli_process_ends_in_one_line_within_limits(tmp_path, command, suffix, data):
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    proc = subprocess.run([sys.executable, "-m", "surgery", command, str(path)],
                          capture_output=True, text=True, timeout=60, preexec_fn=_limited,
                          cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
