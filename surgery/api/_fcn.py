"""`surgery.api.fcn`: InnerProduct layers made convolutions, their weights transplanted."""

from dataclasses import dataclass
from typing import Optional

from .base import Result, editing, paired_weights


@dataclass
class Convolutionalized(Result):
    net: object                 # the new NetParameter
    plan: object                # transform.fcn.FcnPlan: `.layers` (source -> target), ...
    diff: Optional[str] = None  # the unified diff, when asked for

    @property
    def text(self):
        from ..transform.fcn import format_plan

        return format_plan(self.plan)

    def to_json(self):
        return self.plan.to_json()


def fcn(net, *, weights=None, weights_out=None, pad="same", rename="{name}-conv",
        decimate=(), input_shapes=None, output=None, dry_run=False, in_place=False,
        canonical=False, diff=False, strict=False, outputs=None, on_message=None,
        progress=None):
    """Make the net at `net` fully convolutional: each InnerProduct becomes a Convolution
    named `rename` (with {name}), `pad` "same" or "valid"; `decimate` takes specs like
    "fc6=3x3:1024". `weights` are transplanted into `weights_out` (streamed); the net
    goes to `output` as an edit of its file."""
    from ..transform.fcn import convolutionalize, parse_decimate, transplant, weight_plan

    shapes = input_shapes or None
    layers = parse_decimate(decimate)
    paired_weights(weights, weights_out, dry_run, "the converted layers have new names")
    with editing(net, output=output, in_place=in_place, dry_run=dry_run, weights=weights,
                 weights_out=weights_out, strict=strict, outputs=outputs,
                 on_message=on_message, progress=progress) as edit:
        new, plan = convolutionalize(edit.loaded.net, input_shapes=shapes, pad=pad,
                                     rename=rename, decimate=layers,
                                     unknowns=edit.loaded.unknowns)
        if weights:
            from ..io.caffemodel import read_caffemodel

            weight_plan(plan, read_caffemodel(weights))   # fits? (raises first)
        if not dry_run and weights_out:
            transplant(plan, weights, weights_out, outputs=edit.out)
        changes = edit.write(new, canonical=canonical, diff=diff)
    return edit.log.done(Convolutionalized(new, plan, changes))
