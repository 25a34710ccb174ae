"""`caffe-surgery report`: what the page says, checked against other derivations, and
the page itself loaded in headless Chromium as a user would open it.

The statuses, grid and input-size condition the report derives from two nets alone are
compared with what the dilate pass recorded while converting. The browser tests load
each page from a file:// URL in a fresh profile and fail on any console error, page
error or request other than the page itself; their screenshots are kept under pytest's
temporary directory, in `report-screenshots0/` (e.g.
/tmp/pytest-of-$USER/pytest-current/report-screenshots0/resnet50-os8.png).
"""

import json
import re
import sys
from pathlib import Path

import pytest

from surgery.analysis.analyse import analyse
from surgery.cli import main
from surgery.report.html.compare import APPROXIMATE, EXACT, REMOVED, Side, compare
from surgery.io.netfile import load_net
from surgery.transform.dilate import dilate

from _browser import browser_or_skip, dot_or_skip, hidden_dot, open_page, pixel_spread
from conftest import CORPUS, corpus_path, run_cli

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def report_of(before, after=None, shapes=None, phase="TEST"):
    sides = []
    for path in (before, after):
        if path is not None:
            nf = load_net(path)
            sides.append(Side(str(path), nf, analyse(nf.net, input_shapes=shapes, phase=phase,
                                                     unknowns=nf.unknowns)))
    return compare(sides[0], sides[1] if after else None, input_shapes=shapes, phase=phase)


def convert(tmp_path, net, *options):
    """dilate NET with options into tmp_path; (converted path, dilate's JSON summary)."""
    out = tmp_path / (Path(net).stem + "-converted.prototxt")
    rc, stdout, err = run_cli("dilate", net, *options, "--json", "-o", out)
    assert rc == 0, err
    return out, json.loads(stdout)


def _sizes(text):
    """{'H': (period, {residues}), 'W': ...} from '... H mod 16 in {0, 9} and W mod ...'."""
    return {axis: (int(period), {int(v) for v in values.split(",")})
            for axis, period, values in re.findall(r"([HW]) mod (\d+) in \{([^}]*)\}", text)}


# ------------------------------------------------------------ what the page says

@pytest.mark.parametrize("model,options", [
    ("resnet50", ["-s", "8", "--head", "cut"]),
    ("mobilenet-mini", ["-s", "8", "--head", "cut"]),
    ("googlenet-mini", ["-s", "8", "--head", "cut", "--pooling", "cover"]),
    ("resnet50", ["-s", "16", "--head", "global"]),
])
def test_statuses_agree_with_what_dilate_recorded(tmp_path, model, options):
    net = MODELS / model / "deploy.prototxt"
    converted, summary = convert(tmp_path, net, *options)
    expected = {c["layer"]: REMOVED if c["action"] == "remove" else
                EXACT if c["exact"] else APPROXIMATE for c in summary["changes"]}
    report = report_of(net, converted)
    assert {n: s for n, s in report.status.items() if s is not None} == expected
    assert APPROXIMATE in expected.values() or options[-1] == "cut" and model == "resnet50"


def test_grid_is_the_one_dilate_recorded(tmp_path):
    net = MODELS / "resnet50" / "deploy.prototxt"
    converted, summary = convert(tmp_path, net, "-s", "8", "--head", "cut")
    blob, factor, offset = report_of(net, converted).grid
    assert blob == summary["deepest_blob"] == "res5c"
    assert [list(factor), list(offset)] == [summary["grid"][blob]["factor"],
                                            summary["grid"][blob]["offset"]]
    assert factor == (4, 4)


def test_input_size_condition_agrees_with_dilate():
    """VGG-16 at OS 8 keeps pool4's partial CEIL window with one more pad: dilate says for
    which sizes that is right; the report finds the same sizes from the two nets alone."""
    net = MODELS / "vgg16" / "deploy.prototxt"
    _, dilated = dilate(load_net(net).net, output_stride=8, head="cut")
    report = report_of(net, MODELS / "vgg16" / "deploy-os8.prototxt")
    assert _sizes(report.sizes.text) == _sizes(dilated.exact_sizes)
    assert _sizes(report.sizes.text)["H"][0] == 16 and report.sizes.holds_here is True
    # The same file at 513 (513 mod 16 = 1) is not exact, as models/README.md says.
    other = report_of(net, MODELS / "vgg16" / "deploy-os8.prototxt", shapes={"data": (1, 3, 513, 513)})
    assert other.sizes.holds_here is False
    resnet = report_of(MODELS / "resnet50" / "deploy.prototxt",
                       MODELS / "resnet50" / "deploy-os8.prototxt")
    assert resnet.sizes.text == "every input size" and resnet.sizes.holds_here is True


