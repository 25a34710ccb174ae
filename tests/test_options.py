"""Every option of every command, given bad values: one line on stderr, exit 2, nothing written.

The option list comes from the parsers themselves (surgery.cli.build_parser), so a new
option without an entry in BAD fails `test_every_option_has_bad_values`.
"""

import argparse

import pytest

from surgery.cli import build_parser, main

NET = """\
name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "fc6" type: "InnerProduct" bottom: "conv2" top: "fc6"
        inner_product_param { num_output: 6 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7"
        inner_product_param { num_output: 2 } }
"""

# Placeholders, filled in per test: N net, M weights, O/W outputs, D a directory,
# X a missing file, E an empty file, T a text file passed as weights.
BASE = {
    "inspect": [("net", ["N"])],
    "dilate": [("nets", ["N"]), ("output_stride", ["-s", "2"]), ("head", ["--head", "cut"]),
               ("output", ["-o", "O"])],
    "upgrade": [("input", ["N"]), ("output", ["-o", "O"])],
    "weights": [("model", ["M"])],
    "check": [("net", ["N"]), ("model", ["M"])],
    "init-weights": [("net", ["N"]), ("output", ["-o", "W"])],
    "verify": [("original", ["N"]), ("converted", ["N"]), ("weights", ["--weights", "M"])],
    "fcn": [("net", ["N"]), ("output", ["-o", "O"])],
    "report": [("net", ["N"]), ("output", ["-o", "O"])],
    "segment": [("net", ["N"]), ("head", ["--head", "aspp"]), ("classes", ["--classes", "3"]),
                ("output_stride", ["-s", "2"]), ("crop", ["--crop", "12"]),
                ("output", ["-o", "O"])],
    "fold": [("net", ["N"]), ("weights", ["--weights", "M"]), ("output", ["-o", "O"]),
             ("weights_out", ["--weights-out", "W"])],
    "bvlc": [("net", ["N"]), ("output", ["-o", "O"])],
}

FLAG = [["=yes"]]          # a value given to an option that takes none
NET_FILES = [["X"], ["D"], ["E"], ["M"]]
MODEL_FILES = [["X"], ["D"], ["E"], ["T"]]
SHAPES = [["--input-shape", v] for v in ("data", "data=", "=1,3,8,8", "data=1,,3,8",
                                         "data=0,3,8,8", "data=1,3,x,8", "nosuch=1,3,8,8",
                                         "data=1,3,8")]
PHASE = [["--phase", "VAL"], ["--phase", ""]]
OUTPUTS = [["-o", v] for v in ("", "D", "nodir/out", "N")]
SEEDS = [["--seed", v] for v in ("-5", "a", "1.5", "")]

