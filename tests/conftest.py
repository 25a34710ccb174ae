"""Suite-wide: the helpers every test file shares, and the Caffe settings only tests marked
`caffe` see.

Helpers (import them: `from conftest import run_cli, write_file, corpus_net`):
- `run_cli(*argv)`: (exit status, stdout, stderr) of `caffe-surgery ARGV` run in this
  process; `error_line(err)`: the one line a refused command prints on stderr;
- `write_file(folder, name, text)`: a file with `text` in it, its path returned;
- `CORPUS`, `corpus_path(rel)`, `corpus_net(rel)`, `corpus_files(pattern)` and
  `corpus_manifest()`: the shared public nets
  (`../shared/corpus` beside the project root in development and CI; a user's clone
  usually has none, so a test that needs one skips cleanly when it is absent).

`verify --engine auto` (the default) takes real Caffe when $CAFFE_PYTHON is set, and CI
sets it. Every other test (and the README's shown outputs) is about a fresh install
without Caffe, so it runs with CAFFE_PYTHON and CAFFE_PYTHONPATH removed; the Caffe
tests get the build from tests/_caffe.py.
"""

import contextlib
import csv
import io
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


@pytest.fixture(autouse=True)
def _no_caffe_interpreter_unless_marked(request, monkeypatch):
    if request.node.get_closest_marker("caffe") is None:
        monkeypatch.delenv("CAFFE_PYTHON", raising=False)
        monkeypatch.delenv("CAFFE_PYTHONPATH", raising=False)


def run_cli(*argv):
    """(exit status, stdout, stderr) of `caffe-surgery ARGV` (surgery.cli.main) run in this
    process; arguments may be paths or numbers. Any exception other than the CLI's own
    exit statuses escapes, as it would be a crash."""
    from surgery.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def error_line(err):
    """The single line of `err` (a refused command's stderr), checked to be the CLI's
    one-line error."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("caffe-surgery: error: "), err
    return lines[0]


def write_file(folder, name, text):
    """`folder`/`name` holding `text` (UTF-8); returns its path."""
    path = Path(folder) / name
    path.write_text(text, encoding="utf-8")
    return path


def corpus_path(*rel):
    """The corpus file `rel` (one path, or its parts); skips the test when it is not
    there."""
    path = CORPUS.joinpath(*rel)
    if not path.exists():
        pytest.skip(f"corpus file {path} not available")
    return path


def corpus_net(*rel):
    """The upgraded NetParameter of the corpus file `rel` (one path, or its parts); skips
    the test when it is not there."""
    from surgery.io.netfile import load_prototxt

    return load_prototxt(corpus_path(*rel))


def corpus_files(pattern="**/*.prototxt"):
    """The corpus files matching `pattern`, sorted; empty when there is no corpus."""
    return sorted(CORPUS.glob(pattern)) if CORPUS.is_dir() else []


def corpus_manifest():
    """The rows of the corpus's MANIFEST.tsv as dicts (local_path, kind, caffe_dialect,
    ...), in its order; empty when there is no corpus."""
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with open(manifest, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))
