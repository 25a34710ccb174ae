"""The HTML page: the graph, the plots, the cost table and the exactness summary, with
its CSS and a small script inline, so the file opens offline and asks no server for
anything (a Content-Security-Policy in the page forbids it)."""

import json
import os
from html import escape

from ... import __version__
from ...errors import SurgeryError
from ...io.inputs import read_input
from ..text import _axes, _bytes, _shape, human
from . import plots
from .compare import STATUSES
from .graph import STYLES, _window_of

CSS = """
:root { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #263238; }
body { margin: 0; background: #fafafa; }
header { padding: 10px 18px 6px; background: #fff; border-bottom: 1px solid #e0e0e0; }
h1 { font-size: 18px; margin: 0 0 2px; } h2 { font-size: 15px; margin: 16px 0 6px; }
.files { color: #546e7a; margin: 0 0 8px; } code { font-size: 12.5px; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; }
.card { background: #f5f7f8; border: 1px solid #e0e0e0; border-radius: 6px; padding: 4px 10px; }
.card b { display: block; font-size: 16px; } .card span { color: #607d8b; font-size: 12px; }
main { display: grid; grid-template-columns: minmax(0, 1fr) 480px; gap: 14px; padding: 10px 18px; }
@media (max-width: 1000px) { main { grid-template-columns: 1fr; } }
#viewport svg { display: block; margin: 0 auto; }
#viewport { height: calc(100vh - 175px); min-height: 420px; overflow: auto; background: #fff;
  border: 1px solid #e0e0e0; border-radius: 6px; }
.toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; margin-bottom: 6px; }
.toolbar button { padding: 1px 8px; }
.chip { border: 1px solid; border-radius: 4px; padding: 0 6px; font-size: 12px; }
aside { min-width: 0; } aside h2:first-child { margin-top: 0; }
table { border-collapse: collapse; background: #fff; font-size: 12.5px; width: 100%; }
th, td { border: 1px solid #e0e0e0; padding: 2px 6px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr[data-layer] { cursor: pointer; } tr[data-layer]:hover { background: #eef4fb; }
.scroll { max-height: 320px; overflow: auto; }
.verdict { font-weight: 600; } .bad { color: #bf360c; } .good { color: #2e7d32; }
svg.plot { width: 100%; height: auto; background: #fff; border: 1px solid #e0e0e0; border-radius: 6px; margin-bottom: 6px; }
svg.plot text { font-size: 10.5px; fill: #455a64; } svg.plot .title { font-size: 12px; font-weight: 600; }
svg.plot path, svg.plot line.before, svg.plot line.after { fill: none; stroke-width: 2; }
.plot .before { stroke: #9e9e9e; stroke-dasharray: 5 3; } .plot .after { stroke: #1565c0; }
.plot line.grid { stroke: #eceff1; } .plot line.mark { stroke: #c62828; stroke-dasharray: 3 3; }
.plot text.mark { fill: #c62828; }
#viewport g.node.hit polygon, #viewport g.node.hit path { stroke: #d500f9; stroke-width: 4; }
"""

