"""The graph laid out without Graphviz: grandalf's layered (Sugiyama) layout, the
algorithm `dot` uses, from PyPI, and the SVG written here, so `pip install
'caffe-surgery[report]'` alone gives the page.

The SVG has the shape `dot -Tsvg` gives, which the page's script and CSS rely on: sizes in
points with a viewBox, one `<g class="node ...">` per box holding its `<title>` (the layer
name), a `<path>` (or `<ellipse>` for an input) and its `<text>` lines; one
`<g class="edge">` per arrow. Text widths are estimated from DejaVu Sans's advance widths
(the page's first font), so a box fits its text in that face and has room to spare in a
narrower one.
"""

import math
from html import escape

# Graphviz's settings in graph.dot_text, in points: node margin 0.1in x 0.03in, nodesep
# 0.2in, ranksep 0.25in, minimum box 0.75in x 0.5in, penwidth 1.2 (bold: 2), arrowsize 0.6.
MARGIN_X, MARGIN_Y = 7.2, 2.2
NODESEP, RANKSEP = 14.4, 18.0
MIN_W, MIN_H = 54.0, 36.0
PEN, BOLD_PEN = 1.2, 2.0
ARROW_LENGTH, ARROW_HALF_WIDTH = 6.0, 2.1
PAD = 4.0
COMPONENT_GAP = 20.0
EDGE_COLOR, OLD_EDGE_COLOR, LABEL_COLOR = "#78909c", "#bdbdbd", "#546e7a"

# (font size, weight, colour) of each line kind of graph.Box.
KINDS = {"name": (10, "bold", "#263238"), "text": (10, "normal", "#263238"),
         "small": (8, "normal", "#263238"), "placeholder": (8, "normal", "#6a1b9a")}
LABEL_SIZE = 8

# DejaVu Sans advance widths in em, in classes (bold is about 9% wider).
_NARROW = set("ijl.,:;'|!`")
_SLIM = set(" ()[]{}-/\\frtI\"*")
_WIDE = set("mwMW@%\u2192")


def text_width(text, size, weight="normal"):
    em = 0.0
    for c in text:
        if c in _NARROW:
            em += 0.28
        elif c in _SLIM:
            em += 0.38
        elif c in _WIDE:
            em += 0.92
        elif c.isupper():
            em += 0.70
        else:
            em += 0.62
    return em * size * (1.09 if weight == "bold" else 1.0)


def _box_size(box):
    widths = [text_width(text, KINDS[kind][0], KINDS[kind][1]) for text, kind in box.lines]
    height = sum(KINDS[kind][0] * 1.2 for _, kind in box.lines) + 2 * MARGIN_Y
    width = max(widths or [0]) + 2 * MARGIN_X
    if box.ellipse:     # the text's rectangle inscribed in an ellipse
        width, height = width * math.sqrt(2), height * math.sqrt(2)
    return max(MIN_W, width), max(MIN_H, height)


class _View:
    """What grandalf reads (w, h) and writes (xy: the centre) for a vertex."""

    def __init__(self, w, h):
        self.w, self.h, self.xy = w, h, None


class _Route:
    """What grandalf writes for an edge: the points it passes (centres of the two boxes
    and of the dummy vertices between them)."""

    points = None

    def setpath(self, points):
        self.points = [tuple(p) for p in points]


