"""Output stride and receptive field against depth: small line plots as inline SVG.

Depth is the number of layers along the longest chain from an input to the net's
output blob (`Analysis.deepest_blob`), so a residual block's shortcut does not make the
line zigzag. Values are the height axis's (the page says when the width axis differs).
"""

import math
from html import escape

WIDTH, HEIGHT = 440, 220
LEFT, RIGHT, TOP, BOTTOM = 50, 14, 26, 38


def trunk(analysis):
    """Blobs from an input to the output blob along the longest chain of layers."""
    graph, end = analysis.graph, analysis.deepest_blob()
    depth, via = {b: 0 for b in graph.inputs}, {}
    for node in graph.nodes:
        new = [t for t in node.tops if not graph.is_in_place(node, t)]
        prev = max(node.bottoms, key=lambda b: depth.get(b, 0), default=None)
        for top in new:
            depth[top] = depth.get(prev, 0) + 1 if prev is not None else 0
            via[top] = prev
    path, blob = [], end
    while blob is not None:
        path.append(blob)
        blob = via.get(blob)
    return path[::-1]


def points(analysis, key):
    """[(depth, value or None)] of `key` ('stride' or 'rf') along the trunk, and whether
    the width axis ever differs from the height axis."""
    out, differs = [], False
    for i, blob in enumerate(trunk(analysis)):
        geom = analysis.geometry.get(blob)
        pair = getattr(geom, key) if geom is not None else None
        out.append((i, pair.h if pair is not None else None))
        differs = differs or (pair is not None and pair.h != pair.w)
    return out, differs


def _ticks(top):
    """Round steps from 0 to at least `top`, at most 6 of them."""
    step = 1
    while top / step > 5:
        step = _next_step(step)
    return [step * i for i in range(int(math.ceil(top / step)) + 1)]


def _next_step(step):
    """1, 2, 5, 10, 20, 50, ..."""
    digits = 10 ** int(math.floor(math.log10(step)))
    for m in (2, 5, 10):
        if m * digits > step:
            return m * digits
    return 10 * step


def plot(title, lines, *, log2=False, mark=None, xlabel="depth"):
    """An SVG line plot. lines: [(label, css class, [(x, y or None)])]; mark: (y, label)."""
    xs = [x for _, _, pts in lines for x, y in pts if y is not None] or [0]
    ys = [y for _, _, pts in lines for _, y in pts if y is not None] + ([mark[0]] if mark else [])
    ys = ys or [1]
    tx = lambda v: math.log2(v) if log2 else v
    yticks = [2 ** i for i in range(int(math.ceil(math.log2(max(ys)))) + 1)] if log2 \
        else _ticks(max(ys))
    xticks = [v for v in _ticks(max(xs) or 1) if v <= max(xs)] or [0]
    x0, x1, y0, y1 = 0, max(xs) or 1, tx(yticks[0]), tx(yticks[-1]) or 1
    sx = lambda v: LEFT + (v - x0) / ((x1 - x0) or 1) * (WIDTH - LEFT - RIGHT)
    sy = lambda v: HEIGHT - BOTTOM - (tx(v) - y0) / ((y1 - y0) or 1) * (HEIGHT - TOP - BOTTOM)
    out = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
           f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">',
           f'<text x="{LEFT}" y="16" class="title">{escape(title)}</text>']
    for v in yticks:
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(v):.1f}" '
                   f'y2="{sy(v):.1f}"/><text class="tick" x="{LEFT - 5}" y="{sy(v) + 3:.1f}" '
                   f'text-anchor="end">{v:g}</text>')
    for v in xticks:
        out.append(f'<text class="tick" x="{sx(v):.1f}" y="{HEIGHT - BOTTOM + 13}" '
                   f'text-anchor="middle">{v:g}</text>')
    out.append(f'<text class="tick" x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" '
               f'text-anchor="middle">{escape(xlabel)}</text>')
    if mark is not None:
        out.append(f'<line class="mark" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(mark[0]):.1f}" '
                   f'y2="{sy(mark[0]):.1f}"/><text class="mark" x="{WIDTH - RIGHT - 2}" '
                   f'y="{sy(mark[0]) - 4:.1f}" text-anchor="end">{escape(mark[1])}</text>')
    for label, css, pts in reversed(lines):   # the first line (before) on top, dashed
        out.append(f'<path class="{css}" d="{_steps(pts, sx, sy)}"/>')
    for i, (label, css, pts) in enumerate(lines):
        out.append(f'<line class="{css}" x1="{LEFT + 8}" x2="{LEFT + 26}" y1="{TOP + 8 + 14 * i}" '
                   f'y2="{TOP + 8 + 14 * i}"/><text class="tick" x="{LEFT + 30}" '
                   f'y="{TOP + 11 + 14 * i}">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _steps(pts, sx, sy):
    """A step line through the known points (a value holds until the next layer changes it)."""
    d, last = [], None
    for x, y in pts:
        if y is None:
            last = None
            continue
        if last is None:
            d.append(f"M{sx(x):.1f},{sy(y):.1f}")
        else:
            d.append(f"H{sx(x):.1f}V{sy(y):.1f}")
        last = y
    return "".join(d)
