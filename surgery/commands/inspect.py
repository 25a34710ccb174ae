"""Show a net's layers with Caffe-exact output shapes, cumulative stride and receptive field.

Shapes come from the net's Input layer or input header; override or supply them with
--input-shape NAME=N,C,H,W (repeatable). Totals cover parameters, FLOPs (multiply-adds)
and activation memory; the last line gives the output stride and receptive field at the
deepest blob that still lies on the image grid. Misaligned joins and the layer where
shape inference stopped (unknown or Python layers) are warnings, on stderr (and in the
JSON's "warnings").

Without --phase the net is analysed in the phase in which it is complete (a train file
whose data layer exists only in TRAIN: TRAIN), and in both when both are complete and
their layers differ (a train_val file: one table per phase; JSON adds `other_phases`).
"""

import json
import sys

from ..analysis.analyse import parse_input_shapes
from .. import api
from . import options
from .output import add_phase_argument, add_strict_argument, tell

NAME = "inspect"
HELP = "show shapes, strides, receptive fields and costs of a net"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="net definition")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        type=options.input_shape,
                        help="shape of an input blob (repeatable)")
    add_phase_argument(parser, "analyse")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_strict_argument(parser)


def run(args):
    result = api.inspect(args.net, input_shapes=parse_input_shapes(args.input_shape),
                     phase=args.phase, strict=args.strict, on_message=tell)
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(result.text)
    return 0
