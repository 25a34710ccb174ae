"""Rewrite a legacy Caffe net or solver prototxt in the current format.

A net goes through every step of Caffe's own upgrader (V0 layers with their padding
layers, V1 `layers` with enum types and blobs_lr/weight_decay, data-layer transform
fields, the input header, BatchNorm param specs), then DeepLab v1's `hole` becomes
`dilation`. A solver gets Caffe's solver upgrade (`solver_type` enum -> `type` string),
written as an edit of the file. What was changed is listed on stderr. Without -o the
result goes to stdout. A file with nothing to upgrade is written back byte for byte; an
upgraded net in protobuf's standard formatting, which is refused when that would lose a
`${NAME}` placeholder in a number field or a field the schema does not know.
"""

import sys

from .. import api
from . import options
from .output import add_strict_argument, tell, writing

NAME = "upgrade"
HELP = ("convert a legacy net (V0, V1, input header, DeepLab hole) or solver (solver_type) "
        "prototxt to the current format")


def add_arguments(parser):
    parser.add_argument("input", metavar="IN.prototxt", help="net or solver prototxt to upgrade")
    parser.add_argument("-o", "--output", metavar="OUT.prototxt", type=options.output_file_or_stdout,
                        help="where to write the upgraded file (default: stdout)")
    parser.add_argument("--in-place", action="store_true",
                        help="allow (or, without -o, choose) overwriting the input file")
    add_strict_argument(parser)


def run(args):
    output = args.output
    if output is None and args.in_place:
        output = args.input
    to_stdout = output in (None, "-")
    with writing(args, [args.input], [output]) as (outputs, _progress):
        result = api.upgrade(args.input, output=None if to_stdout else output,
                         strict=args.strict, outputs=outputs, on_message=tell)
        if to_stdout:
            sys.stdout.write(result.text)
        else:
            outputs.commit()
    for note in result.changes or ["already in the current format; nothing to upgrade"]:
        print(f"caffe-surgery: upgrade: {note}", file=sys.stderr)
    return 0
