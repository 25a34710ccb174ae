"""Turn an Analysis into text a person reads or JSON a program reads.

Kept apart from the analysis so that numbers are computed once and every
command (inspect, the passes' summaries) prints them the same way.
"""

from fractions import Fraction

from ..errors import SurgeryError
from ..layers import UNKNOWN, rule_for
from ..analysis.nominal import nominal_strides
from ..pair import Pair


def _axes(pair):
    """'3' when both axes agree, '3x5' (h x w) when they differ."""
    if pair is None:
        return "-"
    h, w = (_number(v) for v in pair)
    return h if h == w else f"{h}x{w}"


def _number(value):
    """An int or float as '%g'; a Fraction as '4' or '1/4'."""
    return str(value) if isinstance(value, Fraction) else f"{value:g}"


def _window(layer):
    try:
        win = rule_for(layer.type).window(layer)
    except SurgeryError:
        return "?"
    if win is None:  # a window type that collapses this time is a global pooling
        rule = rule_for(layer.type)
        return "global" if rule.is_global(layer) else ""
    text = f"k{_axes(win.kernel)} s{_axes(win.stride)} p{_axes(win.pad)}"
    return text + (f" d{_axes(win.dilation)}" if win.dilation != (1, 1) else "")


def _shape(shape):
    if shape is None:
        return "?"
    return "x".join("?" if d is None else str(d) for d in shape) if shape else "scalar"


def human(n, unit=""):
    """1234567 -> '1.23M' (decimal prefixes)."""
    if n is None:
        return "?"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{prefix}{unit}"
    return f"{n}{unit}"


