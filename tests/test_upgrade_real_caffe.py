"""`upgrade` against real Caffe's own upgraders (marked `caffe`; skipped without a build).

Caffe's `upgrade_net_proto_text` runs its UpgradeNetAsNeeded on a file and writes the
result. That output is parsed with our schema and compared, as a message, with
`upgrade_as_caffe` on the same text; `upgrade_solver_proto_text` likewise for solvers.
The inputs are Caffe's own test cases (tests/data/caffe_upgrade), small nets for the
steps those cases do not reach (every V1 type, the data-layer fields, the input header,
BatchNorm), and every public corpus file that Caffe's upgrader accepts.

Which corpus files it accepts is decided by running it. Its parser rejects fields and
values its schema lacks (most fork fields, and DeepLab's unquoted `${...}` templates), so
those files are out of scope and skipped with Caffe's own reason. The comparison is made
before our DeepLab `hole` step (`upgrade_as_caffe`, not `upgrade_net`): Caffe has no such
step, and a file using `hole` is one Caffe's parser rejects anyway.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from surgery import caffe_pb2
from surgery.io.prototxt import format_prototxt, parse_prototxt
from surgery.io.solverfile import upgrade_solver
from surgery.io.upgrade import upgrade_as_caffe

from _caffe import caffe_build
from conftest import CORPUS, corpus_path

pytestmark = pytest.mark.caffe

DATA = Path(__file__).parent / "data" / "caffe_upgrade"
CASES = sorted(DATA.glob("*.prototxt"))
CORPUS_FILES = sorted(CORPUS.glob("*/*.prototxt"))
CORPUS_NETS = [p for p in CORPUS_FILES if "solver" not in p.name]
CORPUS_SOLVERS = [p for p in CORPUS_FILES if "solver" in p.name]
# Files of the corpus in plain BVLC form: Caffe must accept every one of them, so a
# broken build cannot pass for "every file rejected".
PLAIN = ["bvlc_alexnet/deploy.prototxt", "bvlc_reference_caffenet/train_val.prototxt",
         "vgg/VGG_ILSVRC_16_layers_deploy.prototxt", "resnet_kaiming/ResNet-50-deploy.prototxt",
         "bvlc_examples/lenet_train_test.prototxt"]


def _tool(name):
    folder = Path(caffe_build()["CAFFE_BIN"])
    for candidate in (folder / name, folder / f"{name}.bin"):
        if candidate.is_file():
            return candidate
    pytest.fail(f"{name} is not in {folder}")


def _run(tool, text, tmp_path):
    """(Caffe's output text, None) or (None, why Caffe refused it)."""
    src, out = tmp_path / "caffe_in.prototxt", tmp_path / "caffe_out.prototxt"
    src.write_text(text, encoding="utf-8")
    out.unlink(missing_ok=True)
    proc = subprocess.run([str(tool), str(src), str(out)], capture_output=True, text=True,
                          env={**os.environ, "GLOG_minloglevel": "2"}, timeout=120)
    if proc.returncode != 0 or not out.is_file():
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        parse = [line for line in lines if "Error parsing" in line]
        why = (parse or lines or [f"exit status {proc.returncode}"])[-1]
        return None, re.sub(r"^(\[libprotobuf [^]]*\]|[IWEF]\d{8} [^]]*\]) ", "", why)
    return out.read_text(encoding="utf-8"), None


def _diff(ours, theirs):
    a, b = format_prototxt(ours).splitlines(), format_prototxt(theirs).splitlines()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {i + 1}: ours {x!r}, Caffe {y!r}"
    return f"ours has {len(a)} lines, Caffe's {len(b)}"


def assert_same_as_caffe(text, tmp_path):
    """Caffe's upgraded net equals ours; the text must be one Caffe accepts."""
    output, refused = _run(_tool("upgrade_net_proto_text"), text, tmp_path)
    assert refused is None, f"Caffe's upgrader refused it: {refused}"
    theirs = parse_prototxt(output, "caffe output")
    ours, _ = upgrade_as_caffe(parse_prototxt(text))
    assert ours == theirs, _diff(ours, theirs)
    return ours


# ---------------------------------------------------------------------------
# Caffe's own test cases, through the real tool


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_caffe_test_cases(path, tmp_path):
    """Every V0, padded, V1 and V2 net of test_upgrade_proto.cpp, upgraded whole."""
    assert_same_as_caffe(path.read_text(encoding="utf-8"), tmp_path)


# ---------------------------------------------------------------------------
# steps the cases do not reach


# V1 enum values our schema adds for forks (proto/caffe.proto marks them FORK).
FORK_V1_TYPES = {"BN", "IMAGE_SEG_DATA", "INTERP", "MAT_WRITE", "SEG_ACCURACY"}


def test_every_v1_layer_type(tmp_path):
    """A V1 net with one layer of each BVLC V1 type (Caffe's TestUpgradeV1LayerType)."""
    enum = caffe_pb2.V1LayerParameter.LayerType
    names = [n for n in enum.keys() if n != "NONE" and n not in FORK_V1_TYPES]
    text = "".join(f'layers {{ name: "l{i}" type: {n} }}\n' for i, n in enumerate(names))
    ours = assert_same_as_caffe(text, tmp_path)
    assert len(ours.layer) == len(names) > 35


def test_v1_param_specs_and_blocks(tmp_path):
    assert_same_as_caffe(
        'name: "n" force_backward: true\n'
        'layers { name: "c" type: CONVOLUTION bottom: "a" top: "b" blobs_lr: 1 blobs_lr: 2 '
        'weight_decay: 1 weight_decay: 0 param: "w" blob_share_mode: PERMISSIVE '
        'loss_weight: 0.5 include { phase: TRAIN } exclude { stage: "x" } '
        'convolution_param { num_output: 3 kernel_size: 3 } }\n'
        'layers { name: "p" type: POOLING pooling_param { pool: AVE kernel_size: 2 } '
        'transform_param { scale: 0.5 } loss_param { ignore_label: 255 } }\n', tmp_path)


def test_data_layer_fields(tmp_path):
    """Caffe moves them per type, and gives every data layer both blocks once one needs it."""
    assert_same_as_caffe(
        'layers { name: "a" type: DATA data_param { source: "db" scale: 0.5 mirror: true } }\n'
        'layers { name: "b" type: IMAGE_DATA }\n'
        'layers { name: "c" type: WINDOW_DATA window_data_param { crop_size: 7 mean_file: "m" } }\n'
        'layers { name: "d" type: HDF5_DATA }\n', tmp_path)


@pytest.mark.parametrize("header", [
    'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8',
    'input: "a" input_shape { dim: 1 dim: 3 } input: "b" input_shape { dim: 2 }',
    'input: "a" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2 '
    'input_shape { dim: 4 dim: 5 }',
    'input: "bare"',
])
def test_input_header(header, tmp_path):
    assert_same_as_caffe(header + '\nlayer { name: "r" type: "ReLU" bottom: "a" top: "r" }\n',
                         tmp_path)


@pytest.mark.parametrize("specs", [2, 3, 4])
def test_batch_norm_param_specs(specs, tmp_path):
    """Caffe freezes (lr_mult 0, decay_mult 0) the specs of a BatchNorm layer that
    declares exactly three, keeping their other fields; other layers and counts stay."""
    params = " ".join(f'param {{ name: "p{i}" lr_mult: 1 }}' for i in range(specs))
    ours = assert_same_as_caffe(
        f'layer {{ name: "bn" type: "BatchNorm" bottom: "x" top: "x" {params} }}\n'
        f'layer {{ name: "s" type: "Scale" bottom: "x" top: "x" {params} }}\n', tmp_path)
    assert [p.lr_mult for p in ours.layer[0].param] == [0 if specs == 3 else 1] * specs
    assert [p.name for p in ours.layer[0].param] == [f"p{i}" for i in range(specs)]
    assert [p.lr_mult for p in ours.layer[1].param] == [1] * specs


def test_v0_padding_layer_into_pooling(tmp_path):
    assert_same_as_caffe(
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 9 input_dim: 9\n'
        'layers { layer { name: "p" type: "padding" pad: 1 } bottom: "data" top: "p" }\n'
        'layers { layer { name: "pool" type: "pool" pool: STOCHASTIC kernelsize: 3 stride: 2 } '
        'bottom: "p" top: "pool" }\n'
        'layers { layer { name: "q" type: "padding" pad: 2 } bottom: "pool" top: "q" }\n', tmp_path)


# ---------------------------------------------------------------------------
# the public corpus


def test_plain_bvlc_corpus_files_are_accepted(tmp_path):
    tool = _tool("upgrade_net_proto_text")
    for rel in PLAIN:
        path = corpus_path(rel)
        _, refused = _run(tool, path.read_text(encoding="utf-8"), tmp_path)
        assert refused is None, f"{rel}: {refused}"


@pytest.mark.parametrize("path", CORPUS_NETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_net(path, tmp_path):
    text = path.read_text(encoding="utf-8")
    output, refused = _run(_tool("upgrade_net_proto_text"), text, tmp_path)
    if refused is not None:
        pytest.skip(f"out of scope: Caffe's upgrader refuses it ({refused})")
    theirs = parse_prototxt(output, "caffe output")
    ours, _ = upgrade_as_caffe(parse_prototxt(text, str(path)))
    assert ours == theirs, _diff(ours, theirs)


# ---------------------------------------------------------------------------
# solvers


@pytest.mark.parametrize("old", caffe_pb2.SolverParameter.SolverType.keys())
def test_solver_type(old, tmp_path):
    text = f'net: "train.prototxt"\nbase_lr: 0.01\nsolver_type: {old}\n'
    output, refused = _run(_tool("upgrade_solver_proto_text"), text, tmp_path)
    assert refused is None, refused
    theirs = parse_prototxt(output, "caffe output", caffe_pb2.SolverParameter)
    ours, _ = upgrade_solver(parse_prototxt(text, message_type=caffe_pb2.SolverParameter))
    assert ours == theirs and ours.type


@pytest.mark.parametrize("path", CORPUS_SOLVERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_solver(path, tmp_path):
    text = path.read_text(encoding="utf-8")
    output, refused = _run(_tool("upgrade_solver_proto_text"), text, tmp_path)
    if refused is not None:
        pytest.skip(f"out of scope: Caffe's upgrader refuses it ({refused})")
    theirs = parse_prototxt(output, "caffe output", caffe_pb2.SolverParameter)
    ours, _ = upgrade_solver(parse_prototxt(text, str(path), caffe_pb2.SolverParameter))
    assert ours == theirs
