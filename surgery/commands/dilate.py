"""Rewrite a net to a smaller output stride (the exact a-trous rewrite).

Strides are removed from the end of the net backwards until the output stride is N; every
later layer with a kernel larger than 1 is dilated by the product of the strides removed
before its input, with its padding scaled to match. Kernel shapes do not change, so the
original .caffemodel loads unchanged, and each kernel sees the receptive field it was
trained on: the converted net reproduces the original activations on the subsampled grid.

A layer that loses its stride keeps its own dilation (its input grid is unchanged);
--convention pspnet also dilates it, as PSPNet's published files do (not exact).
--multi-grid a,b,c gives the units of the last converted stage the rates a,b,c times the
stage rate, as TF DeepLab v3 and detectron2 do (mmseg treats the values as absolute
dilations instead); not exact.

Pooling has no dilation field, so a pooling window after a removed stride cannot be exact:
--pooling strict (default) stops and names it, --pooling cover widens the window to
(k-1)*f+1 and reports it as approximate. A classifier head whose weights depend on the map
size stops the run under --head error (default); --head cut removes it, --head global
turns its pooling into global pooling. --cut-after BLOB keeps only what computes BLOB.

Several nets (an experiment's train and test nets) convert together: `dilate TRAIN TEST
-s N -o DIR/` writes DIR/TRAIN and DIR/TEST, and refuses in one line when a layer they
share would get a different window in each. All files are written, or none.

Exit status: 0 written; 1 when --weights do not load into the result (nothing is written);
2 bad input or an impossible request (nothing is written).
"""

import os

from ..analysis.analyse import parse_input_shapes
from .. import api
from ..transform.dilate import CONVENTIONS, DILATION_CHOICES, HEAD_CHOICES, POOLING_CHOICES
from ..errors import SurgeryError
from . import options
from .output import (add_output_arguments, finish, output_target, tell,
                     writing)

NAME = "dilate"
HELP = "rewrite a net to a smaller output stride, keeping its weights loadable"


def add_arguments(parser):
    parser.add_argument("nets", metavar="NET.prototxt", nargs="+",
                        help="net definition; several (a train net and its test net) convert "
                             "together, into the folder -o names")
    parser.add_argument("--output-stride", "-s", type=options.positive_int, required=True, metavar="N",
                        help="target output stride, e.g. 16 or 8")
    parser.add_argument("--head", choices=HEAD_CHOICES, default="error",
                        help="what to do with a classifier head (default error)")
    parser.add_argument("--pooling", choices=POOLING_CHOICES, default="strict",
                        help="pooling windows after a removed stride (default strict)")
    parser.add_argument("--dilation", choices=DILATION_CHOICES, default="strict",
                        help="coarsening: a kernel whose dilation or pad does not divide stops "
                             "the run (strict, default) or is rounded (round, approximate)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="exact",
                        help="exact (default) or pspnet (also dilate the formerly strided layer)")
    parser.add_argument("--multi-grid", type=options.positive_ints, metavar="A,B,C",
                        help="DeepLab v3 unit rates for the last converted stage, multiplied by "
                             "the stage rate (mmseg treats them as absolute dilations)")
    parser.add_argument("--cut-after", metavar="BLOB", type=options.name, help="keep only the layers that compute BLOB")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        type=options.input_shape,
                        help="input size used to decide size-dependent choices (repeatable)")
    parser.add_argument("--weights", metavar="MODEL.caffemodel",
                        help="also check that these weights load into the result")
    parser.add_argument("--weights-out", metavar="OUT.caffemodel", type=options.output_file,
                        help="write --weights for the result: layers given new kernels (an "
                             "upsampling Deconvolution) get new bilinear weights, every other "
                             "layer is copied byte for byte")
    add_output_arguments(parser)


def run(args):
    shapes = parse_input_shapes(args.input_shape) or None
    args.net = args.nets[0]      # the shared output options name the first
    inputs = list(args.nets) + ([args.weights] if args.weights else [])
    if len(args.nets) > 1:
        targets = _targets(args, inputs)
    else:
        targets = output_target(args, inputs)
        args.outputs = args.output
    if not args.dry_run:
        targets.append(args.weights_out)
    with writing(args, inputs, targets) as (outputs, progress):
        result = api.dilate(args.nets, output_stride=args.output_stride, head=args.head,
                        pooling=args.pooling, dilation=args.dilation,
                        convention=args.convention, multi_grid=args.multi_grid,
                        cut_after=args.cut_after,
                        input_shapes=shapes,
                        weights=args.weights, weights_out=args.weights_out,
                        output=args.outputs, dry_run=args.dry_run, canonical=args.canonical,
                        diff=bool(args.diff), strict=args.strict, outputs=outputs,
                        on_message=tell, progress=progress)
        text = _json(result) if args.json else result.text
        finish(args, outputs, text, result.diff)  # not ok: nothing was staged or written
    return 0 if result.ok else 1


def _targets(args, inputs):
    """With several nets: each is written under its own name into the folder -o names
    (or over itself with --in-place). Returns the files to claim."""
    if args.diff == "-" and args.json:
        raise SurgeryError("--diff - and --json both want stdout; give --diff a file name")
    names = [os.path.basename(net) for net in args.nets]
    if len(set(names)) != len(names):
        raise SurgeryError("two of the nets have the same file name, so one folder cannot "
                           "hold both results; convert them apart")
    if args.in_place:
        args.outputs = list(args.nets)
    elif args.output is not None:
        if not os.path.isdir(args.output):
            raise SurgeryError("with several nets, -o names an existing folder for the results",
                               file=args.output)
        args.outputs = [os.path.join(args.output, name) for name in names]
    elif args.dry_run:
        args.outputs = [None] * len(names)
    else:
        raise SurgeryError("give -o FOLDER for the results, --in-place to rewrite the "
                           "inputs, or --dry-run for the summaries only")
    return ([] if args.dry_run else list(args.outputs)) + [args.diff]


def _json(result):
    import json     # only for --json: a plain run does not pay for the import

    return json.dumps(result.to_json(), indent=1) + "\n"
