"""Numeric proof that a converted net computes what the original computed.

Both nets run on the same seeded random input with the same weights. A blob of
the converted net lives on a finer grid; the position matching the original's
position i is found from the geometry of BOTH nets, never from what the
conversion claims: with centre c and stride S per axis,
    c_conv + S_conv*j = c_orig + S_orig*i   =>   j = offset + f*i,
    f = S_orig / S_conv,  offset = (c_orig - c_conv) / S_conv,
and both must be non-negative integers. Only positions present in both are
compared. Blobs downstream of a layer the conversion could not rewrite exactly
(`approximate_layers`) are reported with their error but never fail the check.

At an input size other than the one the weights were made for, a classifier's
InnerProduct on a map expects other weight shapes (its weights are size-bound). Such a
head, and all computed from it, is left out of the run: only the blobs before it are
compared, and the report says so. Weights that do not fit anywhere else are refused.
"""

import os
import tempfile
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..analysis.analyse import analyse
from ..analysis.check import MISMATCH, compare, first_problem, whole_shapes
from .engine import CaffeUnreadable, choose_engine, get_engine
from ..errors import SurgeryError
from ..transform.grid import SAME, Grid, num
from ..io.caffemodel import read_caffemodel
from ..io.prototxt import save_prototxt
from ..io.netfile import load_prototxt
from ..transform.regrid import extra_window

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

    def ok(self, result):
        """Does this blob pass? Approximate ones do unless strict, then they need the tolerance."""
        if result.approximate and not self.strict:
            return True
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
                "size_hints": list(self.size_hints), "blobs": [r.to_dict() for r in self.blobs]}

    def format_text(self):
        shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in self.inputs.items())
        note = f" ({self.engine_note})" if self.engine_note else ""
        lines = [f"verify {self.original} -> {self.converted}",
                 f"engine {self.engine}{note}, input {shapes}, tolerance {self.tolerance:g} (relative)"]
        if self.approximate_layers:
            lines.append("not exact by construction: " + ", ".join(self.approximate_layers))
        lines.extend(f"caveat: {c}" for c in self.caveats)
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
           engine="opencv", tol=1e-4, seed=0, strict=False, caffe_python=None):
    """Run both nets and compare blobs on their common grid; returns a VerifyReport.

    engine: "opencv", "caffe" (pycaffe; in a child under `caffe_python` or $CAFFE_PYTHON
    when it does not import here) or "auto" (Caffe when available and the nets are BVLC
    Caffe's, else OpenCV; the report's engine_note says why it fell back).

    strict=True holds blobs downstream of a known approximation to the tolerance too
    (for checking that a conversion is exact everywhere, e.g. a pspnet-convention one)."""
    original_path, converted_path = str(original_path), str(converted_path)
    orig_net, conv_net = load_prototxt(original_path), load_prototxt(converted_path)
    approx_layers = _approximate_layers(orig_net, conv_net, input_shapes)
    summary = read_caffemodel(str(weights_path))
    fitted = {}
    for which, path, net in (("original", original_path, orig_net),
                             ("converted", converted_path, conv_net)):
        fitted[which] = _fit_weights(net, path, summary, weights_path, input_shapes)
    (orig_net, orig, orig_head), (conv_net, conv, conv_head) = fitted.values()
    inputs = _random_inputs(orig, conv, original_path, seed)
    tainted = conv.graph.downstream_blobs(approx_layers)

    chosen = list(dict.fromkeys(blobs))
    for blob in chosen:
        for analysis, path in ((orig, original_path), (conv, converted_path)):
            if analysis.graph.last_writer(blob) is None and blob not in analysis.graph.inputs:
                raise SurgeryError("no such blob in the net", file=path, blob=blob)
    default = _deepest_exact(orig, conv, tainted, inputs)
    if default is None and not chosen:
        raise SurgeryError("no blob shared by both nets is kept exact by the conversion; "
                           "name blobs to compare with --blob")
    if default is not None and default not in chosen:
        chosen.insert(0, default)

    runner, note = choose_engine(engine, (orig_net, conv_net), caffe_python=caffe_python)
    with tempfile.TemporaryDirectory(prefix="caffe-surgery-verify-") as folder:
        runs = []
        for which, path, net, head in (("original", original_path, orig_net, orig_head),
                                       ("converted", converted_path, conv_net, conv_head)):
            if head:    # run the net without its size-bound head
                path = os.path.join(folder, f"{which}.prototxt")
                save_prototxt(net, path)
            runs.append((path, weights_path, inputs, chosen))
        try:
            orig_out, conv_out = runner.run_many(runs)
        except CaffeUnreadable as exc:
            if engine != "auto":
                raise
            # e.g. a fork field Caffe's parser lacks; OpenCV's importer skips those
            runner, note = get_engine("opencv"), f"auto: {exc.reason}"
            orig_out, conv_out = runner.run_many(runs)
    report = VerifyReport(original_path, converted_path, runner.name, tol,
                          {k: v.shape for k, v in inputs.items()}, engine_note=note,
                          approximate_layers=sorted(approx_layers), strict=strict,
                          caveats=runner.caveats(orig_net, conv_net),
                          size_bound_heads={w: h for w, h in (("original", orig_head),
                                                              ("converted", conv_head)) if h})
    report.size_hints = size_hints(orig, conv, {k: v.shape for k, v in inputs.items()})
    for blob in chosen:
        report.blobs.append(_compare(blob, orig, conv, orig_out[blob], conv_out[blob],
                                     approximate=blob in tainted, tol=tol))
    return report


