"""The published-families tables (docs/published.md, and its summary in README.md) say what
`dilate` does today: every row whose net is here is measured again with the commands that
made it (tools/published.py), and a cell that no longer matches fails. Corpus rows need
../shared/corpus; without it only the nets the project builds are checked.
"""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _tool():
    spec = importlib.util.spec_from_file_location("published", ROOT / "tools" / "published.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


published = _tool()


def _rows(path, tag):
    """{net name: table row} of the table between the markers of `tag`."""
    lines = published.block(path.read_text(encoding="utf-8"), tag)
    return {line.split("|")[1].strip(): line for line in lines[2:]}


@pytest.fixture(scope="module")
def measured():
    return published.rows()


@pytest.mark.parametrize("path, tag, column", [(published.DOC, "table", 1),
                                               (published.README, "summary", 2)])
def test_the_tables_say_what_dilate_does(measured, path, tag, column):
    shown = _rows(path, tag)
    assert list(shown) == [f.name for f in published.FAMILIES], (
        f"{path.name}: the table's rows are not the families tools/published.py measures; "
        "run python tools/published.py --write")
    assert measured, "no family could be measured"
    for row in measured:
        family, line = row[0], row[column]
        assert shown[family.name] == line, (
            f"{path.name}: {family.name} changed; run python tools/published.py --write",
            shown[family.name], line)


def test_a_refusal_retried_with_its_flag_is_a_cell_of_its_own():
    """The tool follows a refusal's own advice, as a user would, and says it did."""
    cell = published.convert(ROOT / "models" / "vgg16" / "deploy.prototxt", 4, ("--head", "cut"))
    assert cell.flags == ("--pooling cover",) and cell.result == "APPROXIMATE"
    assert published.convert(ROOT / "models" / "vgg16" / "deploy.prototxt", 4,
                             ("--head", "cut", "--pooling", "cover")).flags == ()
