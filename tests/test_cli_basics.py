"""The CLI frame through `upgrade`: exit codes, one-line errors, no stray outputs."""

import re

import pytest

from surgery.cli import main
from surgery.io.prototxt import parse_prototxt
from surgery.io.netfile import load_prototxt

from conftest import CORPUS, error_line, write_file
VGG = CORPUS / "vgg" / "VGG_ILSVRC_16_layers_deploy.prototxt"

V1_NET = """name: "tiny"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 16
input_dim: 16
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  convolution_param { num_output: 4 kernel_size: 3 hole: 2 }
}
"""


def test_help_lists_upgrade(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "upgrade" in capsys.readouterr().out


def test_upgrade_writes_file_and_notes(tmp_path, capsys):
    src = write_file(tmp_path, "in.prototxt", V1_NET)
    out = tmp_path / "out.prototxt"
    assert main(["upgrade", str(src), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "V1" in captured.err and "Input layer" in captured.err and "dilation 2" in captured.err
    net = load_prototxt(out, upgrade=False)
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("input", "Input"), ("conv1", "Convolution")]
    assert [p.lr_mult for p in net.layer[1].param] == [1, 2]
    assert list(net.layer[1].convolution_param.dilation) == [2]
    assert src.read_text(encoding="utf-8") == V1_NET


def test_upgrade_without_output_prints_to_stdout(tmp_path, capsys):
    src = write_file(tmp_path, "in.prototxt", V1_NET)
    assert main(["upgrade", str(src)]) == 0
    out = capsys.readouterr().out
    assert parse_prototxt(out).layer[0].type == "Input"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.prototxt"]


def test_upgrade_current_net_says_nothing_to_do(tmp_path, capsys):
    src = write_file(tmp_path, "in.prototxt", 'layer { name: "r" type: "ReLU" }\n')
    assert main(["upgrade", str(src), "-o", str(tmp_path / "o.prototxt")]) == 0
    assert "nothing to upgrade" in capsys.readouterr().err


@pytest.mark.skipif(not VGG.is_file(), reason="shared corpus not available")
def test_upgrade_corpus_vgg(tmp_path, capsys):
    out = tmp_path / "vgg.prototxt"
    assert main(["upgrade", str(VGG), "-o", str(out)]) == 0
    net = load_prototxt(out, upgrade=False)
    assert len(net.layer) == 40 and net.layer[0].type == "Input"


def test_typo_error_is_one_line_with_position_and_hint(tmp_path, capsys):
    src = write_file(tmp_path, "bad.prototxt", 'layer {\n  name: "c"\n  type: "Convolution"\n'
                     '  convolution_param {\n    kernel_size: 3\n    dilaton: 2\n  }\n}\n')
    out = tmp_path / "out.prototxt"
    assert main(["upgrade", str(src), "-o", str(out)]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"{src}:6:5:" in line
    assert "did you mean `dilation`?" in line
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.prototxt"]


def test_placeholder_survives_an_upgrade_with_nothing_to_do(tmp_path, capsys):
    text = 'layer {\n  name: "fc8"\n  convolution_param { num_output: ${NUM_LABELS} }\n}\n'
    src = write_file(tmp_path, "t.prototxt", text)
    assert main(["upgrade", str(src), "-o", str(tmp_path / "o.prototxt")]) == 0
    assert (tmp_path / "o.prototxt").read_text(encoding="utf-8") == text


def test_placeholder_that_an_upgrade_would_lose_is_an_error(tmp_path, capsys):
    src = write_file(tmp_path, "t.prototxt", 'layers {\n  name: "fc8"\n  type: CONVOLUTION\n'
                     '  convolution_param { num_output: ${NUM_LABELS} kernel_size: 1 }\n}\n')
    assert main(["upgrade", str(src), "-o", str(tmp_path / "o.prototxt")]) == 2
    line = error_line(capsys.readouterr().err)
    assert re.search(re.escape(str(src)) + r":4:\d+: template placeholder \$\{NUM_LABELS\}", line)
    assert not (tmp_path / "o.prototxt").exists()


def test_refuses_output_equal_to_input(tmp_path, capsys):
    src = write_file(tmp_path, "net.prototxt", V1_NET)
    assert main(["upgrade", str(src), "-o", str(src)]) == 2
    line = error_line(capsys.readouterr().err)
    assert "--in-place" in line
    assert src.read_text(encoding="utf-8") == V1_NET


def test_in_place(tmp_path, capsys):
    src = write_file(tmp_path, "net.prototxt", V1_NET)
    assert main(["upgrade", str(src), "--in-place"]) == 0
    assert load_prototxt(src, upgrade=False).layer[0].type == "Input"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.prototxt"]


def test_mixed_layer_and_layers(tmp_path, capsys):
    src = write_file(tmp_path, "mix.prototxt",
                     'layer {\n  name: "a"\n  type: "ReLU"\n}\nlayers {\n  name: "b"\n  type: RELU\n}\n')
    assert main(["upgrade", str(src), "-o", str(tmp_path / "o.prototxt")]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"{src}:5:1:" in line and "mixes `layer`" in line
    assert not (tmp_path / "o.prototxt").exists()


@pytest.mark.parametrize("name, content, expect", [
    ("missing.prototxt", None, "no such file"),
    ("empty.prototxt", "", "empty"),
    ("binary.prototxt", b"\x08\x96\x01\xff\xfe", "not UTF-8"),
])
def test_unreadable_inputs(tmp_path, capsys, name, content, expect):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert main(["upgrade", str(path), "-o", str(tmp_path / "o.prototxt")]) == 2
    line = error_line(capsys.readouterr().err)
    assert str(path) in line and expect in line


def test_directory_input(tmp_path, capsys):
    assert main(["upgrade", str(tmp_path), "-o", str(tmp_path / "o.prototxt")]) == 2
    assert "directory" in error_line(capsys.readouterr().err)


def test_a_solver_file_is_not_taken_for_an_empty_net(tmp_path, capsys):
    """Commands that need a net refuse a solver; `upgrade` upgrades it as a solver
    (tests/test_upgrade_solver.py)."""
    src = write_file(tmp_path, "solver.prototxt", 'net: "train.prototxt"\nbase_lr: 0.01\n')
    for command in (["inspect", str(src)],
                    ["dilate", str(src), "-s", "8", "-o", str(tmp_path / "o")]):
        assert main(command) == 2
        line = error_line(capsys.readouterr().err)
        assert f"{src}:1:1:" in line and "solver" in line
    assert not (tmp_path / "o").exists()


# The console script (`surgery.cli.run`) ends the process with os._exit once `main`
# returns: what it printed must still all arrive, with main's status.

def _console(*argv, stdout=None):
    import subprocess
    import sys

    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as usual
    return subprocess.run([sys.executable, "-m", "surgery", *map(str, argv)],
                          stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=120, env=env)


def test_console_script_prints_all_main_prints(tmp_path, capsys):
    src = write_file(tmp_path, "in.prototxt", V1_NET)
    assert main(["upgrade", str(src)]) == 0
    expected = capsys.readouterr()
    proc = _console("upgrade", src)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected.out, expected.err)


def test_console_script_writes_its_outputs_and_status(tmp_path):
    src = write_file(tmp_path, "in.prototxt", V1_NET)
    out = tmp_path / "out.prototxt"
    proc = _console("upgrade", src, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert parse_prototxt(out.read_text()) == load_prototxt(str(src))
    proc = _console("upgrade", tmp_path / "missing.prototxt")
    assert proc.returncode == 2
    error_line(proc.stderr)
    proc = _console("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("caffe-surgery ")


@pytest.mark.skipif(not __import__("os").path.exists("/dev/full"), reason="no /dev/full")
def test_console_script_standard_output_on_a_full_device(tmp_path):
    src = write_file(tmp_path, "in.prototxt", V1_NET)
    with open("/dev/full", "w") as full:
        proc = _console("upgrade", src, stdout=full)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == \
        "caffe-surgery: error: cannot write standard output: no space left on device"


def test_a_closed_standard_output_is_one_line_and_nothing_is_written(tmp_path):
    """Started with stdout closed (`>&-`): refused in one line on stderr, no output file;
    with stderr closed (`2>&-`) the run goes on and its status still tells."""
    import subprocess
    import sys

    src = write_file(tmp_path, "in.prototxt", V1_NET)
    out = tmp_path / "out.prototxt"
    argv = [sys.executable, "-m", "surgery", "upgrade", str(src), "-o", str(out)]
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: __import__("os").close(1))
    assert proc.returncode == 2 and not out.exists()
    assert error_line(proc.stderr) == ("caffe-surgery: error: standard output is closed; "
                                       "nothing was done (redirect it to a file or to "
                                       "/dev/null instead)")
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          preexec_fn=lambda: __import__("os").close(2))
    assert proc.returncode == 0 and out.exists()
    proc = subprocess.run(argv[:4] + [str(tmp_path / "missing.prototxt")],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          preexec_fn=lambda: __import__("os").close(2))
    assert proc.returncode == 2
