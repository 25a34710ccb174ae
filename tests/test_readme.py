"""The command outputs README.md and the pages under docs/ show are what the commands print.

Every `caffe-surgery` command in a code block of a document is run, in the document's
order, in one scratch folder per document (with `models` linked in, and
`../shared/corpus` when the corpus is there), so later commands find the files earlier
ones wrote. Where the document shows the output (a `$ caffe-surgery ...` line followed by
lines of output), every shown line must appear, in order, in what the command printed
(stdout, or stderr for an error or a summary sent there); a line `...` stands for lines
left out. So a number in the docs that no longer matches its command fails here.

A command runs when its inputs are there: the shipped `models/`, the files earlier
commands of the same document wrote, and the corpus files when the corpus is present. A
command that reads a file only a user has (the published weights of a net) is skipped;
one that reads a file an earlier command should have written fails. A shown output that
names `engine caffe` runs with the Caffe build of tools/build_caffe.sh, and is skipped
without it. `CMD > FILE` writes stdout to FILE, and `CMD; echo $?` prints the exit status.
"""

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from surgery.cli import main

from _caffe import BUILD, caffe_build
from _corpus import CORPUS

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^ *```[^\n]*\n(.*?)^ *```", re.S | re.M)
FLAGS = {"--json", "--dry-run", "--strict", "--quiet", "--in-place", "--canonical",
         "--problems", "--train-bn", "-h", "--help"}          # options that take no value
READS = {"--weights", "--weights-converted", "--verify"}      # options whose value is read

pytest.importorskip("cv2")
pytestmark = pytest.mark.slow


def documents():
    """README.md and every docs page that shows a `$ caffe-surgery` command."""
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")
                   if "$ caffe-surgery" in p.read_text(encoding="utf-8"))
    return ["README.md"] + pages


def readme_commands(document="README.md"):
    """[(command line, shown output lines or None)] for every `caffe-surgery` command in
    the code blocks of `document`, in order."""
    found = []
    for block in FENCE.findall((ROOT / document).read_text(encoding="utf-8")):
        current = None
        lines = [line.strip() if line.lstrip().startswith(("$ ", "caffe-surgery ")) else line
                 for line in re.sub(r"\\\n\s*", " ", block).splitlines()]
        for line in lines:
            if line.startswith("$ "):
                current = (line[2:], [])
                found.append(current)
            elif current is not None:
                current[1].append(line)
            else:
                found += [(part.strip(), None) for part in line.split("&&")
                          if part.strip().startswith("caffe-surgery ")]
    return [(command, shown) for command, shown in found
            if command.startswith("caffe-surgery ")]


class Command:
    """One command line: its argv, the files it reads and writes, and its shell dressing."""

    def __init__(self, line):
        self.echo_status = line.endswith("; echo $?")
        words = shlex.split(line.removesuffix("; echo $?"), comments=True)
        self.redirect = None
        if ">" in words:
            at = words.index(">")
            words, self.redirect = words[:at], words[at + 1]
        self.argv = words[1:]
        self.reads, self.writes = [], [self.redirect] if self.redirect else []
        args = iter(self.argv[1:])
        for word in args:
            if word.startswith("-") and word != "-":
                if "=" in word or word in FLAGS:
                    continue
                value = next(args, None)
                (self.reads if word in READS else self.writes).append(value)
            else:
                self.reads.append(word)


def shown_lines_appear(shown, printed):
    """Each run of shown lines between `...` lines appears in order, contiguously."""
    at = 0
    segments, segment = [], []
    for line in shown:
        if line.strip() == "...":
            segments.append(segment)
            segment = []
        else:
            segment.append(line)
    segments.append(segment)
    for segment in segments:
        if not segment:
            continue
        for start in range(at, len(printed) - len(segment) + 1):
            if printed[start:start + len(segment)] == segment:
                at = start + len(segment)
                break
        else:
            return False
    return True


def _run(command):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(command.argv)
    if command.redirect:
        Path(command.redirect).write_text(out.getvalue(), encoding="utf-8")
        out = io.StringIO()
    printed = out.getvalue().splitlines() + ([str(code)] if command.echo_status else [])
    return code, printed, err.getvalue().splitlines()


@pytest.mark.parametrize("document", documents())
def test_the_docs_show_what_their_commands_print(tmp_path, monkeypatch, document):
    work = tmp_path / "work"
    work.mkdir()
    (work / "models").symlink_to(ROOT / "models", target_is_directory=True)
    if CORPUS.exists():
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "corpus").symlink_to(CORPUS, target_is_directory=True)
    monkeypatch.chdir(work)
    written, checked, skipped = set(), 0, []
    for line, shown in readme_commands(document):
        command = Command(line)
        missing = [f for f in command.reads if not Path(f).exists()]
        assert not [f for f in missing if f in written or f.startswith("models/")], (
            f"{document}: {line}: an input the document makes or ships is missing")
        uses_caffe = shown is not None and any("engine caffe" in s for s in shown)
        if missing or (uses_caffe and not (BUILD / "env").is_file()):
            skipped.append(line)
            continue
        with monkeypatch.context() as env:
            if uses_caffe:
                for key in ("CAFFE_PYTHON", "CAFFE_PYTHONPATH"):
                    env.setenv(key, caffe_build()[key])
            code, printed, errors = _run(command)
        written.update(command.writes)
        said_error = shown is not None and any("error:" in s for s in shown)
        assert code in (0, 1) or said_error, (f"{document}: {line}", "\n".join(errors))
        if shown is not None:
            assert shown_lines_appear(shown, printed) or shown_lines_appear(shown, errors), (
                f"{document}: {line}", "\n".join(printed + errors))
            checked += 1
    if document == "README.md":       # its tour runs on the shipped models alone
        assert checked >= 5, skipped
    if not checked:
        pytest.skip(f"{document}: every shown command needs what is not here: {skipped}")
