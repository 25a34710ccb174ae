"""`surgery.api.fold`: BatchNorm (and the Scale after it) folded into the layer before it."""

from ..errors import SurgeryError
from .base import Result, editing


class FoldResult(Result):
    """`folded`: the transform.fold.Folded (`.net`, `.folds`, `.left`, `.plan`); `diff`:
    the unified diff, when asked for. (A plain class: dataclasses would add its import
    to every fold.)"""

    def __init__(self, folded, diff=None):
        self.folded = folded
        self.diff = diff

    @property
    def net(self):
        return self.folded.net

    @property
    def text(self):
        from ..transform.fold import format_folded

        return format_folded(self.folded)

    def to_json(self):
        return self.folded.to_json()


def fold(net, weights, *, weights_out=None, phase=None, output=None, dry_run=False,
         in_place=False, canonical=False, diff=False, strict=False, outputs=None,
         on_message=None, progress=None):
    """Fold each normaliser of the net at `net` with its weights at `weights` into the
    layer before it (or one Scale); the folded weights go to `weights_out` (streamed),
    the net to `output`. `phase` "TEST" folds the inference net of a file whose TRAIN
    phase still updates its BN layers."""
    from ..io.caffemodel import read_caffemodel
    from ..transform.fold import fold as fold_net
    from ..weights import writer

    if not dry_run and not weights_out:
        raise SurgeryError("give --weights-out OUT.caffemodel for the folded weights (the "
                           "folded net does not load the old ones), or --dry-run")
    with editing(net, output=output, in_place=in_place, dry_run=dry_run, weights=weights,
                 weights_out=weights_out, strict=strict, outputs=outputs,
                 on_message=on_message, progress=progress) as edit:
        summary = read_caffemodel(weights)
        result = fold_net(edit.loaded.net, summary, phase=phase)
        writer.check(result.plan, summary)
        if not dry_run:     # the weights first: their values may still fail to read
            writer.write(result.plan, weights_out, source=summary, outputs=edit.out)
        changes = edit.write(result.net, canonical=canonical, diff=diff)
    return edit.log.done(FoldResult(result, changes))