BAD = {
    ("inspect", "net"): NET_FILES, ("inspect", "input_shape"): SHAPES,
    ("inspect", "phase"): PHASE, ("inspect", "json"): FLAG, ("inspect", "strict"): FLAG,

    ("dilate", "nets"): NET_FILES + [["N", "N"], ["N", "X"], ["N", "D"]],
    ("dilate", "output_stride"): [["-s", v] for v in ("a", "0", "-2", "1.5", "")],
    ("dilate", "head"): [["--head", "chop"]], ("dilate", "pooling"): [["--pooling", "x"]],
    ("dilate", "convention"): [["--convention", "x"]],
    ("dilate", "dilation"): [["--dilation", v] for v in ("x", "", "ROUND")],
    ("dilate", "weights_out"): [["--weights", "M", "--weights-out", v]
                                for v in ("", "D", "nodir/out.caffemodel", "M", "N")]
                               + [["--weights-out", "W.caffemodel"]],
    ("dilate", "multi_grid"): [["--multi-grid", v] for v in ("a", "1,,2", "", "1.5,2", "0,1",
                                                             "1,-2", ",")],
    ("dilate", "cut_after"): [["--cut-after", v] for v in ("", "nosuch")],
    ("dilate", "input_shape"): SHAPES,
    ("dilate", "weights"): [["--weights", v] for v in ("X", "D", "T")],
    ("dilate", "dry_run"): FLAG, ("dilate", "json"): FLAG, ("dilate", "output"): OUTPUTS,
    ("dilate", "in_place"): FLAG, ("dilate", "canonical"): FLAG,
    ("dilate", "diff"): [["--diff", v] for v in ("", "D", "nodir/out", "N", "O")]
    + [["--diff", "-", "--json"]],
    ("dilate", "strict"): FLAG, ("dilate", "quiet"): FLAG,

    ("upgrade", "input"): NET_FILES, ("upgrade", "output"): OUTPUTS,
    ("upgrade", "in_place"): FLAG, ("upgrade", "strict"): FLAG,

    ("weights", "model"): MODEL_FILES, ("weights", "json"): FLAG,

    ("check", "net"): NET_FILES, ("check", "model"): MODEL_FILES,
    ("check", "input_shape"): SHAPES, ("check", "phase"): PHASE,
    ("check", "problems"): FLAG, ("check", "json"): FLAG, ("check", "strict"): FLAG,

    ("init-weights", "net"): NET_FILES,
    ("init-weights", "output"): [["-o", v] for v in ("", "D", "nodir/out", "N")],
    ("init-weights", "seed"): SEEDS, ("init-weights", "input_shape"): SHAPES,
    ("init-weights", "phase"): PHASE, ("init-weights", "json"): FLAG,
    ("init-weights", "strict"): FLAG, ("init-weights", "quiet"): FLAG,

    ("verify", "original"): NET_FILES, ("verify", "converted"): NET_FILES,
    ("verify", "weights"): [["--weights", v] for v in ("X", "D", "E", "T")],
    ("verify", "input_shape"): SHAPES,
    ("verify", "blob"): [["--blob", v] for v in ("", "nosuch")],
    ("verify", "engine"): [["--engine", "torch"]],
    ("verify", "caffe_python"): [["--caffe-python", v] for v in ("", "X", "D", "T")],
    ("verify", "tol"): [["--tol", v] for v in ("a", "-1", "nan", "inf", "")],
    ("verify", "weights_converted"): [["--weights-converted", v] for v in ("X", "D", "E", "T")],
    ("verify", "seed"): SEEDS, ("verify", "strict"): FLAG, ("verify", "json"): FLAG,
    ("verify", "define"): [["--define", v] for v in ("NOEQUALS", "=1", "${A}=1", "A B=1",
                                                     "nosuch=1")],
    ("verify", "quiet"): FLAG,

    ("fcn", "net"): NET_FILES,
    ("fcn", "weights"): [["--weights", v, "--weights-out", "W"] for v in ("X", "D", "T")],
    ("fcn", "weights_out"): [["--weights", "M", "--weights-out", v]
                             for v in ("", "D", "nodir/w", "M")],
    ("fcn", "pad"): [["--pad", "full"]],
    ("fcn", "rename"): [["--rename", v] for v in ("{nam}", "x", "{", "{0}")],
    ("fcn", "decimate"): [["--decimate", v] for v in ("fc6", "fc6=axb", "fc6=0x0:1", "=3x3:2",
                                                      "nosuch=3x3:2")],
    ("fcn", "input_shape"): SHAPES, ("fcn", "dry_run"): FLAG, ("fcn", "json"): FLAG,
    ("fcn", "output"): OUTPUTS, ("fcn", "in_place"): FLAG, ("fcn", "canonical"): FLAG,
    ("fcn", "diff"): [["--diff", v] for v in ("", "D", "nodir/out", "N", "O")],
    ("fcn", "strict"): FLAG, ("fcn", "quiet"): FLAG,

    ("report", "net"): NET_FILES, ("report", "converted"): NET_FILES,
    ("report", "output"): [["-o", v] for v in ("", "D", "nodir/out", "N")],
    ("report", "input_shape"): SHAPES, ("report", "phase"): PHASE,
    ("report", "verify"): [["N", "--verify", v] for v in ("X", "D", "E", "N")],
    ("report", "strict"): FLAG, ("report", "quiet"): FLAG,

    ("segment", "net"): NET_FILES, ("segment", "head"): [["--head", "unet"], ["--head", ""]],
    ("segment", "classes"): [["--classes", v] for v in ("0", "-1", "a", "1.5", "")],
    ("segment", "output_stride"): [["-s", v] for v in ("a", "0", "-2", "1.5", "", "3")],
    ("segment", "crop"): [["--crop", v] for v in ("0", "-1", "a", "3,4,5", "12,", "", ",")],
    ("segment", "rates"): [["--rates", v] for v in ("a", "1,,2", "", "0,1", "1.5")],
    ("segment", "bins"): [["--bins", v] for v in ("a", "1,,2", "", "1,2")],
    ("segment", "data"): [["--data", "lmdb"]],
    ("segment", "upsample"): [["--upsample", "bicubic"], ["--upsample", "deconv"]],
    ("segment", "ignore_label"): [["--ignore-label", v] for v in ("a", "1.5", "")],
    ("segment", "cut_after"): [["--cut-after", v] for v in ("", "nosuch")],
    ("segment", "weights"): [["--weights", v, "--weights-out", "W"] for v in ("X", "D", "T")]
    + [["--weights", "M"]],
    ("segment", "weights_out"): [["--weights", "M", "--weights-out", v]
                                 for v in ("", "D", "nodir/w", "M", "O")],
    ("segment", "seed"): SEEDS, ("segment", "output"): OUTPUTS,
    ("segment", "deploy"): [["--deploy", v] for v in ("", "D", "nodir/out", "N", "O")],
    ("fold", "net"): NET_FILES,
    ("fold", "weights"): [["--weights", v] for v in ("X", "D", "E", "T")],
    ("fold", "weights_out"): [["--weights-out", v] for v in ("", "D", "nodir/w", "M", "N", "O")],
    ("fold", "phase"): [["--phase", "TRAIN"], ["--phase", ""]],
    ("fold", "output"): OUTPUTS,
    ("fold", "diff"): [["--diff", v] for v in ("", "D", "nodir/out", "N", "O")]
    + [["--diff", "-", "--json"]],
    ("fold", "dry_run"): FLAG, ("fold", "json"): FLAG, ("fold", "in_place"): FLAG,
    ("fold", "canonical"): FLAG, ("fold", "strict"): FLAG, ("fold", "quiet"): FLAG,

    ("bvlc", "net"): NET_FILES, ("bvlc", "input_shape"): SHAPES,
    ("bvlc", "weights"): [["--weights", v, "--weights-out", "W"] for v in ("X", "D", "E", "T")]
    + [["--weights", "M"]],
    ("bvlc", "weights_out"): [["--weights", "M", "--weights-out", v]
                              for v in ("", "D", "nodir/w", "M", "N", "O")]
    + [["--weights-out", "W"]],
    ("bvlc", "output"): OUTPUTS,
    ("bvlc", "diff"): [["--diff", v] for v in ("", "D", "nodir/out", "N", "O")]
    + [["--diff", "-", "--json"]],
    ("bvlc", "strict"): FLAG, ("bvlc", "dry_run"): FLAG, ("bvlc", "json"): FLAG,
    ("bvlc", "in_place"): FLAG, ("bvlc", "canonical"): FLAG, ("bvlc", "quiet"): FLAG,

    ("segment", "json"): FLAG, ("segment", "strict"): FLAG, ("segment", "quiet"): FLAG,
    ("segment", "scales"): [["--scales", v] for v in ("a", "1,,0.5", "", "0,1", "-1", "1,nan",
                                                      "0.5", "1,1", "1,0.123")],
    ("segment", "train_bn"): FLAG,
    ("segment", "solver"): [["--solver", v] for v in ("", "D", "nodir/out", "N", "O")],
    ("segment", "max_iter"): [["--max-iter", v] for v in ("0", "a", "1.5", "")],
    ("segment", "iter_size"): [["--iter-size", v] for v in ("0", "a", "-1", "")],
}