SCRIPT = """
(function () {
  var vp = document.getElementById('viewport'), svg = vp && vp.querySelector('svg');
  if (!svg) return;
  var w0 = svg.width.baseVal.value, h0 = svg.height.baseVal.value;
  var shown = document.getElementById('zoom');
  function zoom(z) {
    z = Math.max(0.05, Math.min(4, z));
    svg.setAttribute('width', w0 * z); svg.setAttribute('height', h0 * z);
    svg.dataset.zoom = z; shown.textContent = Math.round(z * 100) + '%';
  }
  function current() { return parseFloat(svg.dataset.zoom || '1'); }
  document.getElementById('zoom-in').onclick = function () { zoom(current() * 1.25); };
  document.getElementById('zoom-out').onclick = function () { zoom(current() / 1.25); };
  document.getElementById('zoom-fit').onclick = function () {
    zoom(Math.min((vp.clientWidth - 4) / w0, (vp.clientHeight - 4) / h0)); };
  document.getElementById('zoom-one').onclick = function () { zoom(1); };
  function nodeNamed(name) {
    var nodes = svg.querySelectorAll('g.node');
    for (var i = 0; i < nodes.length; i++) {
      var t = nodes[i].querySelector('title');
      if (t && t.textContent === name) return nodes[i];
    }
    for (i = 0; i < nodes.length; i++) {
      if (nodes[i].textContent.indexOf(name) >= 0) return nodes[i];
    }
    return null;
  }
  function show(node, mark) {
    if (!node) return false;
    var old = svg.querySelectorAll('g.node.hit');
    for (var i = 0; i < old.length; i++) old[i].classList.remove('hit');
    if (mark) node.classList.add('hit');
    var r = node.getBoundingClientRect(), v = vp.getBoundingClientRect();
    vp.scrollTop += r.top - v.top - vp.clientHeight / 3;
    vp.scrollLeft += r.left - v.left - (vp.clientWidth - r.width) / 2;
    return true;
  }
  var find = document.getElementById('find');
  find.addEventListener('keydown', function (e) {
    if (e.key === 'Enter') find.style.outlineColor = show(nodeNamed(find.value), true) ? '' : 'red';
  });
  var rows = document.querySelectorAll('tr[data-layer]');
  for (var i = 0; i < rows.length; i++) {
    rows[i].addEventListener('click', function () { show(nodeNamed(this.dataset.layer), true); });
  }
  zoom(1);
  show(svg.querySelector('g.node.changed') || svg.querySelector('g.node'));
})();
"""


def _h(text):
    return escape(str(text), quote=True)


def _card(value, what):
    return f'<div class="card"><b>{_h(value)}</b><span>{_h(what)}</span></div>'


def _ratio(a, b):
    return f"\u00d7{b / a:.2f}" if a else "-"


def _geometry_at(analysis, blob):
    geom = analysis.geometry.get(blob) if blob else None
    return (_axes(geom.stride), _axes(geom.rf)) if geom else ("?", "?")


