"""The net as a graph: layers are boxes, blobs are edges, laid out top to bottom by
Graphviz `dot` (Debian/Ubuntu package `graphviz`), as Caffe's own draw_net does, or, when
`dot` is not installed, by the pure-Python layered layout of layout.py (grandalf).

`drawing(report)` decides what is drawn (boxes with their lines and colours, arrows),
once; `dot_text` and layout.py only draw it, so both layouts show the same page.

An in-place layer (its tops are its bottoms: BatchNorm, Scale, ReLU...) is folded into
the box of the layer that made its blob, so ResNet-152's 670 layers make about 220 boxes.
A box shows the layer's name, type, window (old -> new when a conversion changed it),
output shape, the folded layers, and any `${...}` template placeholder as written. In a
conversion the converted net is drawn, plus the original's removed layers, greyed out.
"""

import shutil
import subprocess
from html import escape
from typing import NamedTuple

from ...errors import SurgeryError
from ..text import _shape, _window
from .compare import ADAPTED, ADDED, APPROXIMATE, EXACT, REMOVED

# The font dot measures text with and the browser draws it in: a list, so that both pick
# the same face where they can (a narrower face in the browser only leaves more room).
FONT = '"DejaVu Sans,Helvetica,Arial,sans-serif"'

# status -> (fill, border, dot style, legend text)
STYLES = {
    None: ("#ffffff", "#90a4ae", "rounded,filled", "unchanged"),
    "input": ("#eceff1", "#90a4ae", "filled", "input"),
    EXACT: ("#c8e6c9", "#2e7d32", "rounded,filled,bold", "changed, exact"),
    APPROXIMATE: ("#ffcc80", "#e65100", "rounded,filled,bold", "cannot be exact"),
    ADAPTED: ("#e1bee7", "#6a1b9a", "rounded,filled,bold", "adapted to the new stride"),
    REMOVED: ("#eeeeee", "#9e9e9e", "rounded,filled,dashed", "removed"),
    ADDED: ("#bbdefb", "#1565c0", "rounded,filled,bold", "new"),
}


class Layout(NamedTuple):
    """How the graph is laid out: Graphviz `dot` at `path`, or the pure-Python layered
    layout (grandalf) with the SVG written here (surgery/report/html/layout.py)."""

    name: str            # "dot" or "grandalf"
    path: str = None     # dot's path


NO_LAYOUT = ("no graph layout available: install Graphviz's 'dot' (Debian/Ubuntu: apt-get "
             "install graphviz; macOS: brew install graphviz) or the Python package grandalf "
             "(pip install 'caffe-surgery[report]')")


def find_layout():
    """System Graphviz when `dot` is on PATH (its layout is the better one), else grandalf
    when it imports; SurgeryError saying what to install when neither is there."""
    dot = shutil.which("dot")
    if dot is not None:
        return Layout("dot", dot)
    try:
        import grandalf  # noqa: F401
    except ImportError:
        raise SurgeryError(NO_LAYOUT) from None
    return Layout("grandalf")


def render_svg(boxes_and_arrows, layout=None):
    """The <svg> element, as text, of the drawing (`drawing(report)`)."""
    layout = layout or find_layout()
    if layout.name == "grandalf":
        from .layout import layered_svg

        return layered_svg(*boxes_and_arrows, font=FONT.strip('"'), styles=STYLES)
    return _dot_svg(dot_text(*boxes_and_arrows), layout.path)


