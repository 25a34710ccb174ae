"""Will these weights load into this net? Caffe's CopyTrainedLayersFrom, done statically.

Caffe matches source layers to net layers by name and ignores source layers
with no match. For a match, the blob count must equal the layer's param count,
each blob's shape must equal the param's shape (a blob with legacy
num/channels/height/width dims matches when the param has at most 4 axes and,
padded with leading 1s, equals those dims), and the blob must hold exactly as
many values as the shape needs. Any failure is fatal in Caffe. Net layers with
params that the file does not mention keep their filler initialisation, which
for a converted backbone is nearly always a mistake, so they fail the check too.
A layer whose param shapes cannot be known (an unknown type, an input size only the
data decides) fails it as well: unknown is not success, and the report says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

OK = "ok"
MISMATCH = "mismatch"
NOT_INITIALISED = "not_initialised"
UNUSED = "unused"
UNKNOWN = "unknown"
STATUSES = (OK, MISMATCH, NOT_INITIALISED, UNUSED, UNKNOWN)


@dataclass
class BlobCheck:
    index: int
    found: Optional[tuple]     # shape in the file (None: the file has no such blob)
    expected: Optional[tuple]  # shape the net wants (None: unknown or not wanted)
    ok: Optional[bool]         # None when it cannot be decided
    reason: str = ""

    def to_dict(self):
        return {"index": self.index,
                "file": None if self.found is None else list(self.found),
                "expected": None if self.expected is None else list(self.expected),
                "ok": self.ok, "reason": self.reason}


@dataclass
class LayerCheck:
    name: str
    status: str
    type: Optional[str] = None     # type recorded in the weights file, when it has the layer
    blobs: list = field(default_factory=list)
    message: str = ""

    def to_dict(self):
        return {"name": self.name, "status": self.status, "type": self.type,
                "blobs": [b.to_dict() for b in self.blobs], "message": self.message}


@dataclass
class CheckReport:
    layers: list

    def with_status(self, status):
        return [row for row in self.layers if row.status == status]

    @property
    def ok(self):
        """True when every net layer with params is known to get weights Caffe accepts."""
        return not (self.with_status(MISMATCH) or self.with_status(NOT_INITIALISED)
                    or self.with_status(UNKNOWN))

    @property
    def verdict(self):
        """'weights load', 'weights do NOT load', or 'cannot tell ... (why)'."""
        if self.with_status(MISMATCH) or self.with_status(NOT_INITIALISED):
            return "weights do NOT load"
        unknown = self.with_status(UNKNOWN)
        if unknown:
            return f"cannot tell whether the weights load (layer '{unknown[0].name}': " \
                   f"{unknown[0].message})"
        return "weights load"

    def counts(self):
        return {status: len(self.with_status(status)) for status in STATUSES}

    def to_dict(self):
        return {"ok": self.ok, "verdict": self.verdict, "counts": self.counts(),
                "layers": [row.to_dict() for row in self.layers]}


def fmt_shape(shape):
    return "x".join(str(d) for d in shape) if shape else "scalar"


def _size(shape):
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _shape_equals(blob, expected):
    """Caffe's Blob::ShapeEquals between a file blob and a param shape."""
    if blob.legacy:
        if len(expected) > 4:
            return False
        return (1,) * (4 - len(expected)) + tuple(expected) == tuple(blob.legacy_dims)
    return tuple(blob.shape_dims or ()) == tuple(expected)


def _because(why):
    return f" ({why})" if why else ""


def _check_blob(blob, expected, why=""):
    found = tuple(blob.shape)
    if expected is None:
        return BlobCheck(blob.index, found, None, None, "expected shape unknown" + _because(why))
    expected = tuple(int(d) for d in expected)
    if not _shape_equals(blob, expected):
        what = "legacy dims" if blob.legacy else "shape"
        return BlobCheck(blob.index, found, expected, False,
                         f"{what} {fmt_shape(found)} in file, net expects {fmt_shape(expected)}")
    if blob.count != _size(expected):
        return BlobCheck(blob.index, found, expected, False,
                         f"holds {blob.count} values, shape {fmt_shape(expected)} "
                         f"needs {_size(expected)}")
    return BlobCheck(blob.index, found, expected, True)


def _check_layer(layer, expected, why=""):
    row = LayerCheck(layer.name, OK, layer.type)
    if expected is None:
        row.status = UNKNOWN
        row.blobs = [BlobCheck(b.index, tuple(b.shape), None, None, "expected shape unknown"
                               + _because(why)) for b in layer.blobs]
        row.message = "the net's param shapes for this layer are unknown" + \
            _because(why or "input shape missing?")
        return row
    if len(expected) != len(layer.blobs):
        row.status = MISMATCH
        row.message = (f"file has {len(layer.blobs)} blobs, net layer has "
                       f"{len(expected)} params")
        n = max(len(expected), len(layer.blobs))
        for i in range(n):
            found = tuple(layer.blobs[i].shape) if i < len(layer.blobs) else None
            want = expected[i] if i < len(expected) else None
            row.blobs.append(BlobCheck(i, found, None if want is None else tuple(want), False,
                                       "blob count differs"))
        return row
    row.blobs = [_check_blob(b, e, why) for b, e in zip(layer.blobs, expected)]
    if any(b.ok is False for b in row.blobs):
        row.status = MISMATCH
        row.message = "; ".join(f"blob {b.index}: {b.reason}" for b in row.blobs if b.ok is False)
    elif any(b.ok is None for b in row.blobs):
        row.status = UNKNOWN
        row.message = "some expected param shapes are unknown" + _because(why)
    return row


