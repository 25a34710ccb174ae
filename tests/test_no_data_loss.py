"""Commands that write never lose data.

For upgrade, dilate, init-weights and fcn: a failed run (bad input, an impossible
request) leaves the directory exactly as it was: an existing output keeps its bytes,
a missing one is not created, no temp file is left behind. Inputs are never modified,
even on success, and -o naming an input is refused unless --in-place is given.
The whole directory is hashed before and after, so any stray write shows up.
"""

import hashlib
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from surgery.builder import NetBuilder
from surgery.cli import COMMANDS
from surgery.io.atomic import TEMP_MARK
from surgery.io.prototxt import format_prototxt
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
KNOWN = b"precious bytes that must survive\n"

LEGACY = """name: "legacy"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 16
input_dim: 16
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
         blobs_lr: 1 blobs_lr: 2
         convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
"""


def classifier(width=8, num_output=10):
    """Input 32x32 -> conv s2 -> pool s2 -> conv -> pool s2 -> fc: strides 2, 4, 8."""
    b = NetBuilder("tiny")
    x = b.input("data", (1, 3, 32, 32))
    x = b.conv("conv1", x, num_output=width, kernel=3, stride=2, pad=1)
    b.relu("relu1", x)
    x = b.pool("pool1", x, kernel=2, stride=2)
    x = b.conv("conv2", x, num_output=8, kernel=3, pad=1)
    x = b.pool("pool2", x, kernel=2, stride=2)
    b.fc("fc", x, num_output=num_output)
    return format_prototxt(b.net)