def _subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _options(subparser):
    return [a for a in subparser._actions if not isinstance(a, argparse._HelpAction)]


def test_every_option_has_bad_values():
    missing = [(name, a.dest) for name, p in _subparsers().items() for a in _options(p)
               if not BAD.get((name, a.dest))]
    assert not missing, f"add bad values for {missing} to BAD"
    stale = set(BAD) - {(name, a.dest) for name, p in _subparsers().items() for a in _options(p)}
    assert not stale


def _flag_of(command, dest):
    action = next(a for a in _options(_subparsers()[command]) if a.dest == dest)
    return action.option_strings[-1] if action.option_strings else None


CASES = [(command, dest, bad) for (command, dest), values in BAD.items() for bad in values]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    net = folder / "net.prototxt"
    net.write_text(NET)
    model = folder / "net.caffemodel"
    assert main(["init-weights", str(net), "-o", str(model)]) == 0
    return NET, model.read_bytes()


def _argv(command, dest, bad, tmp_path):
    if bad is FLAG[0]:
        bad = [_flag_of(command, dest) + "=yes"]
    parts = [fragment for d, fragment in BASE[command] if d != dest]
    where = [d for d, _ in BASE[command]].index(dest) if dest in dict(BASE[command]) else None
    if where is None:
        parts.append(bad)
    else:
        parts.insert(where, bad)
    paths = {"N": tmp_path / "net.prototxt", "M": tmp_path / "net.caffemodel",
             "O": tmp_path / "out.prototxt", "W": tmp_path / "out.caffemodel",
             "D": tmp_path / "folder", "X": tmp_path / "missing.prototxt",
             "E": tmp_path / "empty", "T": tmp_path / "text.caffemodel",
             "nodir/out": tmp_path / "nodir" / "out", "nodir/w": tmp_path / "nodir" / "w"}
    return [command] + [str(paths.get(arg, arg)) for fragment in parts for arg in fragment]


