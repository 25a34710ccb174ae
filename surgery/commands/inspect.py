"""Show a net's layers with Caffe-exact output shapes, cumulative stride and receptive field.

Shapes come from the net's Input layer or input header; override or supply them with
--input-shape NAME=N,C,H,W (repeatable). Totals cover parameters, FLOPs (multiply-adds)
and activation memory; the last line gives the output stride and receptive field at the
deepest blob that still lies on the image grid. Misaligned joins and the layer where
shape inference stopped (unknown or Python layers) are listed as warnings.
"""

import json
import sys

from ..analysis import analyse, parse_input_shapes
from ..report import format_table, to_json
from .output import add_strict_argument, load

NAME = "inspect"
HELP = "show shapes, strides, receptive fields and costs of a net"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="net definition")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        help="shape of an input blob (repeatable)")
    parser.add_argument("--phase", choices=("TRAIN", "TEST"), default="TEST",
                        help="which phase's layers to analyse (default TEST)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_strict_argument(parser)


def run(args):
    shapes = parse_input_shapes(args.input_shape)
    loaded = load(args)
    analysis = analyse(loaded.net, input_shapes=shapes or None, phase=args.phase,
                       unknowns=loaded.unknowns)
    if args.json:
        json.dump(to_json(analysis), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table(analysis))
    return 0
