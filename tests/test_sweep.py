"""Every command on every real net ends in exit 0, 1 or 2, never in a traceback (issue 18).

Each subcommand in `surgery.cli.COMMANDS` runs in-process through `surgery.cli.main`,
in text mode and, where it has `--json`, in JSON mode, in each phase the file describes
(where it has `--phase`), over

- every net and solver in ../shared/corpus (MANIFEST.tsv; a solver is refused as a net
  and must still end in exit 2 with one line) and every net in models/;
- every different file the tool wrote from those nets: the outputs of `dilate -s 16` and
  `-s 8` (`--head cut --pooling cover`), `fcn` and `upgrade`. Whatever the tool writes, it
  must be able to read again. An output identical to a file already swept (an `upgrade`
  of a current-format file, models/*/deploy-os16 again) is not swept twice.

What a clean run is, and what each command is given (RECIPES, one entry per command),
is in tests/_sweep.py. A command added to COMMANDS without a recipe fails
`test_every_command_has_a_recipe` and each of its sweep items. A crash too big to fix
at once goes in KNOWN as a strict xfail, with its reason (none today).

The runs are shared out to SWEEP_JOBS worker processes (default: 2, or 1 on a one-core
machine; SWEEP_JOBS=1 runs them in this process). Each test item then reports the runs
of one file and one command, naming every run that was not clean. Only the files of the
selected items are swept, so `-k` narrows the work too.

Runtime: 1 058 items, 2 min 40 s wall time and 3 min 30 s CPU on 2 cores (another
helper's load on them too), measured with `time python -m pytest -q tests/test_sweep.py`.
Where the time goes: loading and analysing the large nets (ResNet-152, DenseNet-121) once
per run. On larger nets init-weights is refused before it generates (see _sweep.py).
"""

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest

import _sweep
from _sweep import command_names, digest, problems, source_files

FILES = source_files()
PATHS = {label: path for label, path, _ in FILES}
NETS = [label for label, _, kind in FILES if kind != "solver"]

# (test, label, command) -> why it still fails, run as a strict xfail; test is
# "test_sweep" (the file itself) or "test_sweep_outputs" (what the tool wrote from it).
KNOWN = {}


def _jobs():
    return max(1, int(os.environ.get("SWEEP_JOBS", min(2, os.cpu_count() or 1))))


def _run_all(jobs):
    """{key: result of _sweep.sweep_file(*args)} for [(key, args)], biggest files first."""
    jobs = sorted(jobs, key=lambda job: -os.path.getsize(job[1][1]))
    if _jobs() == 1 or len(jobs) < 2:
        return {key: _sweep.sweep_file(*args) for key, args in jobs}
    with ProcessPoolExecutor(max_workers=_jobs(), mp_context=get_context("spawn")) as pool:
        futures = {key: pool.submit(_sweep.sweep_file, *args) for key, args in jobs}
        return {key: future.result() for key, future in futures.items()}


class Swept:
    def __init__(self, sources, outputs):
        self.sources = sources    # label -> ({command: runs}, written, Source)
        self.outputs = outputs    # label -> [(name, path, {command: runs} or None, same as)]


@pytest.fixture(scope="session")
def swept(request, tmp_path_factory):
    """Sweep the files the selected items need: sources first, then their outputs."""
    selected = {(item.originalname, item.callspec.params["label"])
                for item in request.session.items
                if item.module.__name__ == __name__ and hasattr(item, "callspec")}
    need = {label for _, label in selected}
    with_outputs = {label for name, label in selected if name == "test_sweep_outputs"}
    work = tmp_path_factory.mktemp("sweep")
    sources = _run_all([(label, (label, PATHS[label], work)) for label in need])

    seen = {digest(path): label for label, path, _ in FILES}   # a copy of a source is not new
    outputs, jobs = {}, []
    for label in [label for label in NETS if label in with_outputs]:
        outputs[label] = []
        for name, path in sources[label][1].items():
            key = f"{label} -> {name}"
            same = seen.setdefault(digest(path), key)
            outputs[label].append((name, path, same))
            if same == key:
                jobs.append((key, (key, path, work, sources[label][2])))
    done = _run_all(jobs)
    outputs = {label: [(name, path, done[f"{label} -> {name}"][0]
                        if same == f"{label} -> {name}" else None, same)
                       for name, path, same in entries] for label, entries in outputs.items()}
    return Swept(sources, outputs)


def assert_clean(where, command, runs):
    bad = [(line, found) for line, found in runs if found]
    if bad:
        pytest.fail(f"{where}: {command}: {len(bad)} of {len(runs)} runs not clean\n" +
                    "\n".join(f"$ caffe-surgery {line}\n" + "\n".join(found)
                              for line, found in bad), pytrace=False)


def _item(test, label, command):
    reason = KNOWN.get((test, label, command))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(label, command, id=f"{label}::{command}", marks=marks)


@pytest.mark.parametrize("label,command",
                         [_item("test_sweep", label, c) for label, _, _ in FILES
                          for c in command_names()])
def test_sweep(label, command, swept):
    assert_clean(label, command, swept.sources[label][0][command])


@pytest.mark.parametrize("label,command",
                         [_item("test_sweep_outputs", label, c) for label in NETS
                          for c in command_names()])
def test_sweep_outputs(label, command, swept):
    fresh = [(name, path, runs) for name, path, runs, _ in swept.outputs[label] if runs]
    if not fresh:
        copies = ", ".join(f"{name} = {same}" for name, _, _, same in swept.outputs[label])
        pytest.skip(f"nothing new was written from {label} ({copies or 'no output'})")
    for name, path, runs in fresh:
        assert_clean(f"{label} -> {name} ({path})", command, runs[command])


def test_every_command_has_a_recipe():
    assert sorted(_sweep.RECIPES) == sorted(command_names()), \
        "give every command in surgery/cli.py COMMANDS a recipe in tests/_sweep.py RECIPES"


def test_the_checks_can_fail():
    """The run checker catches what the sweep is for, or a green sweep would say nothing."""
    assert problems(0, "{}\n", "", None, json_mode=True) == []
    assert problems(1, '{"a": null}\n', "caffe-surgery: warning: x\n", None, json_mode=True) == []
    assert problems(2, "", "caffe-surgery: error: bad\n", None, json_mode=True) == []
    assert problems(0, "{} {}\n", "", None, json_mode=True)            # two documents
    assert problems(0, '{"a": NaN}\n', "", None, json_mode=True)       # not strict JSON
    assert problems(0, "", "", None, json_mode=True)                   # no document
    assert problems(2, "", "caffe-surgery: error: a\nmore\n", None, json_mode=False)
    assert problems(2, "{}", "caffe-surgery: error: a\n", None, json_mode=True)
    assert problems(0, "", "Traceback (most recent call last):\n", None, json_mode=False)
    assert problems(3, "", "", None, json_mode=False)
    assert problems(None, "", "", "TypeError: boom", json_mode=False)
    code, out, err, crash = _sweep.invoke(["inspect", "--no-such-option"])
    assert problems(code, out, err, crash, json_mode=False) == []   # usage errors: one line
