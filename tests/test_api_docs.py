"""docs/api.md's examples run, and say what they claim: every ```python block is run, in
order, in one namespace and one scratch folder holding the project's `models/` (so later
examples use what earlier ones wrote). Each example states what its function returns
with asserts, computed by another command or fixed by the shipped models."""

import doctest
import inspect
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


def _sections():
    text = DOC.read_text(encoding="utf-8")
    return dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, re.S | re.M))


@pytest.mark.parametrize("name", [n for n in api.__all__ if n != "Result"])
def test_each_signature_shown_is_the_functions_own(name):
    """The ```text block at the top of a section is the function's signature, wrapped:
    a keyword renamed or a default changed shows here."""
    shown = re.match(r"\s*```text\n(.*?)```", _sections()[name], re.S)
    assert shown, f"docs/api.md: ## {name} opens without its signature"
    actual = f"api.{name}{inspect.signature(getattr(api, name))}"
    assert " ".join(shown.group(1).split()) == " ".join(actual.split())
    assert "Raises " in _sections()[name], name


def test_the_readmes_python_example_prints_what_it_shows(tmp_path, monkeypatch):
    """README.md's ```pycon block is a doctest: each shown value is what the call returns."""
    (tmp_path / "models").symlink_to(ROOT / "models", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [block] = re.findall(r"^```pycon\n(.*?)^```", readme, re.S | re.M)
    test = doctest.DocTestParser().get_doctest(block, {}, "README.md", "README.md", 0)
    assert len(test.examples) >= 3 and all(e.want for e in test.examples[2:])
    report = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
