"""`upgrade` on a solver file: Caffe's solver_type -> type upgrade, as an edit of the file."""

import re

import pytest

from surgery import caffe_pb2
from surgery.cli import main
from surgery.errors import SurgeryError
from surgery.io.prototxt import parse_prototxt
from surgery.io.solverfile import upgrade_solver

from conftest import CORPUS

# Caffe's SolverTypeUpgradeTest: each old enum and the string Caffe gives it.
CAFFE_TYPE_PAIRS = [("SGD", "SGD"), ("ADAGRAD", "AdaGrad"), ("NESTEROV", "Nesterov"),
                    ("RMSPROP", "RMSProp"), ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")]


def _lenet_solver():
    """The MNIST solver of Caffe's test case."""
    return caffe_pb2.SolverParameter(
        net="examples/mnist/lenet_train_test.prototxt",
        weights=["examples/mnist/lenet_train_test1.caffemodel",
                 "examples/mnist/lenet_train_test2.caffemodel"],
        test_iter=[100], test_interval=500,
        base_lr=0.01, momentum=0.0, weight_decay=0.0005, lr_policy="inv", gamma=0.0001,
        power=0.75, display=100, max_iter=10000, snapshot=5000,
        snapshot_prefix="examples/mnist/lenet_rmsprop", solver_mode=caffe_pb2.SolverParameter.GPU)


@pytest.mark.parametrize("old, new", CAFFE_TYPE_PAIRS)
def test_caffe_solver_type_cases(old, new):
    given = _lenet_solver()
    given.solver_type = caffe_pb2.SolverParameter.SolverType.Value(old)
    expected = _lenet_solver()
    expected.type = new
    upgraded, notes = upgrade_solver(given)
    assert upgraded == expected
    assert notes and new in notes[0]
    assert given.HasField("solver_type")          # the input is not changed


def test_current_solver_is_left_alone():
    given = _lenet_solver()
    given.type = "Adam"
    upgraded, notes = upgrade_solver(given)
    assert upgraded == given and not notes


def test_both_fields_are_refused_as_in_caffe():
    given = _lenet_solver()
    given.solver_type = caffe_pb2.SolverParameter.ADAM
    given.type = "Adam"
    with pytest.raises(SurgeryError, match="both"):
        upgrade_solver(given)


SOLVER_TEXT = """# LeNet solver
net: "lenet_train_test.prototxt"
base_lr: 0.01   # learning rate
solver_type: NESTEROV
snapshot_prefix: "${PREFIX}/lenet"
max_iter: 10000
"""


def test_cli_edits_only_the_solver_type_line(tmp_path, capsys):
    src = tmp_path / "solver.prototxt"
    src.write_text(SOLVER_TEXT)
    out = tmp_path / "out.prototxt"
    assert main(["upgrade", str(src), "-o", str(out)]) == 0
    assert out.read_text() == SOLVER_TEXT.replace("solver_type: NESTEROV", 'type: "Nesterov"')
    assert 'type: "Nesterov"' in capsys.readouterr().err
    solver = parse_prototxt(out.read_text(), message_type=caffe_pb2.SolverParameter)
    assert solver.type == "Nesterov" and not solver.HasField("solver_type")


def test_cli_both_fields_is_one_line_error(tmp_path, capsys):
    src = tmp_path / "solver.prototxt"
    src.write_text(SOLVER_TEXT + 'type: "SGD"\n')
    out = tmp_path / "out.prototxt"
    assert main(["upgrade", str(src), "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{src}:4:1:" in lines[0] and "both" in lines[0]
    assert not out.exists()


def test_cli_placeholder_for_the_type_is_refused(tmp_path, capsys):
    src = tmp_path / "solver.prototxt"
    src.write_text('net: "n.prototxt"\nsolver_type: ${TYPE}\n')
    assert main(["upgrade", str(src)]) == 2
    assert re.search(re.escape(f"{src}:2:1:") + ".*placeholder", capsys.readouterr().err)


def test_cli_solver_typo_is_an_error(tmp_path, capsys):
    src = tmp_path / "solver.prototxt"
    src.write_text('net: "n.prototxt"\nsolver_typ: SGD\n')
    assert main(["upgrade", str(src)]) == 2
    assert "did you mean `solver_type`" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*/*solver*.prototxt")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_solvers_come_back_byte_for_byte(path, tmp_path, capsys):
    """No corpus solver uses solver_type, so `upgrade` writes each back unchanged,
    DeepLab's templates and the SSD fork's fields included."""
    out = tmp_path / "out.prototxt"
    assert main(["upgrade", str(path), "-o", str(out)]) == 0
    assert out.read_bytes() == path.read_bytes()
    assert "nothing to upgrade" in capsys.readouterr().err