def _dot_svg(source, dot):
    """Lay out dot source with `dot -Tsvg`; the <svg> element as text."""
    try:
        done = subprocess.run([dot, "-Tsvg"], input=source.encode("utf-8"), capture_output=True,
                              timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SurgeryError(f"Graphviz 'dot' failed to run: {exc}") from None
    if done.returncode:
        first = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[0]
        raise SurgeryError(f"Graphviz 'dot' failed (exit {done.returncode}): {first}")
    svg = done.stdout.decode("utf-8")
    return svg[svg.index("<svg"):]


def boxes(graph):
    """(head name -> [nodes in the box], layer name -> head): in-place layers join the box
    of the layer that made their blob."""
    members, head_of = {}, {}
    for node in graph.nodes:
        head = node.name
        if node.bottoms and tuple(node.tops) == tuple(node.bottoms):
            makers = {graph.producer(b).name if graph.producer(b) else None for b in node.bottoms}
            if None not in makers and len({head_of[m] for m in makers}) == 1:
                head = head_of[makers.pop()]
        head_of[node.name] = head
        members.setdefault(head, []).append(node)
    return members, head_of


def _edges(graph, head_of):
    """{(source box or ('input', blob), target box, blob)} in file order."""
    edges = {}
    for node in graph.nodes:
        if head_of[node.name] != node.name:
            continue
        for blob in dict.fromkeys(node.bottoms):
            maker = graph.producer(blob)
            source = head_of[maker.name] if maker is not None else ("input", blob)
            edges[(source, node.name, blob)] = maker.name if maker is not None else blob
    return edges


def _q(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _h(text):
    return escape(str(text), quote=True)


def _placeholders(loaded):
    """layer name -> ['num_output ${NUM_LABELS}', ...]: numeric placeholders as written."""
    found = {}
    for ph in loaded.numeric_placeholders:
        name = loaded.binding.layer_name(ph.path)
        if name is not None:
            fields = [c for c in ph.path[2:] if isinstance(c, str)]
            found.setdefault(name, []).append(f"{fields[-1] if fields else '?'} {ph.text}")
    return found


def _window_of(node):
    """The window text; '?' for a layer analysis treats as of unknown type."""
    return _window(node.layer) if node.type == node.layer.type else "?"


class Box(NamedTuple):
    """One box: `name` is its <title> (the layer's name, or 'BLOB (input)'); `lines` are
    (text, kind) with kind "name" (bold), "text", "small" or "placeholder" (small, purple);
    `status` picks its colours (STYLES); `css` is its class in the SVG."""

    name: str
    lines: tuple
    status: object
    css: str
    ellipse: bool = False


class Arrow(NamedTuple):
    """A blob from one box to another; `label` the blob's name when the box is named
    otherwise; `old` for the original's edges to removed layers (dashed, grey)."""

    source: str
    target: str
    label: str
    old: bool


def _lines(report, nodes, before_graph, placeholders):
    head = nodes[0]
    status = report.status.get(head.name)
    drawn = report.drawn.analysis if status != REMOVED else report.before.analysis
    window = _window_of(head)
    if status not in (None, REMOVED, ADDED) and head.name in before_graph:
        old = _window_of(before_graph.node(head.name))
        if old != window:
            window = f"{old or 'none'} \u2192 {window or 'none'}"
    lines = [(head.name, "name"), (" ".join(x for x in (head.type, window) if x), "text")]
    shapes = [_shape(s) for t, s in zip(head.tops, drawn.out_shapes.get(head.name) or ())
              if t not in head.bottoms]
    if shapes:
        lines.append((", ".join(shapes), "text"))
    folded = []
    for n in nodes[1:]:   # by type; by name too when the conversion touched it
        own = report.status.get(n.name)
        mark = f" {own.lower()}" if own is not None and own != status else ""
        folded.append(f"{n.type}{mark}" if own is None else f"{n.type} {n.name}{mark}")
    if folded:
        lines.append((f"+ {', '.join(folded)}", "small"))
    for n in nodes:
        for text in placeholders.get(n.name, ()):
            lines.append((text, "placeholder"))
    return tuple(lines), status


def drawing(report):
    """(boxes, arrows) of the drawn net, with the original's removed layers in a
    conversion; in-place layers folded into the box of the layer they follow."""
    graph = report.drawn.analysis.graph
    members, head_of = boxes(graph)
    edges = {k: (v, False) for k, v in _edges(graph, head_of).items()}
    before_graph = report.before.analysis.graph
    inputs = list(graph.header_inputs)
    placeholders = _placeholders(report.drawn.loaded)
    if report.after is not None:
        old_members, old_head = boxes(before_graph)
        placeholders = {**_placeholders(report.before.loaded), **placeholders}
        for head, nodes in old_members.items():
            gone = [n for n in nodes if n.name not in graph]
            if head not in graph and gone:
                members[head] = gone
            elif gone:
                members[head_of[head]] += gone
        for (source, target, blob), maker in _edges(before_graph, old_head).items():
            if (source not in graph and not isinstance(source, tuple)) or target not in graph:
                if not isinstance(source, tuple):
                    source = head_of.get(source, source)
                edges.setdefault((source, head_of.get(target, target), blob), (maker, True))
        inputs += [b for b in before_graph.header_inputs if b not in inputs]
    names = set(members)
    drawn_boxes, input_id = [], {}
    for blob in inputs:
        ident = f"{blob} (input)"
        while ident in names:
            ident += "'"
        input_id[blob] = ident
        shape = _shape(report.drawn.analysis.shapes.get(blob))
        drawn_boxes.append(Box(ident, ((blob, "name"), (shape, "text")), "input", "input",
                               ellipse=True))
    for head, nodes in members.items():
        lines, status = _lines(report, nodes, before_graph, placeholders)
        css = "layer" + ("" if status is None else f" changed status-{status.lower()}")
        drawn_boxes.append(Box(head, lines, status, css))
    arrows = []
    for (source, target, blob), (maker, old) in edges.items():
        start = input_id.get(source[1], source[1]) if isinstance(source, tuple) else source
        label = None if maker == blob or isinstance(source, tuple) else blob
        arrows.append(Arrow(start, target, label, old))
    return drawn_boxes, arrows


def dot_source(report):
    """The dot text of the drawn net (with the original's removed layers, if a conversion)."""
    return dot_text(*drawing(report))


def _dot_label(lines):
    parts = []
    for text, kind in lines:
        if kind == "name":
            parts.append(f"<B>{_h(text)}</B>")
        elif kind == "text":
            parts.append(_h(text))
        else:
            color = ' COLOR="#6a1b9a"' if kind == "placeholder" else ""
            parts.append(f'<FONT POINT-SIZE="8"{color}>{_h(text)}</FONT>')
    return "<" + "<BR/>".join(parts) + ">"


def dot_text(drawn_boxes, arrows):
    """Graphviz source for (boxes, arrows)."""
    lines = ["digraph net {",
             f'  graph [rankdir=TB, nodesep=0.2, ranksep=0.25, bgcolor="transparent", '
             f'fontname={FONT}];',
             f'  node [shape=box, fontname={FONT}, fontsize=10, margin="0.1,0.03", '
             'penwidth=1.2];',
             f'  edge [color="#78909c", arrowsize=0.6, fontname={FONT}, fontsize=8, '
             'fontcolor="#546e7a"];']
    for box in drawn_boxes:
        fill, border, style, _ = STYLES[box.status]
        shape = "shape=ellipse, " if box.ellipse else ""
        lines.append(f"  {_q(box.name)} [{shape}label={_dot_label(box.lines)}, "
                     f"style={_q(style)}, fillcolor={_q(fill)}, color={_q(border)}, "
                     f"class={_q(box.css)}];")
    for arrow in arrows:
        attrs = [] if arrow.label is None else [f"label={_q(arrow.label)}"]
        if arrow.old:
            attrs.append('style=dashed, color="#bdbdbd"')
        lines.append(f"  {_q(arrow.source)} -> {_q(arrow.target)}"
                     + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"