def read_verify(path):
    """The dict `caffe-surgery verify --json` printed; SurgeryError naming the file otherwise."""
    try:
        data = json.loads(read_input(path, "verify result").decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SurgeryError(f"not JSON: {exc}", file=path) from None
    if not isinstance(data, dict) or not isinstance(data.get("blobs"), list) or \
            not all(isinstance(b, dict) and "blob" in b for b in data["blobs"]):
        raise SurgeryError("not the output of `caffe-surgery verify --json` (no 'blobs' list)",
                           file=path)
    return data


def _cards(report):
    before, after = report.before.analysis, report.drawn.analysis
    out_blob = after.deepest_blob()
    stride, rf = _geometry_at(after, out_blob)
    t_after = after.totals
    if report.after is None:
        return [_card(stride, f"output stride at {out_blob}"), _card(rf, "receptive field"),
                _card(len(after.graph.nodes), "layers"), _card(human(t_after.params), "params"),
                _card(human(t_after.flops), "FLOPs (multiply-adds)")]
    old_stride, _ = _geometry_at(before, before.deepest_blob())
    _, old_rf = _geometry_at(before, out_blob)
    counts = {s: sum(1 for v in report.status.values() if v == s) for s in STATUSES}
    changed = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"
    t_before = before.totals
    return [_card(f"{old_stride} \u2192 {stride}", f"output stride (at {out_blob})"),
            _card(f"{old_rf} \u2192 {rf}", f"receptive field at {out_blob}"),
            _card(changed, "changed layers"),
            _card(f"{human(t_before.flops)} \u2192 {human(t_after.flops)}",
                  f"FLOPs ({_ratio(t_before.flops, t_after.flops)})"),
            _card(_verdict(report), "summary")]


def _verdict(report):
    if report.approximate:
        return f"{len(report.approximate)} layer(s) cannot be exact"
    if report.grid is None:
        return "no shared blob on a common grid"
    if report.sizes.holds_here is False:
        return "grid broken at this input size"
    return "grids line up; no layer approximate"


def _plots(report):
    after = report.drawn.analysis
    if after.deepest_blob() is None:
        return "<h2>Stride and receptive field</h2><p>No blob of the net has a known stride.</p>"
    target = after.geometry.get(after.deepest_blob())
    mark = (target.stride.h, f"output stride {target.stride.h}") if target else None
    html, differs = [], False
    for key, title, log2 in (("stride", "Output stride against depth", True),
                             ("rf", "Receptive field against depth", False)):
        lines = []
        if report.after is not None:
            pts, d1 = plots.points(report.before.analysis, key)
            lines.append(("before", "before", pts))
            differs = differs or d1
        pts, d2 = plots.points(after, key)
        lines.append(("after" if report.after else os.path.basename(report.drawn.path),
                      "after", pts))
        differs = differs or d2
        html.append(plots.plot(title, lines, log2=log2, mark=mark if key == "stride" else None,
                               xlabel=f"layers on the path to '{after.deepest_blob()}'"))
    note = "<p>Height axis shown; the width axis differs.</p>" if differs else ""
    return "<h2>Stride and receptive field</h2>" + "".join(html) + note


def _costs(report):
    rows = []
    t_after = report.drawn.analysis.totals
    t_before = report.before.analysis.totals
    two = report.after is not None
    for label, key, fmt in (("params", "params", lambda n: f"{n:,} ({human(n)})"),
                            ("FLOPs (multiply-adds)", "flops", lambda n: human(n)),
                            ("activation memory (float32)", "activations", _bytes)):
        a, b = getattr(t_before, key), getattr(t_after, key)
        cells = [f'<td class="n">{_h(fmt(a))}</td>'] if two else []
        cells.append(f'<td class="n">{_h(fmt(b))}</td>')
        if two:
            cells.append(f'<td class="n">{_ratio(a, b)}</td>')
        rows.append(f"<tr><th>{label}</th>{''.join(cells)}</tr>")
    head = "<tr><th></th><th>before</th><th>after</th><th>after/before</th></tr>" if two else ""
    partial = [] if t_before.complete and t_after.complete else [
        "<p>Some sizes are unknown: these totals are lower bounds.</p>"]
    shapes = ", ".join(f"{k} {_shape(v)}" for k, v in report.drawn.analysis.shapes.items()
                       if k in report.drawn.analysis.graph.inputs)
    return (f"<h2>Cost at input {_h(shapes)}</h2><table>{head}{''.join(rows)}</table>"
            + "".join(partial))


def _exactness(report, verify):
    if report.after is None:
        return ""
    out = ["<h2>Exactness</h2><ul>"]
    if report.grid is not None:
        blob, factor, offset = report.grid
        out.append(f"<li>Converted <code>{_h(blob)}</code> at offset + factor\u00b7i equals the "
                   f"original at i, with factor {_h(_axes(factor))} and offset "
                   f"{_h(_axes(offset))} (the deepest blob the conversion changed and kept "
                   "exact).</li>")
    else:
        out.append('<li class="bad">No blob both nets compute lies on a common grid.</li>')
    sizes = report.sizes
    here = {True: "holds at the analysed size", False: "does NOT hold at the analysed size",
            None: "unknown at the analysed size"}[sizes.holds_here]
    scope = "shared blob before the approximate layers" if report.approximate else "shared blob"
    out.append(f"<li>Input sizes for which every {scope} keeps its grid and all its "
               f"positions: {_h(sizes.text)}; {here}.</li>")
    if report.approximate:
        names = ", ".join(f"<code>{_h(n)}</code>" for n in sorted(report.approximate))
        out.append(f'<li class="bad">Cannot be exact: {names}; every blob after them is '
                   "approximate.</li>")
    else:
        out.append("<li>No layer is approximate. Whether the numbers agree is what "
                   "<code>caffe-surgery verify</code> measures.</li>")
    out.append("</ul>")
    if verify is not None:
        out.append(_verify_table(verify))
    out.append(_changes(report))
    return "".join(out)


def _num(value):
    return "-" if value is None else (f"{value:.2e}" if isinstance(value, (int, float)) else
                                      str(value))


def _verify_table(data):
    verdict = "PASS" if data.get("passed") else "FAIL"
    inputs = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in (data.get("inputs") or {}).items())
    head = (f'<h2>Measured by verify: <span class="{"good" if data.get("passed") else "bad"}">'
            f"{verdict}</span></h2><p>{_h(data.get('original', '?'))} \u2192 "
            f"{_h(data.get('converted', '?'))}; engine {_h(data.get('engine', '?'))}, input "
            f"{_h(inputs or '?')}, tolerance {_h(data.get('tolerance', '?'))} (relative)</p>")
    rows = ["<tr><th>blob</th><th>factor</th><th>offset</th><th>max|err|</th><th>rel err</th>"
            "<th>status</th></tr>"]
    pair = lambda v: "-" if not v or len(v) != 2 else _axes(v)
    for b in data["blobs"]:
        rows.append(f"<tr><td><code>{_h(b.get('blob'))}</code></td><td>{_h(pair(b.get('factor')))}"
                    f"</td><td>{_h(pair(b.get('offset')))}</td>"
                    f"<td class=\"n\">{_num(b.get('max_abs_error'))}</td>"
                    f"<td class=\"n\">{_num(b.get('rel_error'))}</td>"
                    f"<td>{_h(b.get('status', '?'))}</td></tr>")
    caveats = "".join(f"<p>caveat: {_h(c)}</p>" for c in data.get("caveats") or ())
    return head + f"<table>{''.join(rows)}</table>" + caveats


