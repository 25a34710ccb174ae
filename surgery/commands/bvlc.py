"""Rewrite a fork's layers to BVLC Caffe's own layer types, wherever an exact form exists.

PSPNet's BN becomes BatchNorm (its stored statistics, its eps) and a Scale with a bias;
SegNet/ENet's inference BN a Scale; ConvolutionDepthwise a Convolution with one group per
channel; ReLU6 a Clip from 0 to 6; the fork field ceil_mode BVLC's round_mode. Each is
the same arithmetic (up to float rounding order; the Scale forms bit for bit). Layers
with no BVLC form (Interp, SegNet's Upsample, Axpy, ShuffleChannel, data readers of
forks...) stay as they are and are listed; --strict refuses them instead.

The net is written as a minimal edit of the input; with --weights, the weights are
streamed: the rewritten layers' blobs reshaped to the shapes BVLC checks (BatchNorm and
Scale take 1-D blobs) or made (BatchNorm's moving-average factor 1), every other layer
copied byte for byte. `caffe-surgery verify NET OUT --weights IN --weights-converted
OUT.caffemodel` proves the result computes what the original did.

Exit status: 0 written; 2 bad input, or with --strict a layer with no BVLC form
(nothing is written).
"""

import json

from ..errors import SurgeryError
from ..io.caffemodel import read_caffemodel
from ..transform.bvlc import form_weights, to_bvlc
from ..weights import writer
from . import options
from .output import (add_output_arguments, add_quiet_argument, finish, load, output_target,
                     write_net, writing)

NAME = "bvlc"
HELP = "rewrite fork layers (PSPNet BN, depthwise, ReLU6...) to exact BVLC Caffe layers"


def add_arguments(parser):
    parser.add_argument("net", metavar="NET.prototxt", help="net definition")
    parser.add_argument("--weights", metavar="IN.caffemodel", help="the trained weights of NET")
    parser.add_argument("--weights-out", metavar="OUT.caffemodel", type=options.output_file,
                        help="where to write the weights of the rewritten net")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a net that keeps a layer with no BVLC form, or a field "
                             "the schema does not know (default: keep them, and list the layers)")
    parser.add_argument("--dry-run", action="store_true", help="print the summary only")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_output_arguments(parser)
    add_quiet_argument(parser)


def run(args):
    inputs = [args.net] + ([args.weights] if args.weights else [])
    targets = output_target(args, inputs)
    if bool(args.weights) != bool(args.weights_out) and not (args.dry_run and args.weights):
        raise SurgeryError("--weights and --weights-out go together (the rewritten layers "
                           "need other blobs, so the old weights would not load)")
    if not args.dry_run:
        targets.append(args.weights_out)
    with writing(args, inputs, targets) as (outputs, _progress):
        loaded = load(args)
        unknown = {uf.layer for uf in loaded.binding.unknown_fields if uf.layer is not None}
        result = to_bvlc(loaded.net, unknown_layers=unknown)
        if args.strict and result.kept:
            kept = result.kept[0]
            raise SurgeryError(f"{kept.type} has no exact BVLC form ({kept.why}); without "
                               f"--strict it is kept and listed", layer=kept.name)
        if args.weights:
            summary = read_caffemodel(args.weights)
            plan = form_weights(result.forms, summary)
            writer.check(plan, summary)
            if not args.dry_run and args.weights_out:
                writer.write(plan, args.weights_out, source=summary, outputs=outputs)
        diff = write_net(args, outputs, loaded, result.net, write=not args.dry_run) \
            if (not args.dry_run or args.diff) else None
        text = json.dumps(result.to_json(), indent=1) + "\n" if args.json else \
            _format(result, args)
        finish(args, outputs, text, diff)
    return 0


def _format(result, args):
    lines = [f"rewrote {len(result.rewritten)} layer(s) to BVLC types"
             + (":" if result.rewritten else "")]
    width = max([len(r.name) for r in result.rewritten] + [len(k.name) for k in result.kept] + [5])
    for r in result.rewritten:
        into = " + ".join(f"{t} '{n}'" for n, t in r.into)
        lines.append(f"  {r.name:<{width}}  {r.type} -> {into}")
    if result.kept:
        lines.append(f"kept {len(result.kept)} layer(s) with no BVLC form (--strict refuses them):")
        lines.extend(f"  {k.name:<{width}}  {k.type}: {k.why}" for k in result.kept)
    else:
        lines.append("no fork layer is left: the net loads in BVLC Caffe as it is")
    if args.weights_out and not args.dry_run:
        lines.append(f"weights: {args.weights_out} (the rewritten layers' blobs made, every "
                     "other layer copied byte for byte)")
    return "\n".join(lines) + "\n"
