"""Without --phase, inspect/check/init-weights use the phase in which the net is complete.

A train file whose data layer exists only in TRAIN cannot be built in TEST; a train_val
file builds in both, and then both are analysed (a TRAIN-only layer needs weights too).
"""

import json

import pytest

from surgery.cli import main
from surgery.io import caffemodel as cm

from _corpus import CORPUS

BODY = """\
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
        inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""

TRAIN_ONLY = """\
name: "train"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } shape { dim: 2 } }
        include { phase: TRAIN } }
""" + BODY

TRAIN_VAL = """\
name: "train_val"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } shape { dim: 2 } }
        include { phase: TRAIN } }
layer { name: "data_val" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 1 dim: 3 dim: 9 dim: 9 } shape { dim: 1 } }
        include { phase: TEST } }
""" + BODY + """\
layer { name: "aux" type: "InnerProduct" bottom: "conv1" top: "aux"
        inner_product_param { num_output: 3 } include { phase: TRAIN } }
layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc"
        include { phase: TEST } }
"""


def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def notes(err):
    return [line for line in err.splitlines() if line.startswith("caffe-surgery: note: ")]


def test_inspect_uses_the_phase_in_which_a_train_net_is_complete(tmp_path, capsys):
    src = write(tmp_path, TRAIN_ONLY)
    assert main(["inspect", str(src)]) == 0
    captured = capsys.readouterr()
    [note] = notes(captured.err)
    assert "TRAIN" in note and "TEST" in note
    assert "--phase" not in note        # no advice to take the phase already taken
    assert "2x4x4x4" in captured.out          # conv1 on the TRAIN batch of 2
    assert main(["inspect", str(src), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["phase"] == "TRAIN"
    assert main(["inspect", str(src), "--phase", "TEST"]) == 2    # asked for: still refused
    assert "--phase TRAIN" in capsys.readouterr().err


def test_check_and_init_weights_use_it_too(tmp_path, capsys):
    src = write(tmp_path, TRAIN_ONLY)
    model = tmp_path / "w.caffemodel"
    assert main(["init-weights", str(src), "-o", str(model)]) == 0
    assert notes(capsys.readouterr().err)
    assert [l.name for l in cm.read_caffemodel(model).layers] == ["conv1", "fc"]
    assert main(["check", str(src), str(model), "--json"]) == 0
    captured = capsys.readouterr()
    assert notes(captured.err)
    assert json.loads(captured.out)["counts"]["ok"] == 2


def test_a_train_val_net_is_analysed_in_both_phases(tmp_path, capsys):
    src = write(tmp_path, TRAIN_VAL)
    assert main(["inspect", str(src)]) == 0
    captured = capsys.readouterr()
    assert "phase TEST" in captured.out and "phase TRAIN" in captured.out
    assert "aux" in captured.out and "acc" in captured.out
    assert main(["inspect", str(src), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["phase"] == "TEST" and "aux" in data["other_phases"]["TRAIN"]["blobs"]

    model = tmp_path / "w.caffemodel"
    assert main(["init-weights", str(src), "-o", str(model)]) == 0
    capsys.readouterr()
    assert [l.name for l in cm.read_caffemodel(model).layers] == ["conv1", "fc", "aux"]
    assert main(["check", str(src), str(model)]) == 0
    capsys.readouterr()
    partial = tmp_path / "p.caffemodel"     # the TRAIN-only layer must get weights as well
    cm.transform(model, partial, drop=["aux"])
    assert main(["check", str(src), str(partial), "--json"]) == 1
    rows = {r["name"]: r["status"] for r in json.loads(capsys.readouterr().out)["layers"]}
    assert rows == {"conv1": "ok", "fc": "ok", "aux": "not_initialised"}
    assert main(["check", str(src), str(partial), "--phase", "TEST"]) == 0


def test_a_deploy_net_gets_no_note(tmp_path, capsys):
    deploy = TRAIN_ONLY.replace("include { phase: TRAIN } ", "")
    src = write(tmp_path, deploy)
    assert main(["inspect", str(src)]) == 0
    assert not notes(capsys.readouterr().err)


def test_deeplab_v2_train_net_inspects_without_phase(capsys):
    path = CORPUS / "deeplab_v2" / "vgg16_train.prototxt"
    if not path.is_file():
        pytest.skip("shared corpus not available")
    assert main(["inspect", str(path)]) == 0
    assert any("TRAIN" in n for n in notes(capsys.readouterr().err))
