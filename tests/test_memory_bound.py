"""init-weights and fcn hold memory flat: a 400 MB layer goes through a child process whose
address space is capped far below the layer's size.

The cap is relative to what the same child needs before it does anything: the peak
virtual size of a process that imports the CLI and every module these commands use
(numpy's BLAS alone reserves more than 100 MB of address space, and that differs by
machine). A run that held one whole 400 MB blob, let alone the float64 draw of one,
cannot fit in HEADROOM above that.
"""

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from surgery.builder import NetBuilder
from surgery.io.caffemodel import read_blob, read_caffemodel
from surgery.io.prototxt import save_prototxt

ROOT = Path(__file__).resolve().parents[1]
HEADROOM = 160 << 20
# 1235 x 9 x 9 inputs to 1000 outputs: a 1000 x 100035 float32 weight, 400 MB.
CHANNELS, SIZE, OUTPUTS = 1235, 9, 1000
IMPORTS = "import surgery.cli, surgery.weights.initweights, surgery.transform.fcn, surgery.io.caffemodel"


def _peak_vm_of_imports():
    code = f"{IMPORTS}\nprint(open('/proc/self/status').read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("VmPeak:"))
    return int(line.split()[1]) * 1024


@pytest.fixture(scope="module")
def limit():
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to measure the baseline address space")
    return _peak_vm_of_imports() + HEADROOM


def _run_limited(limit, *argv):
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CPU, (300, 300))

    return subprocess.run([sys.executable, "-m", "surgery", *map(str, argv)],
                          capture_output=True, text=True, timeout=600, preexec_fn=cap, cwd=ROOT)


@pytest.fixture(scope="module")
def big(tmp_path_factory, limit):
    """A net with a 400 MB InnerProduct, and its weights made by init-weights under the cap."""
    tmp = tmp_path_factory.mktemp("big")
    b = NetBuilder("big")
    b.input("data", (1, CHANNELS, SIZE, SIZE))
    b.fc("fc", "data", num_output=OUTPUTS)
    net = tmp / "big.prototxt"
    save_prototxt(b.net, net)
    weights = tmp / "big.caffemodel"
    proc = _run_limited(limit, "init-weights", net, "-o", weights)
    assert proc.returncode == 0, proc.stderr[-800:]
    yield tmp, net, weights


def test_the_cap_is_far_below_the_layer(limit):
    layer = OUTPUTS * CHANNELS * SIZE * SIZE * 4
    assert layer > 400e6 and limit - _peak_vm_of_imports() < layer / 2


def test_init_weights_streams_a_400_mb_layer_under_the_cap(big, limit):
    _tmp, _net, weights = big
    (layer,) = read_caffemodel(str(weights)).layers
    assert [b.shape for b in layer.blobs] == [(OUTPUTS, CHANNELS * SIZE * SIZE), (OUTPUTS,)]
    sample = read_blob(str(weights), "fc", 1)
    assert sample.std() > 0


def test_fcn_copies_a_400_mb_weight_under_the_cap(big, limit):
    tmp, net, weights = big
    out = tmp / "fcn.caffemodel"
    proc = _run_limited(limit, "fcn", net, "--weights", weights, "-o", tmp / "fcn.prototxt",
                        "--weights-out", out)
    assert proc.returncode == 0, proc.stderr[-800:]
    (layer,) = read_caffemodel(str(out)).layers
    assert layer.name == "fc-conv" and layer.blobs[0].shape == (OUTPUTS, CHANNELS, SIZE, SIZE)
    src = read_caffemodel(str(weights)).layers[0].blobs[0]
    with open(weights, "rb") as a, open(out, "rb") as b:   # the data bytes are the same
        for start in range(0, src.count * 4, 64 << 20):
            n = min(64 << 20, src.count * 4 - start)
            a.seek(src.data_offset + start)
            b.seek(layer.blobs[0].data_offset + start)
            assert a.read(n) == b.read(n)


def test_fcn_decimates_a_400_mb_weight_under_the_cap(big, limit):
    tmp, net, weights = big
    out = tmp / "dec.caffemodel"
    proc = _run_limited(limit, "fcn", net, "--weights", weights, "-o", tmp / "dec.prototxt",
                        "--weights-out", out, "--decimate", f"fc=3x3:{OUTPUTS // 4}")
    assert proc.returncode == 0, proc.stderr[-800:]
    got = read_blob(str(out), "fc-conv", 0)
    assert got.shape == (OUTPUTS // 4, CHANNELS, 3, 3)
    # Spot-check output channel 5 (source row 20) against the source, read here by rows.
    row = read_caffemodel(str(weights)).layers[0].blobs[0]
    with open(weights, "rb") as f:
        f.seek(row.data_offset + 20 * CHANNELS * SIZE * SIZE * 4)
        source = np.fromfile(f, "<f4", CHANNELS * SIZE * SIZE).reshape(CHANNELS, SIZE, SIZE)
    np.testing.assert_array_equal(got[5], source[:, ::4, ::4])
