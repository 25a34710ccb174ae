"""`surgery.api.inspect`: a net's shapes, strides, receptive fields and costs, and the output
strides `dilate` reaches."""

from dataclasses import dataclass

from .base import Log, Result, choose_phases, load


@dataclass
class Inspected(Result):
    analyses: list      # [(phase, analysis.analyse.Analysis)], the first phase first
    reachable: dict     # {output stride: transform.reach.Reach: the flags `dilate -s N
                        # --head cut` needs (() for none) and the status of its result}

    @property
    def analysis(self):
        """The first phase's Analysis."""
        return self.analyses[0][1]

    @property
    def text(self):
        from ..report.text import format_table
        from ..transform.reach import format_reachable

        if len(self.analyses) == 1:
            text = format_table(self.analysis)
        else:
            text = "\n".join(f"phase {p}\n{format_table(a)}" for p, a in self.analyses)
        if self.reachable:
            text += ("reachable output strides (dilate -s N --head cut): "
                     f"{format_reachable(self.reachable)}\n")
        return text

    def to_json(self):
        from ..report.text import to_json

        (phase, first), others = self.analyses[0], self.analyses[1:]
        data = {"phase": phase, **to_json(first),
                "reachable_output_strides": [s for s, r in self.reachable.items()
                                             if not r.flags],
                "reachable_with_flags": {str(s): list(r.flags)
                                         for s, r in self.reachable.items() if r.flags},
                "reachable_status": {str(s): r.status for s, r in self.reachable.items()}}
        if others:
            data["other_phases"] = {p: {"phase": p, **to_json(a)} for p, a in others}
        return data


def inspect(net, *, input_shapes=None, phase=None, strict=False, on_message=None):
    """Analyse the net at `net` (a path) in `phase` (default: each phase in which it is
    complete and has layers of its own); the analysis warnings (misaligned joins, where
    shape inference stopped) are told as warnings, naming the phase when there are two."""
    from ..analysis.analyse import analyse

    log = Log(on_message)
    loaded = load(net, strict=strict, log=log)
    analyses = [(p, analyse(loaded.net, input_shapes=input_shapes or None, phase=p,
                            unknowns=loaded.unknowns))
                for p in choose_phases(phase, loaded.net, log=log)]
    for p, analysis in analyses:
        where = f" (phase {p})" if len(analyses) > 1 else ""
        for warning in analysis.warnings:
            log.warning(f"{warning}{where}")
    return log.done(Inspected(analyses, _reachable(loaded, analyses[0][1], input_shapes)))


def _reachable(loaded, analysis, shapes):
    """What `dilate -s N --head cut` accepts, with the flags each stride needs; {} when
    the net has no known stride."""
    from ..transform.plan import Options
    from ..transform.reach import reachable

    if analysis.deepest_blob() is None:
        return {}
    return reachable(loaded.net, Options(1, head="cut"), analysis=analysis,
                     input_shapes=shapes or None, unknowns=loaded.unknowns)
