"""Numeric proof that a converted net computes what the original computed.

Both nets run on the same seeded random input with the same weights. A blob of
the converted net lives on a finer grid; the position matching the original's
position i is found from the geometry of BOTH nets, never from what the
conversion claims: with centre c and stride S per axis,
    c_conv + S_conv*j = c_orig + S_orig*i   =>   j = offset + f*i,
    f = S_orig / S_conv,  offset = (c_orig - c_conv) / S_conv,
and both must be non-negative integers. Only positions present in both are
compared. What the conversion claims comes from the one judgement every command reads
(transform/judge.py: the pair of nets judged as `dilate` judges its own result): blobs
computed from a layer marked APPROXIMATE or ADAPTED are reported with their error but
never fail the check, unless --strict; every other blob is held to the tolerance.

At an input size other than the one the weights were made for, a classifier's
InnerProduct on a map expects other weight shapes (its weights are size-bound). Such a
head, and all computed from it, is left out of the run: only the blobs before it are
compared, and the report says so. Weights that do not fit anywhere else are refused.

Neither engine reads the user's files as they are: each net is loaded once (`load_net`,
with `--define` filling a template), made runnable for the engine (engines/prepare.py:
data layers become Inputs, layers that only score or write are left out, fork layers
become their BVLC form or a Python layer), and written to a temporary folder; where the
rewritten layers need other blobs, a copy of the weights with them made goes there too.
"""

import os
import tempfile
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..analysis.analyse import analyse
from ..analysis.check import MISMATCH, compare, first_problem, whole_shapes
from ..analysis.graph import complete_phases
from .engine import CaffeUnreadable, choose_engine, get_engine
from .prepare import prepare
from ..errors import SurgeryError
from ..transform.bvlc import form_weights
from ..transform.grid import SAME, Grid, num
from ..io import template
from ..io.caffemodel import read_caffemodel
from ..io.netfile import load_text
from ..io.prototxt import read_text
from ..transform.judge import judge
from ..weights.writer import write as write_weights

OK, FAIL, APPROXIMATE, NO_GRID = "ok", "FAIL", "approximate", "no-grid"


@dataclass
class BlobResult:
    blob: str
    status: str
    approximate: bool
    factor: Optional[tuple] = None          # (fh, fw)
    offset: Optional[tuple] = None          # (oh, ow)
    compared: Optional[tuple] = None        # compared positions (h, w), or the whole shape
    max_abs_error: Optional[float] = None
    rel_error: Optional[float] = None
    max_abs_original: Optional[float] = None
    note: str = ""
    claimed: bool = False                   # the conversion claims it exact

    def to_dict(self):
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
        for key in ("factor", "offset"):
            if out[key] is not None:
                out[key] = [num(v) for v in out[key]]
        return out