def size_hints(orig, conv, inputs):
    """Why a conversion may not be exact at this input size: a pooling that lost its stride
    keeps Caffe's last, partial CEIL window with one more pad exactly when the size it was
    converted at had one. Where this size decides otherwise, say so and how to convert."""
    hints = []
    for node in conv.graph.nodes:
        if node.name not in orig.graph or node.rule.dilatable or \
                not node.rule.reads_window(node.layer):
            continue
        old_node = orig.graph.node(node.name)
        g_old, g_new = orig.geometry.get(node.bottoms[0]), conv.geometry.get(node.bottoms[0])
        ins, outs = orig.in_shapes.get(node.name) or [None], orig.out_shapes.get(node.name) or [None]
        if g_old is None or g_new is None or ins[0] is None or outs[0] is None \
                or len(ins[0]) != 4 or None in ins[0] + outs[0]:
            continue
        old, new = old_node.rule.window(old_node.layer), node.rule.window(node.layer)
        factor = Grid.between(g_old, g_new).factor
        has = extra_window(ins[0][2:], outs[0][2:], old)
        for axis in range(2):
            if new.stride[axis] != 1 or old.stride[axis] == 1:
                continue
            kept = new.pad[axis] - old.pad[axis] * factor[axis] >= old.stride[axis] - 1 > 0
            if kept != has[axis]:
                shape = ",".join(map(str, next(iter(inputs.values()))))
                name = next(iter(inputs))
                hints.append(
                    f"layer '{node.name}' {'keeps' if kept else 'drops'} a partial CEIL window "
                    f"that this input size {'does not have' if kept else 'has'} on axis "
                    f"{'HW'[axis]}: the conversion was made for another input size; convert at "
                    f"this one with `dilate ... --input-shape {name}={shape}`")
                break
    return hints


def _fit_weights(net, path, summary, weights_path, input_shapes):
    """(net, analysis, head): `net` without the size-bound layers whose weights do not fit
    at this input size, and without what is computed from them (head: their names, [] when
    none). Any other layer whose weights would not load is refused, naming it; an engine
    would otherwise fail with its own, much less helpful, message."""
    analysis = analyse(net, input_shapes=input_shapes)
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
        net, analysis = kept, analyse(kept, input_shapes=input_shapes)
        report = compare(whole_shapes(analysis.param_shapes), summary)
    problem = first_problem(report)
    if problem is not None:
        raise SurgeryError(f"these weights do not load into {path}: {problem} "
                           "(see caffe-surgery check)", file=str(weights_path))
    return net, analysis, head


def _random_inputs(orig, conv, path, seed):
    """Seeded standard-normal inputs, except where a layer reading an input says what it
    must hold (`rule.input_values`: py-faster-rcnn's im_info, the image's size)."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for name in orig.graph.inputs:
        shape = orig.shapes.get(name)
        if shape is None or any(d is None for d in shape):
            raise SurgeryError("the input size is unknown; give it with --input-shape "
                               "NAME=N,C,H,W", file=path, blob=name)
        if name not in conv.graph.inputs:
            raise SurgeryError("the converted net has no such input", blob=name)
        inputs[name] = rng.standard_normal(size=tuple(shape)).astype(np.float32)
    shapes = {name: orig.shapes.get(name) for name in orig.graph.inputs}
    for node in orig.graph.nodes:
        for i, blob in enumerate(node.bottoms):
            values = node.rule.input_values(node.layer, i, shapes) if blob in inputs else None
            if values is not None:
                inputs[blob] = np.asarray(values, np.float32).reshape(inputs[blob].shape)
    return inputs


def _approximate_layers(orig_net, conv_net, input_shapes):
    """Layers of the converted net whose rewrite is not exact, as the dilate pass knows them."""
    from ..transform.dilate import approximate_layers

    return set(approximate_layers(orig_net, conv_net, input_shapes=input_shapes))


def _deepest_exact(orig, conv, tainted, inputs):
    """The last blob in the converted net's order that both nets share on a common grid."""
    for node in reversed(conv.graph.nodes):
        for blob in reversed(node.tops):
            if blob in tainted or blob in inputs or orig.graph.last_writer(blob) is None:
                continue
            if _grid(blob, orig, conv)[0] is not None:
                return blob
    return None


def _grid(blob, orig, conv):
    """The Grid relating the converted blob's samples to the original's (either may be
    the denser), SAME for equal non-spatial blobs, or (None, why)."""
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
    if ga is None or gb is None:
        return None, "no geometry (collapsed or misaligned)"
    grid = Grid.between(ga, gb)
    if None in grid.common(a[2:], b[2:]):
        return None, (f"stride {tuple(ga.stride)}->{tuple(gb.stride)}, centre "
                      f"{tuple(ga.offset)}->{tuple(gb.offset)}: no common grid")
    return grid, ""


def _compare(blob, orig, conv, a, b, *, approximate, tol):
    grid, why = _grid(blob, orig, conv)
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
