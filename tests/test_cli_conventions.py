"""What every command owes its user: --version, help on every argument, stdout that holds
one thing, warnings on stderr, in-place rewrites, and no silent empty answers."""

import argparse
import json

import pytest

import surgery
from surgery.cli import build_parser, main
from surgery.io import caffemodel as cm
from conftest import write_file

NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
"""


@pytest.fixture
def net(tmp_path):
    return write_file(tmp_path, "net.prototxt", NET)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"caffe-surgery {surgery.__version__}"


def test_the_package_version_is_defined_once():
    text = (surgery.__file__.rsplit("/", 2)[0] + "/pyproject.toml")
    with open(text) as handle:
        pyproject = handle.read()
    assert 'dynamic = ["version"]' in pyproject and "surgery.__version__" in pyproject


def test_every_argument_of_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [(name, a.dest) for name, p in sub.choices.items() for a in p._actions
               if not (a.help or "").strip()]
    assert not missing
    assert all((sub.choices[n].description or "").strip() for n in sub.choices)


def test_diff_goes_to_its_own_file(net, tmp_path, capsys):
    out, diff = tmp_path / "out.prototxt", tmp_path / "change.diff"
    assert main(["dilate", str(net), "-s", "1", "-o", str(out), "--diff", str(diff)]) == 0
    stdout = capsys.readouterr().out
    assert "output stride 2 -> 1" in stdout and "+++" not in stdout
    text = diff.read_text()
    assert text.startswith(f"--- {net}\n+++ {out}\n") and "+" in text and "dilation: 2" in text


def test_diff_on_stdout_is_the_only_thing_there(net, tmp_path, capsys):
    assert main(["dilate", str(net), "-s", "1", "--dry-run", "--diff", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"--- {net}\n") and "output stride" not in captured.out
    assert "output stride 2 -> 1" in captured.err
    assert main(["dilate", str(net), "-s", "1", "--dry-run", "--diff", "-", "--json"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--diff" in err[0] and "--json" in err[0]


def test_dilate_in_place_without_output_rewrites_the_input(net, capsys):
    assert main(["dilate", str(net), "-s", "1"]) == 2          # no -o: refused, as before
    capsys.readouterr()
    assert net.read_text() == NET
    assert main(["dilate", str(net), "-s", "1", "--in-place"]) == 0
    assert "dilation: 2" in net.read_text()
    assert sorted(p.name for p in net.parent.iterdir()) == ["net.prototxt"]


def test_check_problems_with_no_problems_says_so(net, tmp_path, capsys):
    model = tmp_path / "w.caffemodel"
    assert main(["init-weights", str(net), "-o", str(model)]) == 0
    capsys.readouterr()
    assert main(["check", str(net), str(model), "--problems"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "no problems: every layer with params loads"
    assert "layer  status" not in out


def test_a_zero_byte_caffemodel_is_an_error(tmp_path, net, capsys):
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    for argv in (["weights", str(empty)], ["check", str(net), str(empty)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and str(empty) in err[0] and "empty" in err[0], err
    no_layers = tmp_path / "no_layers.caffemodel"      # an empty net is not an empty file
    cm.write_caffemodel(no_layers, [], name="tiny")
    assert main(["weights", str(no_layers)]) == 0


def test_inspect_warnings_go_to_stderr(net, tmp_path, capsys):
    odd = tmp_path / "odd.prototxt"
    odd.write_text(NET.replace('"conv2" type: "Convolution"', '"conv2" type: "Convolutoin"'))
    assert main(["inspect", str(odd)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.out
    assert any(line.startswith("caffe-surgery: warning: layer 'conv2'")
               for line in captured.err.splitlines()), captured.err
    assert main(["inspect", str(odd), "--json"]) == 0      # JSON keeps them as data
    assert json.loads(capsys.readouterr().out)["warnings"]