def layout(boxes, arrows):
    """({box name: (x, y, w, h)}, {arrow index: [points]}, width, height): each connected
    part laid out with grandalf's SugiyamaLayout, the parts side by side."""
    from grandalf.graphs import Edge, Graph, Vertex
    from grandalf.layouts import SugiyamaLayout

    vertices = {}
    for box in boxes:
        vertex = Vertex(box.name)
        vertex.view = _View(*_box_size(box))
        vertices[box.name] = vertex
    edges, by_pair = [], {}
    for index, arrow in enumerate(arrows):
        pair = (arrow.source, arrow.target)
        if arrow.source == arrow.target or pair in by_pair:
            by_pair.setdefault(pair, []).append(index)
            continue
        edge = Edge(vertices[arrow.source], vertices[arrow.target])
        edge.view = _Route()
        by_pair[pair] = [index]
        edges.append(edge)
    graph = Graph(list(vertices.values()), edges)
    placed, routes, left, height = {}, {}, 0.0, 0.0
    for part in graph.C:
        sugiyama = SugiyamaLayout(part)
        sugiyama.xspace, sugiyama.yspace = NODESEP, RANKSEP
        sugiyama.init_all()
        sugiyama.draw()
        xs = [v.view.xy[0] - v.view.w / 2 for v in part.sV]
        x0 = min(xs)
        right = left
        for v in part.sV:
            x, y = v.view.xy
            placed[v.data] = (x - x0 + left, y, v.view.w, v.view.h)
            right = max(right, x - x0 + left + v.view.w / 2)
            height = max(height, y + v.view.h / 2)
        for e in part.sE:
            points = [(x - x0 + left, y) for x, y in (e.view.points or [])]
            for index in by_pair[(e.v[0].data, e.v[1].data)]:
                routes[index] = points
        left = right + COMPONENT_GAP
    return placed, routes, max(left - COMPONENT_GAP, 0.0), height


def _clip(centre, size, toward):
    """Where the segment from a box's centre toward a point leaves the box."""
    (x, y), (w, h) = centre, size
    dx, dy = toward[0] - x, toward[1] - y
    if dx == 0 and dy == 0:
        return x, y
    scale = min(w / 2 / abs(dx) if dx else math.inf, h / 2 / abs(dy) if dy else math.inf)
    return x + dx * min(scale, 1.0), y + dy * min(scale, 1.0)


def _path(points):
    """A smooth SVG path through the points (Catmull-Rom as cubic Beziers)."""
    if len(points) == 2:
        (x0, y0), (x1, y1) = points
        return f"M{x0:.1f},{y0:.1f}L{x1:.1f},{y1:.1f}"
    out = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for i in range(len(points) - 1):
        p0 = points[max(i - 1, 0)]
        p1, p2 = points[i], points[i + 1]
        p3 = points[min(i + 2, len(points) - 1)]
        c1 = (p1[0] + (p2[0] - p0[0]) / 6, p1[1] + (p2[1] - p0[1]) / 6)
        c2 = (p2[0] - (p3[0] - p1[0]) / 6, p2[1] - (p3[1] - p1[1]) / 6)
        out.append(f"C{c1[0]:.1f},{c1[1]:.1f} {c2[0]:.1f},{c2[1]:.1f} {p2[0]:.1f},{p2[1]:.1f}")
    return "".join(out)