def test_in_place_layers_fold_into_the_layer_they_follow():
    from surgery.report.html.graph import boxes, dot_source

    graph = analyse(load_net(MODELS / "resnet50" / "deploy.prototxt").net).graph
    members, head_of = boxes(graph)
    assert [n.name for n in members["conv1"]] == ["conv1", "bn_conv1", "scale_conv1", "conv1_relu"]
    assert [n.name for n in members["res2a"]] == ["res2a", "res2a_relu"]
    in_place = [n for n in graph.nodes if n.bottoms and n.tops == n.bottoms]
    assert in_place and all(head_of[n.name] != n.name for n in in_place)
    assert len(members) == len(graph.nodes) - len(in_place)
    text = dot_source(report_of(MODELS / "resnet50" / "deploy.prototxt"))
    assert "+ BatchNorm, Scale, ReLU" in text and '"bn_conv1"' not in text


# ------------------------------------------------------------ the command

def test_without_dot_grandalf_lays_the_graph_out(tmp_path, monkeypatch):
    """A pip-only install: no Graphviz on PATH, the page is still written, with every
    layer a box."""
    pytest.importorskip("grandalf")
    monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "r.html"
    rc, stdout, err = run_cli("report", MODELS / "vgg16" / "deploy.prototxt", "-o", out)
    assert rc == 0 and err == "", err
    html = out.read_text(encoding="utf-8")
    for name in ("conv1_1", "pool5", "fc8"):
        assert f"<title>{name}</title>" in html