@dataclass
class VerifyReport:
    original: str
    converted: str
    engine: str
    tolerance: float
    inputs: dict
    blobs: list = field(default_factory=list)
    approximate_layers: list = field(default_factory=list)
    strict: bool = False  # approximate blobs must be within tolerance too
    caveats: list = field(default_factory=list)  # where the engine is not Caffe
    size_bound_heads: dict = field(default_factory=dict)  # "original"/"converted" -> layers left out
    size_hints: list = field(default_factory=list)  # conversions made for another input size
    engine_note: str = ""  # why auto did not take Caffe, when it could not
    notes: list = field(default_factory=list)  # what the comparison can and cannot show

    def ok(self, result):
        """Does this blob pass? Approximate ones do unless strict, then they need the
        tolerance; one with no common grid passes unless the conversion claims it exact
        (a claim that cannot be checked is not a pass)."""
        if result.approximate and not self.strict:
            return True
        if result.status == NO_GRID:
            return not result.claimed
        return result.rel_error is not None and result.rel_error <= self.tolerance

    @property
    def passed(self):
        return bool(self.blobs) and all(self.ok(r) for r in self.blobs)

    def to_dict(self):
        return {"original": self.original, "converted": self.converted, "engine": self.engine,
                "engine_note": self.engine_note, "tolerance": self.tolerance,
                "strict": self.strict, "passed": self.passed,
                "inputs": {k: list(v) for k, v in self.inputs.items()},
                "approximate_layers": list(self.approximate_layers), "caveats": list(self.caveats),
                "size_bound_heads": {k: list(v) for k, v in self.size_bound_heads.items()},
                "size_hints": list(self.size_hints), "notes": list(self.notes),
                "blobs": [r.to_dict() for r in self.blobs]}

    def format_text(self):
        shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in self.inputs.items())
        note = f" ({self.engine_note})" if self.engine_note else ""
        lines = [f"verify {self.original} -> {self.converted}",
                 f"engine {self.engine}{note}, input {shapes}, tolerance {self.tolerance:g} (relative)"]
        if self.approximate_layers:
            lines.append("not exact by construction: " + ", ".join(self.approximate_layers))
        lines.extend(f"caveat: {c}" for c in self.caveats)
        lines.extend(f"note: {n}" for n in self.notes)
        for which, layers in self.size_bound_heads.items():
            lines.append(f"compared only the blobs before the {which}'s layers whose weights "
                         f"do not fit ({', '.join(layers)}): a size-bound head fits another "
                         "input size, a regridded upsampler another stride")
        width = max([len(r.blob) for r in self.blobs] + [4])
        lines.append(f"{'blob':<{width}}  {'factor':>7}  {'offset':>7}  {'compared':>9}  "
                     f"{'max|err|':>9}  {'rel err':>9}  status")
        for r in self.blobs:
            lines.append(f"{r.blob:<{width}}  {_pair(r.factor):>7}  {_pair(r.offset):>7}  "
                         f"{'x'.join(map(str, r.compared)) if r.compared else '-':>9}  {_num(r.max_abs_error):>9}  "
                         f"{_num(r.rel_error):>9}  {r.status}{'  ' + r.note if r.note else ''}")
        exact = [r for r in self.blobs if not r.approximate]
        approx = [r for r in self.blobs if r.approximate]
        verdict = "PASS" if self.passed else "FAIL"
        tail = f"{len(approx)} approximate"
        if self.strict and approx:
            tail += f" (strict: {sum(self.ok(r) for r in approx)} within tolerance)"
        lines.append(f"{verdict}: {sum(r.status == OK for r in exact)}/{len(exact)} exact blobs "
                     f"within {self.tolerance:g}; {tail}")
        if not self.passed:
            lines.extend(f"hint: {h}" for h in self.size_hints)
        return "\n".join(lines)


def _pair(value):
    if value is None:
        return "-"
    if len(value) == 2 and value[0] == value[1]:
        return str(value[0])     # a Fraction prints as 4 or 1/4
    return "x".join(str(v) for v in value)


def _num(value):
    return "-" if value is None else f"{value:.2e}"