def _edge(index, arrow, points, placed, nth=0):
    """One arrow's SVG; `nth` > 0 for a further blob between the same two boxes (same
    route, its label moved down a line)."""
    (sx, sy, sw, sh), (tx, ty, tw, th) = placed[arrow.source], placed[arrow.target]
    if not points:
        points = [(sx, sy), (tx, ty)]
    points = list(points)
    points[0] = _clip((sx, sy), (sw, sh), points[1])
    tip = _clip((tx, ty), (tw, th), points[-2])
    (bx, by) = points[-2]
    length = math.hypot(tip[0] - bx, tip[1] - by) or 1.0
    ux, uy = (tip[0] - bx) / length, (tip[1] - by) / length
    base = (tip[0] - ux * ARROW_LENGTH, tip[1] - uy * ARROW_LENGTH)
    points[-1] = base
    color = OLD_EDGE_COLOR if arrow.old else EDGE_COLOR
    dash = ' stroke-dasharray="5,2"' if arrow.old else ""
    head = [tip, (base[0] - uy * ARROW_HALF_WIDTH, base[1] + ux * ARROW_HALF_WIDTH),
            (base[0] + uy * ARROW_HALF_WIDTH, base[1] - ux * ARROW_HALF_WIDTH)]
    parts = [f'<g id="edge{index + 1}" class="edge">',
             f"<title>{escape(arrow.source)}&#45;&gt;{escape(arrow.target)}</title>",
             f'<path fill="none" stroke="{color}"{dash} d="{_path(points)}"/>',
             f'<polygon fill="{color}" stroke="{color}" points="'
             + " ".join(f"{x:.1f},{y:.1f}" for x, y in head) + '"/>']
    if arrow.label is not None:
        mx, my = points[len(points) // 2] if len(points) > 2 else \
            ((points[0][0] + points[1][0]) / 2, (points[0][1] + points[1][1]) / 2)
        my += nth * LABEL_SIZE * 1.2
        parts.append(f'<text text-anchor="start" x="{mx + 3:.1f}" y="{my + 3:.1f}" '
                     f'font-size="{LABEL_SIZE}" fill="{LABEL_COLOR}">'
                     f"{escape(arrow.label)}</text>")
    parts.append("</g>")
    return "".join(parts)


def _rounded(x, y, w, h, r=4.0):
    left, top, right, bottom = x - w / 2, y - h / 2, x + w / 2, y + h / 2
    return (f"M{left + r:.1f},{top:.1f}H{right - r:.1f}Q{right:.1f},{top:.1f} {right:.1f},"
            f"{top + r:.1f}V{bottom - r:.1f}Q{right:.1f},{bottom:.1f} {right - r:.1f},"
            f"{bottom:.1f}H{left + r:.1f}Q{left:.1f},{bottom:.1f} {left:.1f},{bottom - r:.1f}"
            f"V{top + r:.1f}Q{left:.1f},{top:.1f} {left + r:.1f},{top:.1f}Z")


def _node(index, box, where, styles):
    x, y, w, h = where
    fill, border, style, _ = styles[box.status]
    pen = BOLD_PEN if "bold" in style else PEN
    dash = ' stroke-dasharray="5,2"' if "dashed" in style else ""
    paint = f'fill="{fill}" stroke="{border}" stroke-width="{pen}"{dash}'
    if box.ellipse:
        shape = f'<ellipse {paint} cx="{x:.1f}" cy="{y:.1f}" rx="{w / 2:.1f}" ry="{h / 2:.1f}"/>'
    elif "rounded" in style:
        shape = f'<path {paint} d="{_rounded(x, y, w, h)}"/>'
    else:
        shape = (f'<polygon {paint} points="{x - w / 2:.1f},{y - h / 2:.1f} {x + w / 2:.1f},'
                 f'{y - h / 2:.1f} {x + w / 2:.1f},{y + h / 2:.1f} {x - w / 2:.1f},'
                 f'{y + h / 2:.1f}"/>')
    total = sum(KINDS[kind][0] * 1.2 for _, kind in box.lines)
    baseline = y - total / 2
    texts = []
    for text, kind in box.lines:
        size, weight, color = KINDS[kind]
        baseline += size * 1.2
        bold = ' font-weight="bold"' if weight == "bold" else ""
        texts.append(f'<text text-anchor="middle" x="{x:.1f}" y="{baseline - size * 0.25:.1f}" '
                     f'font-size="{size}"{bold} fill="{color}">{escape(text)}</text>')
    return (f'<g id="node{index + 1}" class="node {escape(box.css)}">'
            f"<title>{escape(box.name)}</title>{shape}{''.join(texts)}</g>")


def layered_svg(boxes, arrows, *, font, styles):
    """The <svg> element, as text, of graph.drawing's (boxes, arrows); `styles` is
    graph.STYLES and `font` the font list the boxes were measured for."""
    placed, routes, width, height = layout(boxes, arrows)
    width, height = width + 2 * PAD, height + 2 * PAD
    nodes = [_node(i, box, placed[box.name], styles) for i, box in enumerate(boxes)]
    seen = {}
    edges = []
    for i, arrow in enumerate(arrows):
        pair = (arrow.source, arrow.target)
        seen[pair] = seen.get(pair, -1) + 1
        edges.append(_edge(i, arrow, routes.get(i), placed, seen[pair]))
    return (f'<svg width="{width:.0f}pt" height="{height:.0f}pt" viewBox="0.00 0.00 '
            f'{width:.2f} {height:.2f}" xmlns="http://www.w3.org/2000/svg">'
            f'<g id="graph0" class="graph" transform="translate({PAD} {PAD})" '
            f'font-family="{escape(font)}">'
            + "".join(edges) + "".join(nodes) + "</g></svg>")