def snapshot(folder):
    """{relative path: sha256} of every file under folder, hidden ones included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture
def work(tmp_path):
    """A folder with a net, legacy net, weights for the net and weights of the wrong shape."""
    (tmp_path / "net.prototxt").write_text(classifier())
    (tmp_path / "other.prototxt").write_text(classifier(width=4, num_output=7))
    (tmp_path / "legacy.prototxt").write_text(LEGACY)
    (tmp_path / "bad.prototxt").write_text('layer { name: "x" type: "ReLU" \n  bottom: "a" ')
    rc, _, err = run_cli("init-weights", tmp_path / "net.prototxt", "-o",
                         tmp_path / "net.caffemodel")
    assert rc == 0, err
    rc, _, err = run_cli("init-weights", tmp_path / "other.prototxt", "-o",
                         tmp_path / "other.caffemodel")
    assert rc == 0, err
    return tmp_path


def _needs(command):
    if command.replace("-", "_") not in COMMANDS:
        pytest.skip(f"command {command} is not available")


# Each case: (command, argv with {d} for the work folder and OUT for the output, exit status).
FAILURES = {
    "upgrade-syntax-error": ("upgrade", ["{d}/bad.prototxt", "-o", "OUT"], 2),
    "upgrade-missing-input": ("upgrade", ["{d}/missing.prototxt", "-o", "OUT"], 2),
    "dilate-unreachable-stride": ("dilate", ["{d}/net.prototxt", "-s", "3", "--head", "cut",
                                             "-o", "OUT"], 2),
    "dilate-head-error": ("dilate", ["{d}/net.prototxt", "-s", "4", "--head", "error",
                                     "-o", "OUT"], 2),
    "dilate-bad-input": ("dilate", ["{d}/bad.prototxt", "-s", "4", "-o", "OUT"], 2),
    "dilate-zero-stride": ("dilate", ["{d}/net.prototxt", "-s", "0", "-o", "OUT"], 2),
    "dilate-weights-do-not-load": ("dilate", ["{d}/net.prototxt", "-s", "4", "--head", "cut",
                                              "--weights", "{d}/other.caffemodel", "-o", "OUT"], 1),
    "dilate-damaged-weights": ("dilate", ["{d}/net.prototxt", "-s", "4", "--head", "cut",
                                          "--weights", "{d}/bad.prototxt", "-o", "OUT"], 2),
    "init-weights-bad-input": ("init-weights", ["{d}/bad.prototxt", "-o", "OUT"], 2),
    "init-weights-bad-shape": ("init-weights", ["{d}/net.prototxt", "--input-shape", "data=0,3",
                                                "-o", "OUT"], 2),
    "fcn-bad-input": ("fcn", ["{d}/bad.prototxt", "-o", "OUT"], 2),
    "fcn-weights-do-not-fit": ("fcn", ["{d}/net.prototxt", "--weights", "{d}/other.caffemodel",
                                       "--weights-out", "{d}/fcn.caffemodel", "-o", "OUT"], 2),
    "fcn-weights-without-out": ("fcn", ["{d}/net.prototxt", "--weights", "{d}/net.caffemodel",
                                        "-o", "OUT"], 2),
}


def _argv(template, folder, out):
    return [out if a == "OUT" else a.replace("{d}", str(folder)) for a in template]


@pytest.mark.parametrize("existing", [True, False], ids=["output-exists", "no-output"])
@pytest.mark.parametrize("case", sorted(FAILURES))
def test_failed_run_leaves_the_folder_untouched(work, case, existing):
    command, template, status = FAILURES[case]
    _needs(command)
    out = work / ("out.caffemodel" if command == "init-weights" else "out.prototxt")
    if existing:
        out.write_bytes(KNOWN)
    before = snapshot(work)
    rc, _stdout, err = run_cli(command, *_argv(template, work, out))
    assert rc == status, err
    if rc == 2:
        assert err.splitlines()[-1].startswith("caffe-surgery: error: "), err
    assert snapshot(work) == before
    if existing:
        assert out.read_bytes() == KNOWN


@pytest.mark.parametrize("command,template,output", [
    ("upgrade", ["{d}/legacy.prototxt"], "{d}/legacy.prototxt"),
    ("dilate", ["{d}/net.prototxt", "-s", "4", "--head", "cut"], "{d}/net.prototxt"),
    ("init-weights", ["{d}/net.prototxt"], "{d}/net.prototxt"),
    ("fcn", ["{d}/net.prototxt"], "{d}/net.prototxt"),
    ("fcn", ["{d}/net.prototxt", "--weights", "{d}/net.caffemodel", "--weights-out"],
     "{d}/net.caffemodel"),
])
def test_output_naming_an_input_is_refused(work, command, template, output):
    _needs(command)
    before = snapshot(work)
    target = output.replace("{d}", str(work))
    flag = [] if template[-1] == "--weights-out" else ["-o"]
    extra = ["-o", work / "fcn.prototxt"] if flag == [] else []
    rc, _out, err = run_cli(command, *_argv(template, work, None), *flag, target, *extra)
    assert rc == 2 and "in-place" in err, err
    assert snapshot(work) == before


def test_refusal_sees_through_another_spelling_of_the_path(work):
    before = snapshot(work)
    alias = work / "." / ".." / work.name / "legacy.prototxt"
    rc, _out, err = run_cli("upgrade", work / "legacy.prototxt", "-o", alias)
    assert rc == 2 and "in-place" in err, err
    assert snapshot(work) == before


def _inputs(folder, names):
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


@pytest.mark.parametrize("command,template,inputs,outputs", [
    ("upgrade", ["{d}/legacy.prototxt", "-o", "{d}/up.prototxt"], ["legacy.prototxt"],
     ["up.prototxt"]),
    ("dilate", ["{d}/net.prototxt", "-s", "4", "--head", "cut", "--weights", "{d}/net.caffemodel",
                "-o", "{d}/os4.prototxt"], ["net.prototxt", "net.caffemodel"], ["os4.prototxt"]),
    ("init-weights", ["{d}/net.prototxt", "-o", "{d}/new.caffemodel"], ["net.prototxt"],
     ["new.caffemodel"]),
    ("fcn", ["{d}/net.prototxt", "--weights", "{d}/net.caffemodel", "--weights-out",
             "{d}/fcn.caffemodel", "-o", "{d}/fcn.prototxt"], ["net.prototxt", "net.caffemodel"],
     ["fcn.prototxt", "fcn.caffemodel"]),
])
def test_success_never_touches_inputs_and_leaves_no_temp_files(work, command, template, inputs,
                                                               outputs):
    _needs(command)
    before = _inputs(work, inputs)
    others = set(snapshot(work))
    rc, _out, err = run_cli(command, *_argv(template, work, None))
    assert rc == 0, err
    assert _inputs(work, inputs) == before
    assert set(snapshot(work)) == others | set(outputs)  # exactly the outputs are new


def test_in_place_replaces_the_input_atomically(work):
    path = work / "legacy.prototxt"
    rc, _out, err = run_cli("upgrade", path, "-o", path, "--in-place")
    assert rc == 0, err
    assert "layers {" not in path.read_text() and 'type: "Convolution"' in path.read_text()
    assert not [p for p in work.iterdir() if TEMP_MARK in p.name]


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))


def test_init_weights_on_a_net_too_big_for_memory_is_a_clean_error(tmp_path):
    net = tmp_path / "huge.prototxt"
    net.write_text('layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 '
                   'dim: 3 dim: 8 dim: 8 } } }\nlayer { name: "c" type: "Convolution" bottom: "d" '
                   'top: "c" convolution_param { num_output: 100000000 kernel_size: 3 } }\n')
    out = tmp_path / "huge.caffemodel"
    out.write_bytes(KNOWN)
    proc = subprocess.run([sys.executable, "-m", "surgery", "init-weights", str(net), "-o", str(out)],
                          capture_output=True, text=True, timeout=120, preexec_fn=_limited, cwd=ROOT)
    assert out.read_bytes() == KNOWN
    assert not [p for p in tmp_path.iterdir() if TEMP_MARK in p.name]
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr[-500:]
