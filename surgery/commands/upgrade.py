"""Rewrite a legacy Caffe prototxt in the current format.

Converts V1 `layers { type: CONVOLUTION }` entries to `layer { type: "Convolution" }`
(blobs_lr/weight_decay become `param { lr_mult decay_mult }`), turns a net-level
input/input_dim/input_shape header into an Input layer named "input", and turns
DeepLab v1's `hole` into `dilation`. What was changed is listed on stderr.
Without -o the result goes to stdout. A file with nothing to upgrade is written back
byte for byte; an upgraded one in protobuf's standard formatting, which is refused
when that would lose a `${NAME}` placeholder in a number field or a field the schema
does not know.
"""

import sys

from ..io.atomic import write_atomic
from ..io.preserve import refuse_lossy
from ..io.prototxt import format_prototxt
from . import options
from .output import add_strict_argument, load

NAME = "upgrade"
HELP = "convert a legacy (V1, input header, DeepLab hole) prototxt to the current format"


def add_arguments(parser):
    parser.add_argument("input", metavar="IN.prototxt", help="net prototxt to upgrade")
    parser.add_argument("-o", "--output", metavar="OUT.prototxt", type=options.output_file_or_stdout,
                        help="where to write the upgraded net (default: stdout)")
    parser.add_argument("--in-place", action="store_true",
                        help="allow (or, without -o, choose) overwriting the input file")
    add_strict_argument(parser)


def run(args):
    loaded = load(args, args.input)
    if loaded.notes:
        refuse_lossy(loaded, "the upgraded net is written in protobuf's standard formatting")
        text = format_prototxt(loaded.net)
    else:
        text = loaded.text
    output = args.output
    if output is None and args.in_place:
        output = args.input
    if output is None or output == "-":
        sys.stdout.write(text)
    else:
        write_atomic(output, text.encode("utf-8"), inputs=(args.input,), in_place=args.in_place)
    for note in loaded.notes or ["already in the current format; nothing to upgrade"]:
        print(f"caffe-surgery: upgrade: {note}", file=sys.stderr)
    return 0
