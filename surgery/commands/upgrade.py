"""Rewrite a legacy Caffe prototxt in the current format.

Converts V1 `layers { type: CONVOLUTION }` entries to `layer { type: "Convolution" }`
(blobs_lr/weight_decay become `param { lr_mult decay_mult }`), turns a net-level
input/input_dim/input_shape header into an Input layer named "input", and turns
DeepLab v1's `hole` into `dilation`. What was changed is listed on stderr.
Without -o the result goes to stdout.
"""

import sys

from ..io.prototxt import format_prototxt, load_prototxt_with_notes, save_prototxt

NAME = "upgrade"
HELP = "convert a legacy (V1, input header, DeepLab hole) prototxt to the current format"


def add_arguments(parser):
    parser.add_argument("input", metavar="IN.prototxt", help="net prototxt to upgrade")
    parser.add_argument("-o", "--output", metavar="OUT.prototxt",
                        help="where to write the upgraded net (default: stdout)")
    parser.add_argument("--in-place", action="store_true",
                        help="allow (or, without -o, choose) overwriting the input file")


def run(args):
    net, notes = load_prototxt_with_notes(args.input)
    output = args.output
    if output is None and args.in_place:
        output = args.input
    if output is None or output == "-":
        sys.stdout.write(format_prototxt(net))
    else:
        save_prototxt(net, output, inputs=(args.input,), in_place=args.in_place)
    for note in notes or ["already in the current format; nothing to upgrade"]:
        print(f"caffe-surgery: upgrade: {note}", file=sys.stderr)
    return 0