def verify(original_path, converted_path, weights_path, *, input_shapes=None, blobs=(),
           engine="opencv", tol=1e-4, seed=0, strict=False, caffe_python=None,
           weights_converted=None, defines=None, progress=None):
    """Run both nets and compare blobs on their common grid; returns a VerifyReport.

    engine: "opencv", "caffe" (pycaffe; in a child under `caffe_python` or $CAFFE_PYTHON
    when it does not import here; fork layers run as Python layers) or "auto" (Caffe when
    it is available and runs both nets, else OpenCV; the report's engine_note says why it
    fell back). Each net is made runnable for the engine first (engines/prepare.py).

    strict=True holds blobs downstream of a known approximation to the tolerance too
    (for checking that a conversion is exact everywhere, e.g. a pspnet-convention one).

    weights_converted: the converted net's own weights (fold's, bvlc's output), when they
    are not `weights_path`. defines: {NAME: VALUE} filling the `${NAME}` of template nets
    for this run. `progress(text)`, when given, is told which step runs
    (surgery/progress.py)."""
    progress = progress or _silent
    original_path, converted_path = str(original_path), str(converted_path)
    progress("verify: analysing both nets")
    files, templates = _load((original_path, converted_path), defines or {})
    weights = (str(weights_path), str(weights_converted or weights_path))
    summaries = {path: read_caffemodel(path) for path in weights}
    phase = _phase(files[0])
    analysed = [_analysed(loaded, input_shapes, phase) for loaded in files]
    for loaded, text, analysis in zip(files, templates, analysed):
        _prepared(loaded, text, analysis, "caffe")    # an open placeholder: say so first
    judged = judge(files[0].net, files[1].net, input_shapes=input_shapes, phase=phase,
                   unknowns=(files[0].unknowns, files[1].unknowns))
    (_, orig, orig_head), (_, conv, conv_head) = fitted = [
        _fit_weights(loaded, analysis, summaries[path], path, input_shapes, phase)
        for loaded, analysis, path in zip(files, analysed, weights)]

    def prepared_for(kind):
        return [_prepared(loaded, text, analysis, kind)
                for loaded, text, (_, analysis, _) in zip(files, templates, fitted)]

    for_caffe = prepared_for("caffe")
    runner, note = choose_engine(engine, [p.net for p in for_caffe], caffe_python=caffe_python)
    prepared = for_caffe if runner.name == "caffe" else prepared_for("opencv")
    inputs = _random_inputs(prepared, (orig, conv), original_path, seed)
    chosen, default, touched = _chosen_blobs(blobs, judged, (orig, conv), for_caffe,
                                             (original_path, converted_path), inputs)

    def run(runner, prepared):
        with tempfile.TemporaryDirectory(prefix="caffe-surgery-verify-") as folder:
            models = _prepared_weights(prepared, weights, summaries, folder)
            runs = [(p.net, model, inputs, chosen) for p, model in zip(prepared, models)]
            labels = [f"the {which} net {os.path.basename(path)}" for which, path in
                      (("original", original_path), ("converted", converted_path))]
            return runner.run_many(runs, labels=labels, progress=progress)

    try:
        orig_out, conv_out = run(runner, prepared)
    except CaffeUnreadable as exc:
        if engine != "auto":
            raise
        # e.g. a fork field Caffe's parser lacks; OpenCV's importer skips those
        runner, note = get_engine("opencv"), f"auto: {exc.reason}"
        prepared = prepared_for("opencv")
        orig_out, conv_out = run(runner, prepared)
    progress("verify: comparing")
    report = VerifyReport(original_path, converted_path, runner.name, tol,
                          {k: v.shape for k, v in inputs.items()}, engine_note=note,
                          approximate_layers=judged.not_exact(), strict=strict,
                          caveats=runner.caveats(*(p.net for p in prepared))
                          + _unknown_fields(files, prepared),
                          size_bound_heads={w: h for w, h in (("original", orig_head),
                                                              ("converted", conv_head)) if h})
    shape = ", ".join(f"{k}={','.join(map(str, v.shape))}" for k, v in inputs.items())
    report.size_hints = [f"layer '{c.layer}': {c.note}; convert at this input size with "
                         f"`dilate ... --input-shape {shape}`" for c in judged.changes
                         if c.get("other_size")]
    if default is not None and not touched and judged.changes:
        report.notes.append(f"the conversion changed no blob both nets share exactly on a "
                            f"common grid; '{default}', which it left alone, is compared, "
                            "which proves nothing about the change")
    for blob in chosen:
        claimed = blob in judged.exact_blobs
        result = _compare(blob, orig, conv, orig_out[blob], conv_out[blob],
                          approximate=blob in judged.excused, claimed=claimed, tol=tol)
        result.claimed = claimed
        report.blobs.append(result)
    return report


def _silent(text):
    """The progress callback when none is given."""


