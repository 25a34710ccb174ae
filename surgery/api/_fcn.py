"""`surgery.api.fcn`: InnerProduct layers made convolutions, their weights transplanted."""

from dataclasses import dataclass
from typing import Optional

from .base import Log, Result, load, net_target, paired_weights, transaction, write_net


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
    target = net_target(net, output, in_place)
    paired_weights(weights, weights_out, dry_run, "the converted layers have new names")
    log = Log(on_message)
    inputs = [net] + ([weights] if weights else [])
    claims = [] if dry_run else [target, weights_out]
    with transaction(outputs, inputs=inputs, targets=claims, in_place=in_place,
                     progress=progress) as out:
        loaded = load(net, strict=strict, log=log)
        new, plan = convolutionalize(loaded.net, input_shapes=shapes, pad=pad, rename=rename,
                                     decimate=layers, unknowns=loaded.unknowns)
        if weights:
            from ..io.caffemodel import read_caffemodel

            weight_plan(plan, read_caffemodel(weights))   # fits? (raises first)
        if not dry_run and weights_out:
            transplant(plan, weights, weights_out, outputs=out)
        writes = not dry_run and target is not None
        changes = write_net(loaded, new, out, target=target, write=writes, canonical=canonical,
                            diff=diff, log=log) if writes or diff else None
    return log.done(Convolutionalized(new, plan, changes))
