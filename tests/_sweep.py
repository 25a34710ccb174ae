"""The command sweep behind tests/test_sweep.py: what each command is given, and how a
run is judged. Kept apart from the test items so that worker processes can import it.

A run is `surgery.cli.main(argv)` called in-process with stdout and stderr captured.
It is clean when it ends in exit 0, 1 or 2 with no exception escaping `main` and no
traceback printed; in `--json` mode, a run that ends in 0 or 1 prints exactly one
strict JSON document (no NaN or Infinity) on stdout; a run that ends in 2 prints
nothing on stdout and exactly one line, the error, on stderr.
"""

import contextlib
import functools
import hashlib
import io
import json
import re
import traceback
from pathlib import Path
from typing import NamedTuple

import numpy as np

from surgery.cli import COMMANDS, build_parser, main

from conftest import CORPUS, corpus_manifest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

SMALL_PARAMS = 5_000_000      # nets this small also get real weights (init-weights) ...
SMALL_FLOPS = 2_000_000_000   # ... and so a passing check and a forward run in verify
COVER = ("--head", "cut", "--pooling", "cover")


def command_names():
    return [name.replace("_", "-") for name in COMMANDS]


# ---- the files ----------------------------------------------------------------------------

def source_files():
    """[(label, path, kind)]: the corpus (MANIFEST.tsv, when present), then models/."""
    files = [(f"corpus/{r['local_path']}", CORPUS / r["local_path"], r["kind"])
             for r in corpus_manifest()]
    files += [(f"models/{p.relative_to(MODELS).as_posix()}", p, "deploy")
              for p in sorted(MODELS.glob("*/*.prototxt"))]
    return files


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- one run ------------------------------------------------------------------------------

def invoke(argv):
    """(exit status, stdout, stderr, traceback or None) of main(argv), run in-process."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    crash = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:     # argparse refusing a recipe's options
            code = exc.code
        except BaseException:         # noqa: BLE001 - anything else is what the sweep is for
            code, crash = None, traceback.format_exc()
    text = lambda s: s.buffer.getvalue().decode("utf-8", "replace")
    return code, text(out), text(err), crash


def _reject(constant):
    raise ValueError(f"{constant} is not JSON")


def problems(code, out, err, crash, *, json_mode):
    """What is wrong with a finished run; empty when it is clean."""
    if crash is not None:
        return [f"exception escaped main:\n{crash}"]
    found = []
    if code not in (0, 1, 2):
        found.append(f"exit status {code!r}")
    if "Traceback (most recent call last)" in err + out:
        found.append("a traceback was printed")
    if code == 2:
        lines = err.splitlines()
        if len(lines) != 1 or not lines[0].startswith("caffe-surgery: error: "):
            found.append(f"exit 2 wants one error line on stderr, got {len(lines)}:\n{err[-2000:]}")
        if out:
            found.append(f"exit 2 with output on stdout:\n{out[:300]}")
    elif json_mode and code in (0, 1):
        try:
            json.loads(out, parse_constant=_reject)
        except ValueError as exc:
            found.append(f"stdout is not one JSON document ({exc}):\n{out[:300]}")
    return found


class Log:
    """The runs of one (file, command): each command line with what was wrong with it."""

    def __init__(self):
        self.runs = []        # (command line, [problem, ...])

    def run(self, argv, *, json_mode=False):
        code, out, err, crash = invoke(argv)
        self.runs.append((" ".join(str(a) for a in argv),
                          problems(code, out, err, crash, json_mode=json_mode)))
        return code


# ---- what the recipes hand the commands ---------------------------------------------------

@functools.lru_cache(maxsize=None)
def options(command):
    """The option strings of a subcommand, read from its own parser."""
    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if a.dest == "command")
    return frozenset(s for a in sub.choices[command]._actions for s in a.option_strings)


def _loaded(path):
    from surgery.errors import SurgeryError
    from surgery.io.netfile import load_net

    try:
        return load_net(path)
    except SurgeryError:
        return None


def phases(path):
    """The phases the file describes (surgery.analysis.graph.described_phases); TEST alone when it
    does not load, as every run must then end in exit 2 whatever the phase."""
    from surgery.analysis.graph import described_phases

    loaded = _loaded(path)
    return tuple(described_phases(loaded.net)) if loaded is not None else ("TEST",)


def is_small(path):
    from surgery.analysis.analyse import analyse
    from surgery.errors import SurgeryError

    loaded = _loaded(path)
    if loaded is None:
        return False
    try:
        totals = analyse(loaded.net, unknowns=loaded.unknowns).totals
    except SurgeryError:
        return False
    return totals.complete and totals.params <= SMALL_PARAMS and totals.flops <= SMALL_FLOPS


def tiny_weights(work):
    """A .caffemodel whose one layer, named like most nets' stem, fits no real layer."""
    from surgery.io import caffemodel as cm

    path = Path(work) / "tiny.caffemodel"
    if not path.exists():
        cm.write_caffemodel(str(path), [{"name": "conv1", "type": "Convolution", "blobs": [
            np.ones((2, 1, 1, 1), np.float32), np.zeros(2, np.float32)]}])
    return path


