"""`caffe-surgery report`: one self-contained HTML page showing a net, or what a
conversion changed.

    compare.py  what the page says, from the nets alone (statuses, grid, size condition)
    graph.py    what the graph shows (boxes, arrows), its dot source and the call to `dot`
    layout.py   the pure-Python layered layout (grandalf) and its SVG, when `dot` is absent
    plots.py    stride and receptive field against depth, as inline SVG
    page.py     the HTML around them
"""

from ...analysis.analyse import analyse
from .compare import Side, compare
from .graph import drawing, find_layout, render_svg
from .page import read_verify, render

__all__ = ["make_page", "find_layout", "read_verify"]


def make_page(before, after=None, *, input_shapes=None, phase="TEST", verify=None,
              layout=None, progress=None):
    """The report page as text. `before`/`after` are NetFiles from `load_net` (`after` None
    for a one-net report); `verify` a dict from `read_verify`. `layout` from `find_layout`
    (Graphviz `dot`, else grandalf); `progress(text)` is told each step."""
    progress = progress or (lambda text: None)
    layout = layout or find_layout()
    progress("report: analysing")
    sides = [Side(nf.path, nf, analyse(nf.net, input_shapes=input_shapes, phase=phase,
                                       unknowns=nf.unknowns))
             for nf in (before, after) if nf is not None]
    report = compare(sides[0], sides[1] if after is not None else None,
                     input_shapes=input_shapes, phase=phase)
    progress(f"report: laying out the graph ({layout.name})")
    svg = render_svg(drawing(report), layout)
    return render(report, svg, phase=phase, verify=verify)