def _load(paths, defines):
    """([NetFile], [text as written]) for the paths, `defines` filled in; a NAME neither
    file uses is refused (a misspelt name would leave its placeholder open)."""
    texts = [read_text(path) for path in paths]
    used = set().union(*(template.names(t) for t in texts))
    unused = sorted(set(defines) - used)
    if unused:
        raise SurgeryError(f"--define {unused[0]}: neither net has the placeholder "
                           f"${{{unused[0]}}} (they have: {', '.join(sorted(used)) or 'none'})")
    return [load_text(template.fill(t, defines), p) for p, t in zip(paths, texts)], texts


def _phase(loaded):
    """TEST, unless only TRAIN has every layer the net needs (a train net whose data
    layer is TRAIN-only): the phase both nets run in."""
    built, failed = complete_phases(loaded.net)
    if not built:
        raise failed["TEST"]
    return next(iter(built))


def _prepared(loaded, text, analysis, engine):
    """The net of `analysis` made runnable in `engine`; a placeholder left open in what
    runs is refused, naming it and where it is in the file as written (`text`)."""
    as_is = {uf.layer for uf in loaded.binding.unknown_fields if uf.layer is not None}
    prepared = prepare(analysis, engine, as_is=as_is)
    ph = _open_placeholder(loaded, prepared)
    if ph is not None:
        line, col = template.position_in(text, loaded.text, *loaded.position(ph), ph.text)
        name = next(iter(sorted(template.names(ph.text))), "NAME")
        raise SurgeryError(f"template placeholder {ph.text} is open in a layer that runs; "
                           f"give it with --define {name}=VALUE", file=loaded.path,
                           line=line, col=col)
    return prepared


def _open_placeholder(loaded, prepared):
    """The first placeholder the prepared net still depends on: text that still holds
    it (a layer named `fc8_${EXP}`), or a number it leaves unset in a layer that runs,
    but for a data layer's (the Input in its place is sized by the analysis)."""
    texts = {layer.name: str(layer) for layer in prepared.net.layer}
    fed = {layer.name for layer, form in prepared.forms
           if not layer.bottom and not any(f.bottom for f in form)}
    numeric = loaded.numeric_placeholders
    for ph in loaded.placeholders:
        name = loaded.binding.layer_name(ph.path)
        if name not in texts:
            continue
        if ph in numeric:
            if name not in fed:
                return ph
        elif any(f"${{{n}}}" in texts[name] for n in template.names(ph.text)):
            return ph
    return None


def _unknown_fields(files, prepared):
    """A line per field or value the schema lacks in a layer that runs: the engine runs
    the layer without it (it is not in the net the engine reads)."""
    lines = []
    for loaded, p in zip(files, prepared):
        running = {layer.name for layer in p.net.layer}
        for uf in loaded.binding.unknown_fields:
            if uf.layer in running:
                line = (f"{uf}, in layer '{uf.layer}': the engine runs the layer without it")
                if line not in lines:
                    lines.append(line)
    return lines


def _prepared_weights(prepared, weights, summaries, folder):
    """The weights file each prepared net runs with: its own file, or, where rewritten
    layers need other blobs (PSPNet's BN as BatchNorm + Scale), one copy of that file
    with them made, shared by the nets that use it (written to `folder`)."""
    models, written = [], {}
    for i, (p, path) in enumerate(zip(prepared, weights)):
        if path not in written:
            forms = {layer.name: (layer, form) for q, other in zip(prepared, weights)
                     if other == path for layer, form in q.forms}
            plan = form_weights(tuple(forms.values()), summaries[path], retype=False)
            if plan.edit or plan.add or plan.drop:
                out = os.path.join(folder, f"weights-{i}.caffemodel")
                write_weights(plan, out, source=summaries[path])
                written[path] = out
            else:
                written[path] = path
        models.append(written[path])
    return models


