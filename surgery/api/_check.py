"""`surgery.api.check`: does a .caffemodel load into a net (Caffe's CopyTrainedLayersFrom,
without Caffe)."""

from dataclasses import dataclass

from .base import Log, Result, choose_phases, load


@dataclass
class Checked(Result):
    report: object          # analysis.check.CheckReport: a row per layer, `verdict`
    problems: bool = False  # the text lists only the layers that are not ok

    @property
    def ok(self):
        """Every layer with params gets weights Caffe accepts (False too when the
        analysis cannot tell)."""
        return self.report.ok

    @property
    def text(self):
        from ..analysis.check import format_report

        return format_report(self.report, show_ok=not self.problems) + "\n"

    def to_json(self):
        return self.report.to_dict()


def check(net, model, *, input_shapes=None, phase=None, problems=False, strict=False,
          on_message=None):
    """Check the weights at `model` against the net at `net` in `phase` (default: each
    phase in which the net is complete, as Caffe loads them into each)."""
    from ..analysis.analyse import analyse
    from ..analysis.check import compare, merge, wanted_shapes
    from ..io.caffemodel import read_caffemodel

    log = Log(on_message)
    summary = read_caffemodel(model)
    loaded = load(net, strict=strict, log=log)
    reports = []
    for p in choose_phases(phase, loaded.net, log=log):
        analysis = analyse(loaded.net, input_shapes=input_shapes or None, phase=p,
                           unknowns=loaded.unknowns)
        reports.append(compare(wanted_shapes(analysis), summary, analysis.unknown_reasons()))
    return log.done(Checked(merge(reports), problems))
