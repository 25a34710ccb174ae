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

Exit status: 0 written; 1 when --weights do not load into the result (nothing is written);
2 bad input or an impossible request (nothing is written).
"""

from ..analysis.analyse import analyse, parse_input_shapes
from ..transform.dilate import CONVENTIONS, DILATION_CHOICES, HEAD_CHOICES, POOLING_CHOICES, dilate
from ..report.text import format_changes
from ..errors import SurgeryError
from . import options
from .output import (add_output_arguments, add_quiet_argument, finish, load, output_target,
                     write_net, writing)

NAME = "dilate"
HELP = "rewrite a net to a smaller output stride, keeping its weights loadable"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="net definition")
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
    parser.add_argument("--dry-run", action="store_true", help="print the summary only")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_output_arguments(parser)
    add_quiet_argument(parser)


def run(args):
    shapes = parse_input_shapes(args.input_shape) or None
    inputs = [args.net] + ([args.weights] if args.weights else [])
    targets = output_target(args, inputs)
    if args.weights_out and not args.weights:
        raise SurgeryError("--weights-out needs --weights (the trained weights to convert)")
    if not args.dry_run:
        targets.append(args.weights_out)
    with writing(args, inputs, targets) as (outputs, _progress):
        return _run(args, outputs, shapes, inputs)


def _run(args, outputs, shapes, inputs):
    loaded = load(args)
    new, report = dilate(loaded.net, output_stride=args.output_stride, head=args.head,
                         pooling=args.pooling, convention=args.convention, dilation=args.dilation,
                         multi_grid=args.multi_grid, cut_after=args.cut_after,
                         input_shapes=shapes, unknowns=loaded.unknowns)
    if report.resized and not args.weights_out and not args.dry_run:
        raise SurgeryError("its kernel changes, so its weights must be rewritten: give "
                           "--weights MODEL.caffemodel --weights-out NEW.caffemodel",
                           layer=report.resized[0])
    check, summary = None, None
    if args.weights:
        from ..analysis.check import compare, whole_shapes
        from ..io.caffemodel import read_caffemodel

        after = analyse(new, input_shapes=shapes, unknowns=loaded.unknowns)
        expected = whole_shapes(after.param_shapes)
        summary = read_caffemodel(args.weights)
        if report.resized:     # the weights given are the original's for these layers
            original = analyse(loaded.net, input_shapes=shapes, unknowns=loaded.unknowns)
            expected.update(whole_shapes({name: original.param_shapes.get(name)
                                          for name in report.resized}))
        check = compare(expected, summary, after.unknown_reasons())
    ok = check is None or check.ok
    planned = None
    if ok and summary is not None and (report.resized or args.weights_out):
        from ..weights import reweight

        planned = reweight.plan(summary, loaded.net, new, report.resized)  # raises first
    diff = write_net(args, outputs, loaded, new, write=not args.dry_run) \
        if ok and (not args.dry_run or args.diff) else None
    if planned is not None and args.weights_out and not args.dry_run:
        from ..weights import writer

        writer.write(planned, args.weights_out, source=summary, outputs=outputs)
    if args.json:
        import json     # only for --json: a plain run does not pay for the import

        data = report.to_json()
        if check is not None:
            data["weights"] = check.to_dict()
        text = json.dumps(data, indent=1) + "\n"
    else:
        text = format_changes(report)
        if check is not None:
            text += ("weights: load into the result\n" if check.ok else
                     f"weights checked against the result: {check.verdict}; nothing "
                     "written (run `caffe-surgery check` for details)\n")
    finish(args, outputs, text, diff)    # not ok: nothing was staged, so nothing is written
    return 0 if ok else 1
