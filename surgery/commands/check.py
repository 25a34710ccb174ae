"""Check, without running Caffe, that a .caffemodel loads into a net.

Does what Caffe's Net::CopyTrainedLayersFrom does: layers are matched by
name; weights for layers the net lacks are ignored (listed as unused); a
matched layer needs exactly as many blobs as it has params, each of the
param's shape (legacy 4-D blob dims are accepted when Caffe accepts them).
Net layers with params that get no weights are listed as not initialised.
Exit status 0 when every layer with params loads, 1 otherwise, including when the
analysis cannot tell (an unknown layer type, an input size only the data decides):
the last line then says `cannot tell` and why.

Param shapes of InnerProduct layers depend on the input size: when the net
declares none, give one with --input-shape data=1,3,224,224.

Without --phase the net is checked in the phase in which it is complete, and in both
when both are (a train_val file: Caffe loads the weights into the TRAIN and TEST nets).
"""

import json
import sys

from ..analysis.analyse import parse_input_shapes
from .. import api
from . import options
from .output import add_phase_argument, add_strict_argument, tell

NAME = "check"
HELP = "check that a .caffemodel's blobs fit a net (what Caffe checks when loading weights)"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="net definition")
    parser.add_argument("model", metavar="MODEL.caffemodel", help="weights to load into it")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        type=options.input_shape,
                        help="shape of an input blob (repeatable)")
    add_phase_argument(parser, "check")
    parser.add_argument("--problems", action="store_true",
                        help="list only layers that are not ok")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_strict_argument(parser)


def run(args):
    result = api.check(args.net, args.model, input_shapes=parse_input_shapes(args.input_shape),
                   phase=args.phase, problems=args.problems, strict=args.strict,
                   on_message=tell)
    sys.stdout.write(json.dumps(result.to_json()) + "\n" if args.json else result.text)
    return 0 if result.ok else 1