def _chosen_blobs(blobs, judged, analyses, prepared, paths, inputs):
    """(chosen, default, touched): the blobs to compare, the default first, then `blobs`;
    each must be one that runs in both prepared nets. The default is the deepest blob the
    conversion changed and did not mark APPROXIMATE or ADAPTED that both nets run and
    share on a common grid; failing that, the deepest such blob it left alone (touched
    False: comparing it proves nothing about the change, and the report says so)."""
    runs = [p.blobs for p in prepared]
    chosen = list(dict.fromkeys(blobs))
    for blob in chosen:
        for analysis, ran, path in zip(analyses, runs, paths):
            if analysis.graph.last_writer(blob) is None and blob not in analysis.graph.inputs:
                raise SurgeryError("no such blob in the net", file=path, blob=blob)
            if blob not in ran:
                raise SurgeryError("this blob only feeds layers that score or write, which "
                                   "do not run", file=path, blob=blob)
    orig, conv = analyses
    changed = judged.after.graph.downstream_blobs({c.layer for c in judged.changes})
    shared = [blob for node in reversed(conv.graph.nodes) for blob in reversed(node.tops)
              if blob not in judged.excused and blob not in inputs and blob in runs[0] & runs[1]
              and orig.graph.last_writer(blob) is not None
              and _grid(blob, orig, conv, blob in judged.exact_blobs)[0] is not None]
    default = next((b for b in shared if b in changed), None)
    touched = default is not None
    default = default or next(iter(shared), None)
    if default is None and not chosen:
        raise SurgeryError("no blob is shared by both nets on a common grid outside what the "
                           "conversion made approximate; name blobs to compare with --blob")
    if default is not None and default not in chosen:
        chosen.insert(0, default)
    return chosen, default, touched


def _analysed(loaded, input_shapes, phase, net=None):
    return analyse(net or loaded.net, input_shapes=input_shapes, phase=phase,
                   unknowns=loaded.unknowns)


def _fit_weights(loaded, analysis, summary, weights_path, input_shapes, phase):
    """(net, analysis, head): the loaded net without the size-bound layers whose weights
    do not fit at this input size, and without what is computed from them (head: their
    names, [] when none). Any other layer whose weights would not load is refused, naming
    it; an engine would otherwise fail with its own, much less helpful, message."""
    net, path = loaded.net, loaded.path
    report = compare(whole_shapes(analysis.param_shapes), summary)
    nodes = [analysis.graph.node(row.name) for row in report.layers if row.status == MISMATCH]
    # A classifier sized for another input, or an upsampler a conversion gave another
    # stride (its new weights are in another file): neither is compared, so run without.
    head = [n.name for n in nodes
            if n.rule.size_bound(n.layer, analysis.in_shapes.get(n.name) or [])
            or n.rule.resamples(n.layer)]
    if head:
        tainted = analysis.graph.downstream_blobs(head)
        gone = {n.index for n in analysis.graph.nodes
                if n.name in head or any(b in tainted for b in n.bottoms)}
        kept = type(net)()
        kept.CopyFrom(net)
        del kept.layer[:]
        kept.layer.extend(layer for i, layer in enumerate(net.layer) if i not in gone)
        net, analysis = kept, _analysed(loaded, input_shapes, phase, kept)
        report = compare(whole_shapes(analysis.param_shapes), summary)
    problem = first_problem(report)
    if problem is not None:
        raise SurgeryError(f"these weights do not load into {path}: {problem} "
                           "(see caffe-surgery check)", file=str(weights_path))
    return net, analysis, head


