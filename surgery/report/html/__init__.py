"""`caffe-surgery report`: one self-contained HTML page showing a net, or what a
conversion changed.

    compare.py  what the page says, from the nets alone (statuses, grid, size condition)
    graph.py    the dot source of the net and the call to Graphviz `dot`
    plots.py    stride and receptive field against depth, as inline SVG
    page.py     the HTML around them
"""

from ...analysis.analyse import analyse
from .compare import Side, compare
from .graph import dot_source, find_dot, render_svg
from .page import read_verify, render

__all__ = ["make_page", "find_dot", "read_verify"]


def make_page(before, after=None, *, input_shapes=None, phase="TEST", verify=None):
    """The report page as text. `before`/`after` are NetFiles from `load_net` (`after` None
    for a one-net report); `verify` a dict from `read_verify`. Needs Graphviz `dot`."""
    dot = find_dot()
    sides = [Side(nf.path, nf, analyse(nf.net, input_shapes=input_shapes, phase=phase,
                                       unknowns=nf.unknowns))
             for nf in (before, after) if nf is not None]
    report = compare(sides[0], sides[1] if after is not None else None,
                     input_shapes=input_shapes, phase=phase)
    svg = render_svg(dot_source(report), dot)
    return render(report, svg, phase=phase, verify=verify)
