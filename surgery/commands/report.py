"""Write one self-contained HTML page that shows a net, or what a conversion changed.

With NET only, the page describes that net; with NET and CONVERTED (e.g. the output of
`dilate`), it shows the conversion: the converted net drawn as a graph (top to bottom;
in-place layers folded into the layer they follow) with each changed
layer coloured by status and its old -> new window, removed layers greyed out; output
stride and receptive field against depth, before and after; params, FLOPs and activation
memory with ratios; and the exactness summary (the common grid of the deepest shared
blob, the input sizes it holds for). --verify adds the errors `verify --json` measured.

Statuses come from the two nets alone, not from how CONVERTED was made: a layer whose
type, window or weight shapes differ is EXACT, or APPROXIMATE when no setting could make
it exact (a pooling window after a removed stride, a collapse over a denser map).

The page has inline SVG, CSS and script only, and requests nothing from any server.
The graph is laid out by Graphviz's `dot` when it is on PATH (Debian/Ubuntu: apt-get
install graphviz), else by the Python package grandalf (pip install 'caffe-surgery[report]').
"""

import sys

from ..analysis.analyse import parse_input_shapes
from .. import api
from . import options
from .output import add_quiet_argument, add_strict_argument, tell, writing

NAME = "report"
HELP = "draw a net or a conversion as one self-contained HTML page"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="the net (the original, for a conversion)")
    parser.add_argument("converted", nargs="?", metavar="CONVERTED.prototxt",
                        help="the converted net, to show what changed")
    parser.add_argument("-o", "--output", required=True, metavar="REPORT.html",
                        type=options.output_file, help="where to write the page")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        type=options.input_shape, help="shape of an input blob (repeatable)")
    parser.add_argument("--phase", choices=("TRAIN", "TEST"),
                        help="which phase's layers to draw (default TEST, or TRAIN for a "
                             "train-only file)")
    parser.add_argument("--verify", metavar="RESULT.json",
                        help="the output of `caffe-surgery verify --json` for these nets")
    add_strict_argument(parser)
    add_quiet_argument(parser)


def run(args):
    shapes = parse_input_shapes(args.input_shape)
    inputs = [p for p in (args.net, args.converted, args.verify) if p]
    with writing(args, inputs, [args.output]) as (outputs, progress):
        result = api.report(args.net, args.converted, output=args.output, input_shapes=shapes,
                        phase=args.phase, verify=args.verify, strict=args.strict,
                        outputs=outputs, on_message=tell, progress=progress)
        outputs.commit()
    sys.stdout.write(result.text)
    return 0
