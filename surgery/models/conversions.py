"""The committed output-stride conversions of the reference nets, and their cost table.

`convert(net, output_stride)` is what `python -m surgery.models` writes as
`deploy-os16.prototxt` / `deploy-os8.prototxt`: the exact rewrite with the classifier head
cut. Strict pooling is tried first; only when a pooling window after a removed stride
refuses it is `pooling="cover"` used, and the table then says the file is approximate.
`readme(models)` renders models/README.md from `analyse`, i.e. the numbers
`caffe-surgery inspect` prints, so the table can be checked by running the CLI.
"""

from typing import NamedTuple

from ..analysis.analyse import analyse
from ..errors import SurgeryError
from ..io.prototxt import format_prototxt
from ..transform.dilate import dilate
from ..transform.plan import Options
from ..transform.reach import accepts
from ..report.text import human

STRIDES = (16, 8)     # the committed conversions
SIZES = (224, 513)    # input sizes the table reports (513: the usual DeepLab crop)


class Conversion(NamedTuple):
    net: object
    report: object    # DilateReport
    pooling: str      # "strict" or "cover"


def file_name(output_stride=None):
    return "deploy.prototxt" if output_stride is None else f"deploy-os{output_stride}.prototxt"


def convert(net, output_stride, *, input_shapes=None):
    """dilate with head=cut; pooling=cover only when strict is refused (a pooling window
    after a removed stride) and cover is not."""
    strict = Options(output_stride, head="cut")
    pooling = "strict" if accepts(net, strict, input_shapes=input_shapes) else "cover"
    return Conversion(*dilate(net, output_stride=output_stride, head="cut", pooling=pooling,
                              input_shapes=input_shapes), pooling)


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

def _axes(pair):
    return "-" if pair is None else (str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}")


def _code(names, limit=3):
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _run_order(net):
    return analyse(net).graph.blobs_in_run_order()


def _describe(conversion):
    """One cell: is the converted output exact, and where does exactness end."""
    report = conversion.report
    approximate = [c.layer for c in report.changes if not c.exact]
    if report.deepest in report.exact_blobs:
        if not approximate:
            return "exact"
        return f"exact at `{report.deepest}`; approximate after it: {_code(approximate)}"
    exact = [b for b in _run_order(conversion.net) if b in report.exact_blobs]
    upto = f"; exact up to `{exact[-1]}`" if exact else ""
    return f"approximate (pooling {conversion.pooling}){upto}; approximate: {_code(approximate)}"


def _exactness(original, conversion, output_stride, shapes):
    """The cell for the committed conversion evaluated at `shapes`.

    Caffe's CEIL pooling makes the exact rewrite size-dependent (NOTES §2), so the file,
    made at the declared size, is exact at another size only if dilate would write the
    same file for it."""
    try:
        again = convert(original, output_stride, input_shapes=shapes)
    except SurgeryError as exc:
        return f"no conversion at this size ({exc})"
    if format_prototxt(again.net) != format_prototxt(conversion.net):
        return ("not exact at this size: Caffe's CEIL pooling windows fall differently; "
                "convert with `--input-shape` for it")
    return _describe(again)


class Row(NamedTuple):
    file: str
    size: int
    blob: str
    shape: tuple
    stride: object
    rf: object
    params: int
    flops: int
    complete: bool
    exact: str
    param_layers: dict  # layer -> params (to explain size-dependent counts)


def rows(original, conversions):
    """Table rows for one model: the original and each conversion, at every size in SIZES.

    `conversions` maps output stride -> Conversion (made at the declared input size)."""
    blob = analyse(original).graph.inputs[0]
    out = []
    nets = [(None, original, None)] + [(s, c.net, c) for s, c in sorted(conversions.items(),
                                                                       reverse=True)]
    for stride, net, conversion in nets:
        for size in SIZES:
            shapes = {blob: (1, 3, size, size)}
            analysis = analyse(net, input_shapes=shapes)
            deepest = analysis.deepest_blob()
            geom = analysis.geometry.get(deepest) if deepest else None
            totals = analysis.totals
            exact = ("original" if conversion is None
                     else _exactness(original, conversion, stride, shapes))
            out.append(Row(file_name(stride), size, deepest, analysis.shapes.get(deepest),
                           geom and geom.stride, geom and geom.rf, totals.params, totals.flops,
                           totals.complete, exact,
                           {s.name: s.params for s in analysis.layer_stats if s.params}))
    return out


def _notes(name, model_rows, conversions):
    notes = []
    for stride, conversion in sorted(conversions.items(), reverse=True):
        sizes = conversion.report.exact_sizes
        if conversion.report.exact and sizes != "exact for every input size":
            notes.append(f"`{file_name(stride)}` (made at the declared 224 input): {sizes}.")
    by_file = {}
    for row in model_rows:
        by_file.setdefault(row.file, []).append(row)
    for file, group in by_file.items():
        first, *others = group
        for row in others:
            grown = [layer for layer, n in row.param_layers.items()
                     if first.param_layers.get(layer) != n]
            if grown:
                verb = "size their" if len(grown) > 1 else "sizes its"
                notes.append(
                    f"`{file}` at {row.size}: more parameters because {_code(grown)} {verb} "
                    "weights by the input map, so the 224 weights do not load at this size "
                    "(the conversions cut this head).")
    return notes


HEADER = """\
# Reference nets and their output-stride conversions

Generated by `python -m surgery.models` from `surgery/models/`; do not edit by hand. A test
regenerates every file here (the prototxts and this README) and compares them byte for byte.

For each model, `deploy.prototxt` is the ImageNet backbone (224x224 `Input`, output stride
32) and `deploy-os16.prototxt` / `deploy-os8.prototxt` are its conversions by
`caffe-surgery dilate --head cut` (the exact a-trous rewrite; the classifier head, whose
weights are sized for the 7x7 map, is cut). When a pooling window follows a removed stride
no exact rewrite exists; those files are made with `--pooling cover` and marked approximate.

Each row is one file at one input size, with the numbers `caffe-surgery inspect FILE
--input-shape data=1,3,S,S` prints: the output blob (the deepest blob still on the image
grid), its shape, output stride and receptive field, the parameter count and the FLOPs
(multiply-adds) of the whole file. "exact" says whether the conversion reproduces the
original's output blob on the subsampled grid at that input size (checked by re-running
the conversion for that size; Caffe's CEIL pooling makes this size-dependent).
"""


def readme(models):
    """models/README.md text; `models` is a list of (name, original, {stride: Conversion})."""
    lines = [HEADER]
    for name, original, conversions in models:
        model_rows = rows(original, conversions)
        lines.append(f"## {name}\n")
        lines.append("| file | input | output blob | shape | stride | RF | params | FLOPs | exact |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in model_rows:
            shape = "?" if r.shape is None else "x".join(map(str, r.shape))
            lower = "" if r.complete else " (lower bound)"
            lines.append(f"| `{r.file}` | {r.size} | `{r.blob}` | {shape} | {_axes(r.stride)} | "
                         f"{_axes(r.rf)} | {human(r.params)}{lower} | {human(r.flops)}{lower} | "
                         f"{r.exact} |")
        notes = _notes(name, model_rows, conversions)
        if notes:
            lines.append("")
            lines += [f"- {note}" for note in notes]
        lines.append("")
    return "\n".join(lines)