def _random_inputs(prepared, analyses, path, seed):
    """Seeded normal values for each input of the prepared original, at its analysed
    size; zeros for a label (a train net's, read by the layers that run); and what a layer
    reading an input says it must hold (`rule.input_values`: py-faster-rcnn's im_info,
    the image's size)."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for name in prepared[0].inputs:
        shape = analyses[0].shapes.get(name)
        if shape is None or any(d is None for d in shape):
            raise SurgeryError("the input size is unknown; give it with --input-shape "
                               "NAME=N,C,H,W", file=path, blob=name)
        if name not in prepared[1].inputs:
            raise SurgeryError("the converted net has no such input", blob=name)
        inputs[name] = np.zeros(shape, np.float32) if name in prepared[0].labels else \
            rng.standard_normal(size=tuple(shape)).astype(np.float32)
    orig = analyses[0]
    shapes = {name: orig.shapes.get(name) for name in orig.graph.inputs}
    for node in orig.graph.nodes:
        for i, blob in enumerate(node.bottoms):
            values = node.rule.input_values(node.layer, i, shapes) if blob in inputs else None
            if values is not None:
                inputs[blob] = np.asarray(values, np.float32).reshape(inputs[blob].shape)
    return inputs


def _grid(blob, orig, conv, claimed=False):
    """The Grid relating the converted blob's samples to the original's (either may be
    the denser), SAME for equal non-spatial blobs, or (None, why). `claimed`: the
    conversion holds the blob exact, so a grid carried from a start of its own (a
    resampled copy of the image, DeepLab's `data_res075`) is trusted where it moved."""
    a, b = orig.shapes.get(blob), conv.shapes.get(blob)
    if a is None or b is None:
        return None, "shape unknown"
    if len(a) != len(b) or tuple(a[:2]) != tuple(b[:2]):
        return None, f"shapes {tuple(a)} and {tuple(b)} differ in batch/channels"
    if len(a) != 4:
        if tuple(a) != tuple(b):
            return None, f"shapes {tuple(a)} and {tuple(b)} differ"
        return SAME, ""
    ga, gb = orig.geometry.get(blob), conv.geometry.get(blob)
    if ga is None and gb is None and tuple(a) == tuple(b) and \
            orig.carried_geometry().get(blob) is None:
        return SAME, ""         # off the image grid in both (after a global pooling)
    if ga is None or gb is None:
        # Past a join with a resampled branch (PSPNet's Concat of the trunk and its
        # upsampled bins) the blob sits on its trunk's grid, but where that grid moved the
        # branch's resampling is not exact: compared only where the grid is unchanged (a
        # bvlc rewrite, a conversion that stops before the join) or where the conversion
        # holds it exact (a trunk reading a resampled copy of the image).
        ga, gb = orig.carried_geometry().get(blob), conv.carried_geometry().get(blob)
        if ga is None or gb is None or not (claimed or Grid.between(ga, gb).identity):
            return None, "no geometry (collapsed or misaligned)"
    grid = Grid.between(ga, gb)
    if None in grid.common(a[2:], b[2:]):
        return None, (f"stride {tuple(ga.stride)}->{tuple(gb.stride)}, centre "
                      f"{tuple(ga.offset)}->{tuple(gb.offset)}: no common grid")
    return grid, ""


def _compare(blob, orig, conv, a, b, *, approximate, claimed, tol):
    grid, why = _grid(blob, orig, conv, claimed)
    if grid is None:
        return BlobResult(blob, NO_GRID, approximate, note=why)
    factor, offset = tuple(grid.factor), tuple(grid.offset)
    if a.ndim == 4:
        axes = grid.common(a.shape[2:], b.shape[2:])
        counts = tuple(count for *_, count in axes)
        if 0 in counts:
            return BlobResult(blob, NO_GRID, approximate, factor, offset, note="no common position")
        (ah, bh, sah, sbh, nh), (aw, bw, saw, sbw, nw) = axes
        a = a[:, :, ah::sah, aw::saw][:, :, :nh, :nw]
        b = b[:, :, bh::sbh, bw::sbw][:, :, :nh, :nw]
        compared = counts
    else:
        compared = tuple(a.shape)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    max_err = float(np.max(np.abs(a64 - b64))) if a.size else 0.0
    scale = float(np.max(np.abs(a64))) if a.size else 0.0
    rel = max_err / scale if scale > 0 else (0.0 if max_err == 0 else float("inf"))
    status = APPROXIMATE if approximate else (OK if rel <= tol else FAIL)
    return BlobResult(blob, status, approximate, factor, offset, compared, max_err, rel, scale)