@pytest.mark.parametrize("command, dest, bad", CASES,
                         ids=[f"{c}-{d}-{' '.join(b)}" for c, d, b in CASES])
def test_a_bad_value_is_one_line_and_exit_2(tmp_path, capsys, files, command, dest, bad):
    text, model = files
    (tmp_path / "net.prototxt").write_text(text)
    (tmp_path / "net.caffemodel").write_bytes(model)
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "text.caffemodel").write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = _argv(command, dest, bad, tmp_path)
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("caffe-surgery: error: "), \
        (argv, code, captured.err)
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was written"
    assert (tmp_path / "net.prototxt").read_text() == text


@pytest.mark.parametrize("command", sorted(BASE))
def test_the_base_command_lines_are_valid(tmp_path, capsys, files, command):
    """The bad values above are the only thing wrong with each command line."""
    text, model = files
    (tmp_path / "net.prototxt").write_text(text)
    (tmp_path / "net.caffemodel").write_bytes(model)
    argv = [command] + [str({"N": tmp_path / "net.prototxt", "M": tmp_path / "net.caffemodel",
                             "O": tmp_path / "out.prototxt",
                             "W": tmp_path / "out.caffemodel"}.get(a, a))
                        for _, fragment in BASE[command] for a in fragment]
    if command == "verify":
        pytest.importorskip("cv2")
    assert main(argv) == 0, capsys.readouterr().err


def test_usage_errors_are_one_line(capsys):
    for argv in ([], ["dilat"], ["dilate"], ["inspect", "a", "b"], ["--nope"]):
        assert main(argv) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("caffe-surgery: error: "), lines