def _bytes(elements):
    if elements is None:
        return "?"
    size = elements * 4
    for factor, prefix in ((2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if size >= factor:
            return f"{size / factor:.1f} {prefix}"
    return f"{size} B"


def _type(node):
    """The layer's type, with '?' when the analysis reads it as opaque (a placeholder or a
    fork's field decides its window)."""
    return node.type + ("?" if node.rule is UNKNOWN and rule_for(node.type) is not UNKNOWN else "")


def table_rows(analysis):
    """One row per (layer, top): layer, type, window, top, shape, stride, RF."""
    rows = []
    for node in analysis.graph.nodes:
        window = _window(node.layer)
        tops = node.tops or ("",)
        for i, top in enumerate(tops):
            geom = analysis.geometry.get(top) if top else None
            shape = analysis.out_shapes[node.name][i] if top else None
            rows.append((node.name if i == 0 else "", _type(node) if i == 0 else "",
                         window if i == 0 else "", top, _shape(shape) if top else "",
                         _axes(geom.stride) if geom else "-", _axes(geom.rf) if geom else "-"))
    return rows


def format_table(analysis):
    """The `inspect` text report: a layer table and totals (its warnings are the
    caller's to print, on stderr)."""
    header = ("layer", "type", "window", "top", "shape", "stride", "rf")
    rows = table_rows(analysis)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()
    out = [line(header), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in rows]
    out.append("")
    out += format_totals(analysis)
    return "\n".join(out) + "\n"


def format_totals(analysis):
    t = analysis.totals
    lower = "" if t.complete else " (lower bound: some sizes unknown)"
    lines = [f"params: {t.params:,} ({human(t.params)}){lower}",
             f"FLOPs (multiply-adds): {t.flops:,} ({human(t.flops)}){lower}",
             f"activation memory (float32): {_bytes(t.activations)}{lower}"]
    deepest = analysis.deepest_blob()
    if deepest is not None:
        geom, stride = analysis.geometry[deepest], analysis.output_stride()
        nominal = nominal_output_stride(analysis)
        dilated = f" (dilated from {_axes(nominal)})" if nominal not in (None, stride) else ""
        lines.append(f"output stride {_axes(stride)}{dilated}, receptive field "
                     f"{_axes(geom.rf)} at blob '{deepest}' "
                     f"({_shape(analysis.shapes.get(deepest))})")
    return lines


def nominal_output_stride(analysis):
    """The output stride the net's kernels were trained at (surgery.analysis.nominal): the largest
    nominal stride on the trunk, per axis; None when no blob has one."""
    side = analysis.resampled_branches()
    values = [v for b, v in nominal_strides(analysis).items() if b not in side]
    axes = [[p[a] for p in values if p[a] is not None] for a in range(2)]
    if not all(axes):
        return None
    return Pair(max(axes[0]), max(axes[1]))


def _list(shape):
    return None if shape is None else list(shape)


def to_json(analysis):
    """A JSON-ready dict: blobs (shape, stride, rf, offset), layers, totals, warnings.

    A value that is not known is null where it stands (a whole shape, or one dim of it),
    and the entry's `unknown_from` names the layers the gap comes from; `unknown` gives
    each such layer's reason (inference stopped there, or a placeholder leaves a size open)."""
    blob_origins, layer_origins = analysis.unknown_origins()
    blobs = {}
    for blob in analysis.graph.blobs:
        geom = analysis.geometry.get(blob)
        entry = {"shape": _list(analysis.shapes.get(blob))}
        entry.update(geom.to_json() if geom else {"stride": None, "rf": None, "offset": None})
        entry["unknown_from"] = list(blob_origins.get(blob, ()))
        blobs[blob] = entry
    stats = {s.name: s for s in analysis.layer_stats}
    layers = []
    for node in analysis.graph.nodes:
        rule = node.rule
        try:
            win = rule.window(node.layer)
        except SurgeryError:
            win = None
        pshapes = analysis.param_shapes.get(node.name)
        s = stats[node.name]
        layers.append({
            "name": node.name, "type": node.type, "role": rule.role_name(node.layer),
            "opaque": node.rule is UNKNOWN and rule_for(node.type) is not UNKNOWN,
            "bottom": list(node.bottoms), "top": list(node.tops),
            "window": None if win is None else {k: list(v) for k, v in win._asdict().items()},
            "param_shapes": None if pshapes is None else [_list(p) for p in pshapes],
            "params": s.params, "flops": s.flops, "activations": s.activations,
            "unknown_from": list(layer_origins.get(node.name, ())),
        })
    t = analysis.totals
    deepest = analysis.deepest_blob()
    return {
        "inputs": list(analysis.graph.inputs),
        "blobs": blobs,
        "layers": layers,
        "totals": {"params": t.params, "flops": t.flops, "activations": t.activations,
                   "activation_bytes": t.activations * 4, "complete": t.complete,
                   "output_blob": deepest,
                   "output_stride": None if deepest is None else list(analysis.output_stride()),
                   "nominal_output_stride": _list(nominal_output_stride(analysis))},
        "stopped": dict(analysis.stopped),
        "unknown": dict(analysis.unknown),
        "warnings": list(analysis.warnings),
    }


def _window_text(win):
    if win is None:
        return "-"
    return (f"k{_axes(win.kernel)} s{_axes(win.stride)} p{_axes(win.pad)} d{_axes(win.dilation)}")


def format_changes(report):
    """The dilate summary: before/after stride and RF, exactness, one line per change."""
    from ..transform.conversion import result_status

    lines = []
    if report.deepest is not None:
        lines.append(f"output stride {_axes(report.stride_before)} -> {_axes(report.stride_after)}; "
                     f"receptive field at '{report.deepest}' {_axes(report.rf_before)} -> "
                     f"{_axes(report.rf_after)}")
    statuses = {c.status for c in report.changes}
    if report.exact:
        lines.append(f"result: EXACT ({report.exact_sizes})")
    else:
        deepest_exact = [b for b in report.grids if b in report.exact_blobs]
        upto = (f"; exact up to '{deepest_exact[-1]}', {report.exact_sizes}"
                if deepest_exact else "")
        marked = " and ".join(s for s in ("APPROXIMATE", "ADAPTED") if s in statuses)
        result = result_status(report.changes)
        lines.append(f"result: {result} (see the layers marked {marked}){upto}")
    if report.changes:
        width = max(len(c.layer) for c in report.changes)
        kinds = max(len(c.type) for c in report.changes)
        lines.append(f"{len(report.changes)} changed layers:")
        for c in report.changes:
            if c.action == "rewrite" and c.before is None and c.after is None:
                what = "settings"       # the note says which (spatial_scale, step, ...)
            elif c.action == "rewrite":
                what = f"{_window_text(c.before)} -> {_window_text(c.after)}"
            elif c.action == "global":
                what = f"{_window_text(c.before)} -> global pooling"
            elif c.action == "keep":
                what = "unchanged"
            else:
                lines.append(f"  {c.layer:<{width}}  {c.type:<{kinds}}  removed")
                continue
            status = "exact" if c.exact else c.status
            note = f"  ({c.note})" if c.note and c.action != "remove" else ""
            lines.append(f"  {c.layer:<{width}}  {c.type:<{kinds}}  {status:<11}  {what}{note}")
    for note in report.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"
