"""The command outputs README.md (and docs/segment.md) show are what the commands print.

Every `caffe-surgery` command in a README code block that works on the shipped
`models/` is run, in README order, in one scratch folder (with `models` linked in), so
later commands find the files earlier ones wrote. Where the README shows the output
(a `$ caffe-surgery ...` line followed by lines of output), every shown line must appear,
in order, in what the command printed; a line `...` stands for lines left out. So a
number in the README that no longer matches its command fails here.
"""

import re
import shlex
from pathlib import Path

import pytest

from surgery.cli import main

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)

pytest.importorskip("cv2")
pytestmark = pytest.mark.slow


def readme_commands(document="README.md"):
    """[(argv, shown output lines or None)] for every runnable command, in the order of the
    document (README.md, or a page under docs/)."""
    found = []
    for block in FENCE.findall((ROOT / document).read_text(encoding="utf-8")):
        current = None
        for line in block.replace("\\\n", " ").splitlines():    # join continued lines
            if line.startswith("$ "):
                current = (line[2:], [])
                found.append(current)
            elif current is not None:
                current[1].append(line)
            else:
                found += [(part.strip(), None) for part in line.split("&&")
                          if part.strip().startswith("caffe-surgery ")]
    runnable = []
    for command, shown in found:
        argv = shlex.split(command)
        if argv[0] == "caffe-surgery" and any(a.startswith("models/") for a in argv):
            runnable.append((argv[1:], shown))
    return runnable


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


@pytest.mark.parametrize("document, shown_at_least", [("README.md", 7), ("docs/segment.md", 3)])
def test_the_readme_shows_what_its_commands_print(tmp_path, monkeypatch, capsys, document,
                                                  shown_at_least):
    (tmp_path / "models").symlink_to(ROOT / "models", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    commands = readme_commands(document)
    assert sum(shown is not None for _, shown in commands) >= shown_at_least
    for argv, shown in commands:
        main(argv)
        printed = capsys.readouterr().out.splitlines()
        if shown is not None:
            assert shown_lines_appear(shown, printed), (
                "caffe-surgery " + " ".join(argv), "\n".join(printed))