class Source(NamedTuple):
    """The file an output was written from, and the weights init-weights wrote for it."""
    path: Path
    own_weights: object   # Path or None


class Case:
    """One file under test and what its recipes need. `source` (a Source) is the file an
    output was written from, None for a source file."""

    def __init__(self, label, path, work, source=None):
        self.label, self.path, self.work, self.source = label, Path(path), Path(work), source
        self.stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
        self.phases = phases(self.path)
        self.small = is_small(self.path)
        self.tiny_weights = tiny_weights(work)
        self.own_weights = None   # set by sweep_case: weights init-weights wrote for this net

    def out(self, suffix):
        return self.work / f"{self.stem}.{suffix}"


# ---- the recipes: one entry per command -------------------------------------------------
# Each gives the argument lists (after the command name) to run on a Case. The sweep adds
# `--phase P` for each phase the file describes when the command has --phase, and runs
# every argument list again with --json when the command has --json.

def _weights_for(c):
    return [c.tiny_weights] + ([c.own_weights] if c.own_weights else [])


def _verify(c):
    runs = [[c.path, c.path, "--weights", w] for w in _weights_for(c)]
    if c.source is not None and c.source.own_weights:   # the conversion against its original
        runs.append([c.source.path, c.path, "--weights", c.source.own_weights])
    return runs


def _init_weights(c):
    if c.small:
        return [[c.path, "-o", c.out("init.caffemodel")]]
    # Generating 1.8 G random parameters would take the whole budget: on larger nets the
    # command is asked to overwrite its input, which it refuses (exit 2) before generating.
    return [[c.path, "-o", c.path]]


def _report(c):
    if c.small:
        return [[c.path, "-o", c.out("report.html")]]
    # Laying out a 500-layer graph takes Graphviz seconds; larger nets are asked to
    # overwrite their input, which is refused before anything is drawn.
    return [[c.path, "-o", c.path]]


RECIPES = {
    "inspect": lambda c: [[c.path]],
    "dilate": lambda c: [[c.path, "-s", "16", *COVER, "--dry-run"],
                         [c.path, "-s", "8", *COVER, "--dry-run"]],
    "upgrade": lambda c: [[c.path]],
    "weights": lambda c: [[c.path]] + ([[c.own_weights]] if c.own_weights else []),
    "check": lambda c: [[c.path, w] for w in _weights_for(c)],
    "init-weights": _init_weights,
    "verify": _verify,
    "fcn": lambda c: [[c.path, "--dry-run"]],
    "fold": lambda c: [[c.path, "--weights", w, "--dry-run"] for w in _weights_for(c)],
    "bvlc": lambda c: [[c.path, "--dry-run"]] + [[c.path, "--weights", w, "--dry-run"]
                                                 for w in _weights_for(c)],
    "report": _report,
    "segment": lambda c: [[c.path, "--head", head, "--classes", "3", "-o", c.out("seg.prototxt"),
                           "--deploy", c.out("seg-deploy.prototxt")]
                          for head in ("aspp", "largefov")],
}

# What the tool writes, to be read again: output name -> (command, options); the source
# file comes after the command and `-o OUT` at the end. The runs count as the command's.
PRODUCERS = {
    "os16": ("dilate", ["-s", "16", *COVER]),
    "os8": ("dilate", ["-s", "8", *COVER]),
    "fcn": ("fcn", []),
    "upgrade": ("upgrade", []),
}


def sweep_case(case, *, produce=False):
    """Run every command's recipe on `case`: {command: Log}; with `produce`, also
    {output name: path} of what the producers wrote."""
    logs = {name: Log() for name in command_names()}
    if case.small:
        init = logs["init-weights"]
        path = case.out("caffemodel")
        if init.run(["init-weights", case.path, "-o", path]) == 0:
            case.own_weights = path
    for command, log in logs.items():
        recipe = RECIPES.get(command)
        if recipe is None:
            log.runs.append((command, [f"no recipe for '{command}' in tests/_sweep.py RECIPES"]))
            continue
        opts = options(command)
        for args in recipe(case):
            for phase in (case.phases if "--phase" in opts else (None,)):
                for json_mode in ((False, True) if "--json" in opts else (False,)):
                    log.run([command, *args, *(["--phase", phase] if phase else []),
                             *(["--json"] if json_mode else [])], json_mode=json_mode)
        if not log.runs:
            log.runs.append((command, [f"the recipe for '{command}' ran nothing"]))
    written = {}
    if produce:
        for name, (command, opts) in PRODUCERS.items():
            out = case.out(f"{name}.prototxt")
            if logs[command].run([command, case.path, *opts, "-o", out]) == 0 and out.exists():
                written[name] = out
    return logs, written


def sweep_file(label, path, work, source=None):
    """A worker's job: ({command: [(command line, problems)]}, {output name: path},
    Source of this file for its outputs' recipes). Outputs are written for a source file
    only (source None)."""
    case = Case(label, path, work, source=source)
    logs, written = sweep_case(case, produce=source is None)
    return {c: log.runs for c, log in logs.items()}, written, Source(case.path, case.own_weights)
