"""Fold BatchNorm (and the Scale after it) into the layer before it, for deployment.

A BatchNorm, PSPNet BN or SegNet BN (bn_mode INFERENCE), optionally followed by a Scale,
right after a Convolution, Deconvolution or InnerProduct whose output feeds nothing else
goes into that layer's weights and bias (a bias is added where there was none). Each
layer's own eps and BVLC's stored moving-average factor are used. A group with no such
layer before it (pre-activation ResNets, DenseNets) becomes one exact Scale. A BatchNorm
that normalises with the batch's statistics is left in place and listed, with why.

The prototxt is written as a minimal edit of the input; the caffemodel is streamed:
folded layers get their new blobs, the removed layers are dropped, every other layer is
copied byte for byte. `caffe-surgery verify NET OUT --weights IN --weights-converted
OUT.caffemodel` checks the result.

A net that describes a TRAIN phase in which training still updates a BN group is refused
unless --phase TEST asks for the inference net.

Exit status: 0 written; 2 bad input or a refused net (nothing is written).
"""

from .. import api
from . import options
from .output import add_output_arguments, run_edit, tell

NAME = "fold"
HELP = "fold BatchNorm/Scale into the convolutions before them, for deployment"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="net definition")
    parser.add_argument("--weights", required=True, metavar="IN.caffemodel",
                        help="the trained weights of NET")
    parser.add_argument("--weights-out", metavar="OUT.caffemodel", type=options.output_file,
                        help="where to write the folded weights (needed unless --dry-run)")
    parser.add_argument("--phase", choices=("TEST",),
                        help="fold the TEST net even though TRAIN still updates its BN layers")
    add_output_arguments(parser)


def run(args):
    def call(outputs, progress):
        return api.fold(args.net, args.weights, weights_out=args.weights_out, phase=args.phase,
                        output=args.output, dry_run=args.dry_run, canonical=args.canonical,
                        diff=bool(args.diff), strict=args.strict, outputs=outputs,
                        on_message=tell, progress=progress)
    return run_edit(args, call)
