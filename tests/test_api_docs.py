"""docs/api.md's examples run, and say what they claim: every ```python block is run, in
order, in one namespace and one scratch folder holding the project's `models/` (so later
examples use what earlier ones wrote). Each example states what its function returns
with asserts, computed by another command or fixed by the shipped models."""

import re
from pathlib import Path

import pytest

from surgery import api

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api.md"
PYTHON = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

pytest.importorskip("cv2")     # verify's examples run in OpenCV DNN


def test_every_command_function_has_an_example():
    text = DOC.read_text(encoding="utf-8")
    sections = {name: body for name, body in re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text,
                                                        re.S | re.M)}
    commands = [name for name in api.__all__ if name != "Result"]
    assert sorted(sections) == sorted(commands)
    for name in commands:
        assert f"api.{name}(" in sections[name] and "Returns" in sections[name], name


def test_the_examples_run_and_hold(tmp_path, monkeypatch, capsys):
    (tmp_path / "models").symlink_to(ROOT / "models", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    text = DOC.read_text(encoding="utf-8")
    namespace = {}
    for match in PYTHON.finditer(text):
        line = text.count("\n", 0, match.start(1))     # a failure names the doc's own line
        exec(compile("\n" * line + match.group(1), str(DOC), "exec"), namespace)
    assert "reachable output strides" in capsys.readouterr().out    # inspect's print
