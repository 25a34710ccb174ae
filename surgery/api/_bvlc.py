"""`surgery.api.bvlc`: fork layers rewritten to BVLC Caffe's own types wherever an exact form
exists."""

from dataclasses import dataclass
from typing import Optional

from ..errors import SurgeryError
from .base import Result, editing, paired_weights


@dataclass
class BvlcRewritten(Result):
    result: object                    # transform.bvlc.BvlcResult: `.rewritten`, `.kept`
    weights_out: Optional[str] = None  # where the weights were written, or None
    diff: Optional[str] = None        # the unified diff, when asked for

    @property
    def net(self):
        return self.result.net

    def to_json(self):
        return self.result.to_json()

    @property
    def text(self):
        r = self.result
        lines = [f"rewrote {len(r.rewritten)} layer(s) to BVLC types"
                 + (":" if r.rewritten else "")]
        width = max([len(x.name) for x in r.rewritten] + [len(k.name) for k in r.kept] + [5])
        for x in r.rewritten:
            into = " + ".join(f"{t} '{n}'" for n, t in x.into)
            lines.append(f"  {x.name:<{width}}  {x.type} -> {into}")
        if r.kept:
            lines.append(f"kept {len(r.kept)} layer(s) with no BVLC form (--strict refuses "
                         "them):")
            lines.extend(f"  {k.name:<{width}}  {k.type}: {k.why}" for k in r.kept)
        else:
            lines.append("no fork layer is left: the net loads in BVLC Caffe as it is")
        if self.weights_out:
            lines.append(f"weights: {self.weights_out} (the rewritten layers' blobs made, "
                         "every other layer copied byte for byte)")
        return "\n".join(lines) + "\n"


def bvlc(net, *, weights=None, weights_out=None, input_shapes=None, output=None,
         dry_run=False, in_place=False, canonical=False, diff=False, strict=False,
         outputs=None, on_message=None, progress=None):
    """Rewrite the fork layers of the net at `net` that have an exact BVLC form (PSPNet BN,
    SegNet's inference BN, depthwise, ReLU6, ceil_mode, Axpy, a whole-factor zoom Interp);
    the others are kept and listed (`strict`: refused). `weights` are streamed into
    `weights_out` with the rewritten layers' blobs made; the net goes to `output` as an
    edit of its file. `input_shapes` ({name: shape}) sizes inputs the net leaves open
    (a data layer's tops), for the forms that name a channel count."""
    from ..io.caffemodel import read_caffemodel
    from ..transform.bvlc import form_weights, to_bvlc
    from ..weights import writer

    paired_weights(weights, weights_out, dry_run, "the rewritten layers need other blobs")
    with editing(net, output=output, in_place=in_place, dry_run=dry_run, weights=weights,
                 weights_out=weights_out, strict=strict, outputs=outputs,
                 on_message=on_message, progress=progress) as edit:
        loaded = edit.loaded
        unknown = {uf.layer for uf in loaded.binding.unknown_fields if uf.layer is not None}
        result = to_bvlc(loaded.net, unknown_layers=unknown,
                         shapes=_shapes(loaded, input_shapes))
        if strict and result.kept:
            kept = result.kept[0]
            raise SurgeryError(f"{kept.type} has no exact BVLC form ({kept.why}); without "
                               f"--strict it is kept and listed", layer=kept.name)
        written = None
        if weights:
            summary = read_caffemodel(weights)
            plan = form_weights(result.forms, summary)
            writer.check(plan, summary)
            if not dry_run and weights_out:
                writer.write(plan, weights_out, source=summary, outputs=edit.out)
                written = weights_out
        changes = edit.write(result.net, canonical=canonical, diff=diff)
    return edit.log.done(BvlcRewritten(result, written, changes))


def _shapes(loaded, input_shapes=None):
    """{blob: shape} of every phase in which the net builds (a form that names a channel
    count reads its input's); empty where shape inference cannot go. An error in
    `input_shapes` (an input the net lacks, a wrong rank) is refused."""
    from ..analysis.analyse import analyse
    from ..analysis.graph import complete_phases

    shapes = {}
    built, _ = complete_phases(loaded.net)
    for phase in built:
        try:
            analysis = analyse(loaded.net, input_shapes=input_shapes, phase=phase,
                               unknowns=loaded.unknowns)
        except SurgeryError:
            if input_shapes:        # what the user gave is wrong: say so
                raise
            continue
        for blob, shape in analysis.shapes.items():
            if shape is not None:
                shapes.setdefault(blob, shape)
    return shapes