def _changes(report):
    before, after = report.before.analysis.graph, report.drawn.analysis.graph
    rows = []
    for name, status in report.status.items():
        if status is None:
            continue
        old = before.node(name) if name in before else None
        new = after.node(name) if name in after else None
        fill, border, _, _ = STYLES[status]
        rows.append(f'<tr data-layer="{_h(name)}"><td><code>{_h(name)}</code></td>'
                    f"<td>{_h((new or old).type)}</td>"
                    f'<td><span class="chip" style="background:{fill};border-color:{border}">'
                    f"{_h(status)}</span></td><td>{_h(_window_of(old) if old else '')}</td>"
                    f"<td>{_h(_window_of(new) if new else '')}</td></tr>")
    if not rows:
        return "<h2>Changed layers</h2><p>None.</p>"
    return (f"<h2>Changed layers ({len(rows)})</h2><div class=\"scroll\"><table><tr><th>layer</th>"
            "<th>type</th><th>status</th><th>before</th><th>after</th></tr>"
            + "".join(rows) + "</table></div>")


def _legend(report):
    if report.after is None:
        return ""
    present = set(report.status.values())
    chips = [f'<span class="chip" style="background:{fill};border-color:{border}">{_h(text)}'
             "</span>" for status, (fill, border, _, text) in STYLES.items()
             if status in present or status is None]
    return "".join(chips)


def _warnings(report):
    sides = [report.before] + ([report.after] if report.after else [])
    items = [f"<li>{_h(os.path.basename(s.path))}: {_h(w)}</li>"
             for s in sides for w in s.analysis.warnings]
    return f"<h2>Warnings</h2><ul>{''.join(items)}</ul>" if items else ""


def render(report, svg, *, phase="TEST", verify=None):
    """The whole page as text."""
    names = os.path.basename(report.before.path)
    if report.after is not None:
        names += f" \u2192 {os.path.basename(report.after.path)}"
    files = f"<code>{_h(report.before.path)}</code>"
    if report.after is not None:
        files += f" \u2192 <code>{_h(report.after.path)}</code>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>caffe-surgery report: {_h(names)}</title>
<style>{CSS}</style></head>
<body>
<header><h1>caffe-surgery report: {_h(names)}</h1>
<p class="files">{files} &middot; phase {_h(phase)} &middot; caffe-surgery {__version__}</p>
<div class="cards">{''.join(_cards(report))}</div></header>
<main>
<section><div class="toolbar"><button id="zoom-out" title="zoom out">&minus;</button>
<span id="zoom">100%</span><button id="zoom-in" title="zoom in">+</button>
<button id="zoom-fit">fit</button><button id="zoom-one">1:1</button>
<input id="find" placeholder="find layer (Enter)" size="18"> {_legend(report)}</div>
<div id="viewport">{svg}</div></section>
<aside>{_plots(report)}{_costs(report)}{_exactness(report, verify)}{_warnings(report)}</aside>
</main>
<script>{SCRIPT}</script>
</body></html>
"""