def test_without_dot_or_grandalf_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "grandalf", None)    # import grandalf fails
    out = tmp_path / "r.html"
    rc = main(["report", str(MODELS / "vgg16" / "deploy.prototxt"), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    assert "apt-get install graphviz" in err and "caffe-surgery[report]" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["{net}", "--verify", "{net}"], "--verify needs CONVERTED"),
    (["{net}", "{net}", "--verify", "{bad}"], "not JSON"),
    (["{net}", "{net}", "--verify", "{other}"], "not the output of `caffe-surgery verify"),
    (["{net}", "--input-shape", "data=0,3"], "bad --input-shape"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, argv, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"blobs": 3}')
    files = {"net": MODELS / "vgg16" / "deploy.prototxt", "bad": tmp_path / "bad.json",
             "other": tmp_path / "other.json"}
    out = tmp_path / "r.html"
    rc, stdout, err = run_cli("report", *[a.format(**files) for a in argv], "-o", out)
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_refuses_to_overwrite_an_input(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_bytes((MODELS / "vgg16" / "deploy.prototxt").read_bytes())
    before = net.read_bytes()
    rc, _, err = run_cli("report", net, "-o", net)
    assert rc == 2 and "is the input file" in err
    assert net.read_bytes() == before


def test_costs_are_inspects_totals(tmp_path):
    dot_or_skip()
    net = MODELS / "mobilenet-mini" / "deploy.prototxt"
    converted, _ = convert(tmp_path, net, "-s", "8", "--head", "cut")
    page = tmp_path / "r.html"
    assert run_cli("report", net, converted, "-o", page)[0] == 0
    html = page.read_text(encoding="utf-8")
    for path in (net, converted):
        rc, stdout, _ = run_cli("inspect", path, "--json")
        params = json.loads(stdout)["totals"]["params"]
        assert f"{params:,}" in html


def test_verify_result_shows_each_blob(tmp_path):
    dot_or_skip()
    pytest.importorskip("cv2")
    net = MODELS / "mobilenet-mini" / "deploy.prototxt"
    converted, _ = convert(tmp_path, net, "-s", "8", "--head", "cut")
    weights, result = tmp_path / "w.caffemodel", tmp_path / "verify.json"
    assert run_cli("init-weights", net, "-o", weights)[0] == 0
    rc, stdout, err = run_cli("verify", net, converted, "--weights", weights, "--json",
                              "--input-shape", "data=1,3,64,64", "--blob", "conv4_2/sep")
    assert rc == 0, err
    result.write_text(stdout)
    page = tmp_path / "r.html"
    rc, _, err = run_cli("report", net, converted, "--input-shape", "data=1,3,64,64", "--verify",
                         result, "-o", page)
    assert rc == 0, err
    html = page.read_text(encoding="utf-8")
    blobs = json.loads(stdout)["blobs"]
    assert len(blobs) == 2 and "Measured by verify" in html
    for b in blobs:
        assert f"<code>{b['blob']}</code>" in html and f"{b['rel_error']:.2e}" in html


# ------------------------------------------------------------ in the browser

@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("report-screenshots")


def _look(page_path, shot, layout="dot"):
    """Load the page in Chromium; assert it loads cleanly and is not blank."""
    browser_or_skip(layout)
    seen = open_page(page_path, screenshot=shot)
    assert seen.requests == [seen.url], f"requests other than the page: {seen.requests}"
    assert not [m for m in seen.console if m[0] == "error"], seen.console
    assert not seen.errors, seen.errors
    assert shot.exists() and pixel_spread(seen.screenshot) > 5, f"blank screenshot {shot}"
    return seen


def _report(monkeypatch, tmp_path, layout, *argv):
    """Run `report` with the layout asked for: "grandalf" hides `dot` from PATH while it
    runs, as on a machine with no Graphviz."""
    with monkeypatch.context() as patch:
        if layout == "grandalf":
            hidden_dot(patch, tmp_path)
        return run_cli("report", *argv)


LAYOUTS = ("dot", "grandalf")
CONVERSIONS = {
    "resnet50-os8": (MODELS / "resnet50" / "deploy.prototxt", ["-s", "8", "--head", "cut"]),
    "mobilenet-os8": (MODELS / "mobilenet-mini" / "deploy.prototxt", ["-s", "8", "--head", "cut"]),
    "vgg16-v1-os8": (CORPUS / "vgg" / "VGG_ILSVRC_16_layers_deploy.prototxt",
                     ["-s", "8", "--head", "cut"]),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", sorted(CONVERSIONS))
def test_conversion_page_in_chromium(tmp_path, shots, monkeypatch, case, layout):
    net, options = CONVERSIONS[case]
    if not net.exists():
        pytest.skip(f"{net} not available")
    browser_or_skip(layout)
    converted, summary = convert(tmp_path, net, *options)
    page = tmp_path / f"{case}.html"
    rc, _, err = _report(monkeypatch, tmp_path, layout, net, converted, "-o", page)
    assert rc == 0, err
    seen = _look(page, shots / f"{case}-{layout}.png", layout)
    changed = [c["layer"] for c in summary["changes"]]
    assert len(changed) >= 3
    for name in changed:   # an in-place layer is named inside the box it folds into
        assert name in seen.graph_text
        assert name not in seen.nodes or "changed" in seen.nodes[name].split(), seen.nodes[name]
    rewritten = [c["layer"] for c in summary["changes"] if c["action"] == "rewrite"]
    assert rewritten and all(n in seen.nodes for n in rewritten)
    removed = [c["layer"] for c in summary["changes"] if c["action"] == "remove"]
    assert all("status-removed" in seen.nodes[n] for n in removed if n in seen.nodes)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_template_page_in_chromium(tmp_path, shots, monkeypatch, layout):
    """A DeepLab v2 template, one net: its `${...}` placeholders appear as written."""
    net = corpus_path("deeplab_v2", "vgg16_train.prototxt")
    browser_or_skip(layout)
    page = tmp_path / "deeplab.html"
    rc, _, err = _report(monkeypatch, tmp_path, layout, net, "-o", page)
    assert rc == 0, err
    seen = _look(page, shots / f"deeplab-v2-template-{layout}.png", layout)
    assert "fc8_${EXP}_1" in seen.nodes and "${NUM_LABELS}" in seen.graph_text
    assert "phase TRAIN" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_page_interactions_in_chromium(tmp_path, monkeypatch, layout):
    """The page's script works on either layout's SVG: zoom changes the graph's size, and
    clicking a changed layer's row in the table marks its box and scrolls it into view."""
    browser_or_skip(layout)
    from playwright.sync_api import sync_playwright

    from _browser import FLAGS, chromium_path

    net = MODELS / "resnet50" / "deploy.prototxt"
    converted, summary = convert(tmp_path, net, "-s", "8", "--head", "cut")
    page_path = tmp_path / "r.html"
    rc, _, err = _report(monkeypatch, tmp_path, layout, net, converted, "-o", page_path)
    assert rc == 0, err
    target = [c["layer"] for c in summary["changes"] if c["action"] == "rewrite"][-1]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            width = lambda: page.evaluate(
                "() => document.querySelector('#viewport svg').getBoundingClientRect().width")
            before = width()
            page.click("#zoom-in")
            assert width() == pytest.approx(before * 1.25, rel=0.02)
            page.click(f'tr[data-layer="{target}"]')
            marked = page.evaluate("() => Array.from(document.querySelectorAll("
                                   "'#viewport g.node.hit title')).map(t => t.textContent)")
            assert marked == [target]
            inside = page.evaluate("""name => {
                const box = Array.from(document.querySelectorAll('#viewport g.node'))
                    .find(g => g.querySelector('title').textContent === name)
                    .getBoundingClientRect();
                const view = document.getElementById('viewport').getBoundingClientRect();
                return box.top >= view.top && box.bottom <= view.bottom; }""", target)
            assert inside
        finally:
            browser.close()
