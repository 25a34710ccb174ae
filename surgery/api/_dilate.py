"""`surgery.api.dilate`: one net, or an experiment's nets together, at another output stride."""

import os
from typing import NamedTuple, Optional

from ..errors import SurgeryError
from .base import Log, Result, load, transaction, write_net


class DilatedNet(NamedTuple):
    path: str              # the input file
    net: object            # the converted NetParameter
    report: object         # transform.dilate.DilateReport: changes, grids, exactness
    weights: object        # analysis.check.CheckReport of --weights on it, or None
    output: Optional[str]  # where it was written, or None

    def to_json(self):
        data = self.report.to_json()
        if self.weights is not None:
            data["weights"] = self.weights.to_dict()
        return data

    @property
    def text(self):
        from ..report.text import format_changes

        text = format_changes(self.report)
        if self.weights is not None:
            text += ("weights: load into the result\n" if self.weights.ok else
                     f"weights checked against the result: {self.weights.verdict}; nothing "
                     "written (run `caffe-surgery check` for details)\n")
        return text


class Dilated(Result):
    """`nets`: [DilatedNet], in the order given; `diff`: the unified diff of every net
    written, when asked for. (A plain class: dataclasses would cost the CLI's dilate
    start-up a tenth of its time.)"""

    def __init__(self, nets, diff=None):
        self.nets = nets
        self.diff = diff

    @property
    def net(self):
        """The (first) converted NetParameter."""
        return self.nets[0].net

    @property
    def report(self):
        """The (first) net's DilateReport."""
        return self.nets[0].report

    @property
    def ok(self):
        """False when --weights do not load into a result (nothing was written)."""
        return all(n.weights is None or n.weights.ok for n in self.nets)

    @property
    def text(self):
        if len(self.nets) == 1:
            return self.nets[0].text
        return "".join(f"== {n.path}\n{n.text}" for n in self.nets)

    def to_json(self):
        if len(self.nets) == 1:
            return self.nets[0].to_json()
        return {"nets": [dict(n.to_json(), net=n.path) for n in self.nets]}


def dilate(nets, *, output_stride, head="error", pooling="strict", dilation="strict",
           convention="exact", multi_grid=None, cut_after=None, input_shapes=None,
           weights=None, weights_out=None, output=None, dry_run=False, in_place=False,
           canonical=False, diff=False, strict=False, outputs=None, on_message=None,
           progress=None):
    """Convert `nets` (a path, or a list of paths converted together) to `output_stride`.

    `output` is where the result goes: a path for one net, a list of paths (one per net,
    None for one not written) for several; with `in_place` and no `output`, each input
    is rewritten. `weights` are checked against each result (not loading: `ok` False,
    nothing written); `weights_out` gets them converted (layers given new kernels
    re-made, every other layer copied byte for byte). The other options are the CLI's.
    Returns a Dilated: `.net`, `.report` (changes, grids, exactness), `.nets` for each."""
    from ..transform.dilate import dilate_together

    paths = [os.fspath(nets)] if isinstance(nets, (str, os.PathLike)) else \
        [os.fspath(n) for n in nets]
    targets = _targets(paths, output, in_place)
    if weights_out and not weights:
        raise SurgeryError("--weights-out needs --weights (the trained weights to convert)")
    log = Log(on_message)
    claims = [] if dry_run else targets + [weights_out]
    inputs = paths + ([weights] if weights else [])
    with transaction(outputs, inputs=inputs, targets=claims, in_place=in_place,
                     progress=progress) as out:
        loaded = [load(path, strict=strict, log=log) for path in paths]
        results = dilate_together([(path, f.net, f.unknowns) for path, f in zip(paths, loaded)],
                                  output_stride=output_stride, head=head, pooling=pooling,
                                  convention=convention, dilation=dilation,
                                  multi_grid=multi_grid, cut_after=cut_after,
                                  input_shapes=input_shapes)
        resized = [name for _, report in results for name in report.resized]
        if resized and not weights_out and not dry_run and any(targets):
            raise SurgeryError("its kernel changes, so its weights must be rewritten: give "
                               "--weights MODEL.caffemodel --weights-out NEW.caffemodel",
                               layer=resized[0])
        checks, planned, summary = [None] * len(results), None, None
        if weights:
            from ..io.caffemodel import read_caffemodel

            summary = read_caffemodel(weights)
            checks = [_check(f, new, report, summary, input_shapes)
                      for f, (new, report) in zip(loaded, results)]
        ok = all(check is None or check.ok for check in checks)
        if ok and summary is not None and (resized or weights_out):
            planned = _weight_plan(summary, loaded, results)        # raises before writing
        diffs = []
        for f, (new, _), target in zip(loaded, results, targets):
            writes = not dry_run and target is not None
            if ok and (writes or diff):
                diffs.append(write_net(f, new, out, target=target, write=writes,
                                       canonical=canonical, diff=diff, log=log))
        if planned is not None and weights_out and not dry_run:
            from ..weights import writer

            writer.write(planned, weights_out, source=summary, outputs=out)
    written = ok and not dry_run
    done = [DilatedNet(path, new, report, check, target if written else None)
            for path, (new, report), check, target in zip(paths, results, checks, targets)]
    return log.done(Dilated(done, "".join(d for d in diffs if d) or None))


def _targets(paths, output, in_place):
    """The output file of each net (None: not written)."""
    if output is None:
        return list(paths) if in_place else [None] * len(paths)
    if isinstance(output, (str, os.PathLike)):
        if len(paths) > 1:
            raise SurgeryError("several nets need one output each: give a list of paths")
        return [os.fspath(output)]
    output = [None if o is None else os.fspath(o) for o in output]
    if len(output) != len(paths):
        raise SurgeryError(f"{len(paths)} nets and {len(output)} outputs: give one output "
                           "per net")
    return output


def _check(loaded, new, report, summary, shapes):
    """Whether `summary` loads into the converted net (the original's weights for the
    layers given new kernels, which are rewritten)."""
    from ..analysis.analyse import analyse
    from ..analysis.check import compare, whole_shapes

    after = analyse(new, input_shapes=shapes, unknowns=loaded.unknowns)
    expected = whole_shapes(after.param_shapes)
    if report.resized:     # the weights given are the original's for these layers
        original = analyse(loaded.net, input_shapes=shapes, unknowns=loaded.unknowns)
        expected.update(whole_shapes({name: original.param_shapes.get(name)
                                      for name in report.resized}))
    return compare(expected, summary, after.unknown_reasons())


def _weight_plan(summary, loaded, results):
    """One weight plan for every net: the layers each gives new kernels (a layer the nets
    share gets the same rewrite in each, which dilate_together checked)."""
    from ..weights import reweight
    from ..weights.plan import WeightPlan

    edits = {}
    for f, (new, report) in zip(loaded, results):
        for edit in reweight.plan(summary, f.net, new, report.resized).edit:
            edits.setdefault(edit.name, edit)
    return WeightPlan(edit=tuple(edits.values()))