def whole_shapes(param_shapes):
    """Param shapes with a partly open shape (a template's `${N}`) as None: unknown to compare."""
    return {name: None if shapes is None else
            [None if s is None or None in s else s for s in shapes]
            for name, shapes in param_shapes.items()}


def wanted_shapes(analysis):
    """`whole_shapes` of the layers that need weights from a file: a layer whose every param
    is shared (`param { name }`) with an earlier layer reads that layer's blobs, as the
    scales of DeepLab's multi-scale nets do, so Caffe loads nothing into it."""
    owned, shared = set(), set()
    for node in analysis.graph.nodes:
        names = [spec.name for spec in node.layer.param]
        count = len(analysis.param_shapes.get(node.name) or ())
        if count and len(names) >= count and all(names[:count]) and owned.issuperset(names[:count]):
            shared.add(node.name)
        owned.update(n for n in names if n)
    return {name: shapes for name, shapes in whole_shapes(analysis.param_shapes).items()
            if name not in shared}


def first_problem(report):
    """A one-line description of the first layer whose weights would not load, or None."""
    for row in report.layers:
        if row.status in (MISMATCH, NOT_INITIALISED):
            return f"layer '{row.name}': {row.message or row.status}"
    return None


def compare(expected: dict, summary, why=None) -> CheckReport:
    """Check a caffemodel summary against the net's param shapes {layer: [shape, ...]}.

    `expected` holds every layer of the phase-filtered net ([] for layers without
    params, None when the shapes are unknown). Rows come in file order, then the
    net's layers that the file lacks; layers with no blobs on either side get none.
    `why`: {layer: why its shapes are unknown} (Analysis.unknown_reasons), quoted in
    the rows that cannot be decided.
    """
    why = why or {}
    rows = []
    seen = set()
    for layer in summary.layers:
        if not layer.blobs and not expected.get(layer.name):
            # Nothing to load and nothing wanted (ReLU, Data...): not worth a row.
            seen.add(layer.name)
            continue
        if layer.name not in expected:
            rows.append(LayerCheck(layer.name, UNUSED, layer.type,
                                   [BlobCheck(b.index, tuple(b.shape), None, None)
                                    for b in layer.blobs],
                                   "no layer of this name in the net; Caffe ignores it"))
            continue
        seen.add(layer.name)
        rows.append(_check_layer(layer, expected[layer.name], why.get(layer.name, "")))
    for name, shapes in expected.items():
        if name in seen:
            continue
        if shapes is None:
            rows.append(LayerCheck(name, UNKNOWN, None, [],
                                   "not in the weights, and its param count is unknown"
                                   + _because(why.get(name))))
        elif shapes:
            wanted = ", ".join("?" if s is None else fmt_shape(s) for s in shapes)
            rows.append(LayerCheck(name, NOT_INITIALISED, None,
                                   [BlobCheck(i, None, tuple(s) if s is not None else None, False,
                                              "no weights")
                                    for i, s in enumerate(shapes)],
                                   f"no weights for its params {wanted}; Caffe would leave "
                                   "them at their filler values"))
    return CheckReport(rows)


_WORST_FIRST = (MISMATCH, NOT_INITIALISED, UNKNOWN, OK, UNUSED)


def merge(reports):
    """One report for a net checked in several phases (Caffe loads the weights into each):
    a layer's worst row over the phases that have it; unused only where none uses it."""
    rows = {}
    for report in reports:
        for row in report.layers:
            old = rows.get(row.name)
            if old is None or _WORST_FIRST.index(row.status) < _WORST_FIRST.index(old.status):
                rows[row.name] = row
    return CheckReport(list(rows.values()))


def format_report(report, *, show_ok=True):
    """A readable table: one line per layer, problems spelt out, a count line at the end."""
    labels = {OK: "ok", MISMATCH: "MISMATCH", NOT_INITIALISED: "NOT INITIALISED",
              UNUSED: "unused weights", UNKNOWN: "unknown"}
    rows = [r for r in report.layers if show_ok or r.status != OK]
    width = max([len(r.name) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'status':<15}  details"] if rows else \
        ["no problems: every layer with params loads"]
    for r in rows:
        if r.status == OK:
            detail = ", ".join(fmt_shape(b.found) for b in r.blobs)
        elif r.status == UNUSED:
            detail = ", ".join(fmt_shape(b.found) for b in r.blobs) or "(no blobs)"
        else:
            detail = r.message
        lines.append(f"{r.name:<{width}}  {labels[r.status]:<15}  {detail}".rstrip())
    counts = report.counts()
    lines.append(
        f"{counts[OK]} ok, {counts[MISMATCH]} mismatched, {counts[NOT_INITIALISED]} not "
        f"initialised, {counts[UNUSED]} unused weights, {counts[UNKNOWN]} unknown: "
        + report.verdict)
    return "\n".join(lines)
