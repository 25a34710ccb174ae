"""fold: BatchNorm layers (and the Scale after each) folded away for deployment.

At inference a normaliser computes, per channel c, y = a_c * x + b_c with
a = scale / sqrt(var + eps) and b = shift - a * mean (the registry's `channel_affine` says
which blob holds which term for BVLC BatchNorm, PSPNet's BN and SegNet's BN; BVLC stores
mean and var times its moving-average factor f, and f = 0 means zero statistics, as in
Caffe). A Scale after it multiplies in: a = γ·a, b = γ·b + β.

- Folded into the layer before it, when that is a Convolution, Deconvolution or
  InnerProduct whose output nothing else reads: W'[o] = a_o · W[o] for every weight of
  output channel o (the registry's `output_layout` says where o sits: the rows of a
  convolution, axis 1 per group of a Deconvolution, the columns of a transposed
  InnerProduct) and b' = a · b + b (b = 0 when it had no bias: one is added). The conv
  then writes the group's last top, so every blob left in the net holds what it held.
- Otherwise (BN before the convolution, as in pre-activation ResNets and DenseNets, or a
  conv whose output also feeds another layer) the group becomes one Scale with bias,
  γ' = a and β' = b: the Scale keeps its name, or the BN becomes one when it had none.
- Left as it is, and listed with why: a normaliser that uses each batch's own statistics
  at the phase folded (BVLC's `use_global_stats: false`, SegNet's bn_mode LEARN), which
  no fixed weights reproduce.

Training would change what was folded, so a net that describes a TRAIN phase in which a
BN group is still updated (statistics or a non-zero lr_mult) is refused unless
`phase="TEST"` asks for the inference net.

`fold(net, summary, phase=None) -> Folded`: the new net, what was folded and left, and the
WeightPlan (surgery.weights.plan) that the writer streams: folded layers get `Replaced`
blobs computed from the old ones as they stream, the removed layers are dropped, every
other layer is copied byte for byte.
"""

from typing import NamedTuple

import numpy as np

from .. import layers as registry
from ..analysis.graph import build_graph, described_phases
from ..errors import SurgeryError
from ..io.caffemodel import read_blob
from ..weights.plan import LayerWeights, Replaced, WeightPlan

BAND_BYTES = 1 << 20     # weight bytes read at a time when a folded weight streams
SCALE_TYPE = registry.Scale.types[0]


class Fold(NamedTuple):
    """One group folded: `into` absorbs `removed` ("weights": a conv/IP's weights and
    bias; "scale": one Scale layer)."""

    into: str
    removed: tuple
    kind: str
    bias_added: bool

    def to_json(self):
        return {"into": self.into, "removed": list(self.removed), "kind": self.kind,
                "bias_added": self.bias_added}


class Left(NamedTuple):
    """A layer not folded (or not folded into), and why."""

    layer: str
    why: str


class Folded(NamedTuple):
    net: object          # the new NetParameter
    folds: list
    left: list
    plan: WeightPlan
    phase: str

    def to_json(self):
        return {"phase": self.phase, "folded": [f.to_json() for f in self.folds],
                "left": [{"layer": l.layer, "why": l.why} for l in self.left],
                "removed": sorted(self.plan.drop)}


# ---------------------------------------------------------------------------
# The graph, blob version by blob version
# ---------------------------------------------------------------------------

class _Flow:
    """Who reads what each layer wrote: in-place chains make one blob name hold several
    values in turn, and a layer reads the one its last earlier writer left."""

    def __init__(self, graph):
        self.source, self.readers = {}, {}
        current = {}
        for node in graph.nodes:
            for blob in node.bottoms:
                writer = current.get(blob)
                self.source[(node.name, blob)] = writer
                self.readers.setdefault((writer.name if writer else None, blob), []).append(node)
            for blob in node.tops:
                current[blob] = node

    def writer_of(self, node, blob):
        return self.source.get((node.name, blob))

    def readers_of(self, node, blob):
        return self.readers.get((node.name, blob), [])


# ---------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------

class _Group(NamedTuple):
    norm: object            # the normaliser's Node
    scale: object           # the Scale Node after it, or None
    facts: tuple            # ChannelAffine per member

    @property
    def members(self):
        return (self.norm,) + ((self.scale,) if self.scale is not None else ())

    @property
    def last_top(self):
        return self.members[-1].tops[0]


def fold(net, summary, *, phase=None):
    """Fold the normalisers of `net` (an upgraded NetParameter, not modified) whose weights
    are in `summary` (io.caffemodel.Summary). `phase` None folds the TEST net after
    checking that training updates nothing folded; "TEST" folds the TEST net regardless."""
    described = described_phases(net)
    if phase != "TEST" and "TRAIN" in described:
        _refuse_trained(build_graph(net, phase="TRAIN"))
    phase = phase or ("TEST" if "TEST" in described else "TRAIN")
    graph = build_graph(net, phase=phase)
    flow = _Flow(graph)
    new = type(net)()
    new.CopyFrom(net)
    folds, left, edits, drop = [], [], [], set()
    with _Statistics(summary) as stats:
        for node in graph.nodes:
            if not node.rule.normalizes:
                continue
            group, why = _group(node, flow, phase)
            if group is None:
                left.append(Left(node.name, why))
                continue
            a, b = _affine(stats, group)
            target = flow.writer_of(node, node.bottoms[0])
            into = _foldable(target, node, flow)
            if into is True:
                edits.append(_into_weights(stats, target, a, b, new, group))
                folds.append(Fold(target.name, tuple(m.name for m in group.members), "weights",
                                  target.rule.param_count(target.layer, len(target.bottoms)) == 1))
                drop.update(m.name for m in group.members)
            else:
                if into:
                    left.append(Left(target.name, into))
                edits.append(_into_scale(summary, group, a, b, new))
                kept = group.scale or group.norm
                removed = tuple(m.name for m in group.members if m is not kept)
                drop.update(removed)
                folds.append(Fold(kept.name, removed, "scale", True))
    gone = {node.index for node in graph.nodes if node.name in drop}
    keep = [layer for i, layer in enumerate(new.layer) if i not in gone]
    del new.layer[:]
    new.layer.extend(keep)
    return Folded(new, folds, left, WeightPlan(edit=tuple(edits), drop=frozenset(drop)), phase)


def _refuse_trained(graph):
    """A BN group that TRAIN still updates would not be what was folded."""
    flow = _Flow(graph)
    for node in graph.nodes:
        if not node.rule.normalizes:
            continue
        members = [node] + [s for s in [_follower(node, flow, "TRAIN")] if s is not None]
        for member in members:
            why = member.rule.training_updates(member.layer)
            if why:
                raise SurgeryError(f"{why}, so training still changes what a fold would fix; "
                                   "fold makes an inference net: give --phase TEST to fold the "
                                   "TEST net", layer=member.name)


def _follower(node, flow, phase):
    """The Scale after a normaliser that folds with it: the one reader of its output, a
    per-channel map on one bottom that is no normaliser itself."""
    readers = flow.readers_of(node, node.tops[0])
    if len(readers) != 1:
        return None
    nxt = readers[0]
    if nxt.rule.normalizes or len(nxt.tops) != 1:
        return None
    facts = nxt.rule.channel_affine(nxt.layer, phase)
    return nxt if facts is not None and not facts.batch else None


def _group(node, flow, phase):
    """(group, "") or (None, why not)."""
    facts = node.rule.channel_affine(node.layer, phase)
    if facts is None:
        return None, "not a per-channel map of axis 1"
    if facts.batch:
        return None, facts.batch
    if len(node.bottoms) != 1 or len(node.tops) != 1:
        return None, "it has more than one bottom or top"
    scale = _follower(node, flow, phase)
    members = (node,) + ((scale,) if scale is not None else ())
    return _Group(node, scale, tuple(m.rule.channel_affine(m.layer, phase) for m in members)), ""


def _foldable(target, node, flow):
    """True when the normaliser can fold into `target` (the layer whose output it reads);
    else why not ("" when `target` is no layer with output weights at all)."""
    if target is None or target.rule.output_layout(target.layer) is None:
        return ""
    if len(target.tops) != 1 or target.tops[0] != node.bottoms[0]:
        return ""
    shared = [p.name for p in target.layer.param if p.name]
    if shared:
        return (f"its weights are shared with other layers (param {{ name: '{shared[0]}' }}), "
                f"so '{node.name}' cannot fold into it (it became one Scale instead)")
    others = [r.name for r in flow.readers_of(target, node.bottoms[0]) if r is not node]
    if others:
        return (f"its output also feeds {', '.join(others)}, so '{node.name}' cannot fold "
                "into it (it became one Scale instead)")
    return True


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

class _Statistics:
    """The small blobs a fold reads (a normaliser's statistics, a Scale's terms, a conv's
    bias), from the caffemodel opened once: `read(info, index)` is io.caffemodel's
    read_blob. `.summary` is the caffemodel's Summary."""

    def __init__(self, summary):
        self.summary, self.file = summary, None

    def __enter__(self):
        try:
            self.file = open(self.summary.path, "rb")
        except OSError as exc:
            raise SurgeryError(f"cannot read caffemodel: {exc.strerror}",
                               file=self.summary.path) from None
        return self

    def __exit__(self, *exc):
        self.file.close()

    def read(self, info, index):
        return read_blob(self.summary, info, index, file=self.file)


def _blobs(summary, node):
    info = summary.find(node.name)
    if info is None:
        raise SurgeryError(f"the weights ({summary.path}) have no layer of this name",
                           layer=node.name)
    return info


def _affine(stats, group):
    """(a, b) in float64: the group computes a_c * x + b_c per channel."""
    summary = stats.summary
    a = b = None
    for node, facts in zip(group.members, group.facts):
        info = _blobs(summary, node)
        wanted = [i for i in facts[:5] if i is not None]
        if wanted and max(wanted) >= len(info.blobs):
            raise SurgeryError(f"the weights ({summary.path}) hold {len(info.blobs)} blob(s) "
                               f"here, a {node.type} needs {max(wanted) + 1}", layer=node.name)

        def read(index, default):
            if index is None:
                return default
            return stats.read(info, index).astype(np.float64).reshape(-1)

        scale, shift = read(facts.scale, 1.0), read(facts.shift, 0.0)
        mean, var = read(facts.mean, 0.0), read(facts.var, None)
        if facts.factor is not None:
            f = read(facts.factor, None)
            if f.size != 1:
                raise SurgeryError(f"its moving-average factor blob holds {f.size} values, "
                                   "not 1", layer=node.name)
            k = 0.0 if f[0] == 0 else 1.0 / f[0]
            mean, var = mean * k, var * k
        inv = 1.0 if var is None else 1.0 / np.sqrt(var + np.float64(np.float32(facts.eps)))
        mul = scale * inv
        add = shift - mul * mean
        sizes = {np.size(v) for v in (mul, add) if np.ndim(v)}
        if len(sizes) > 1:
            raise SurgeryError(f"its blobs hold different channel counts ({sorted(sizes)})",
                               layer=node.name)
        mul, add = np.broadcast_arrays(mul, add)
        if a is None:
            a, b = mul, add
        elif mul.size != a.size:
            raise SurgeryError(f"it has {mul.size} channels, the layer before it {a.size}",
                               layer=node.name)
        else:
            a, b = mul * a, mul * b + add
    return np.atleast_1d(a).copy(), np.atleast_1d(b).copy()


def _weight_shape(blob, rank):
    """The weight's own axes: a legacy 4-D blob carries leading 1s for a 2-D weight."""
    shape = tuple(blob.shape)
    if len(shape) > rank and all(d == 1 for d in shape[:len(shape) - rank]):
        shape = shape[len(shape) - rank:]
    if len(shape) != rank:
        return None
    return shape


def _multiplier(layout, shape, a, first, rows):
    """a_o for each weight element of rows first..first+rows-1, broadcastable to them."""
    if layout.axis == 0:
        return a[first:first + rows].reshape((rows,) + (1,) * (len(shape) - 1))
    per_group = shape[0] // layout.groups
    group = np.arange(first, first + rows) // per_group
    channel = group[:, None] * shape[1] + np.arange(shape[1])[None, :]
    return a[channel].reshape((rows, shape[1]) + (1,) * (len(shape) - 2))


def _scaled_weight(layout, shape, a):
    """Replaced values: the weight, band by band of rows, times each output's a_o (in the
    weight's own precision, in place in one buffer the writer has written before it asks
    for the next band: memory stays at one band)."""
    def values(inputs):
        with inputs.open(0) as reader:
            scale = a.astype(reader.native)
            row = int(np.prod(shape[1:], dtype=np.int64))
            per_band = max(1, BAND_BYTES // max(1, row * reader.dtype.itemsize))
            buffer = np.empty(min(per_band, shape[0]) * row, reader.native)
            for first in range(0, shape[0], per_band):
                rows = min(per_band, shape[0] - first)
                band = reader.read(first * row, rows * row, out=buffer)
                band = band.reshape((rows,) + shape[1:])
                band *= _multiplier(layout, shape, scale, first, rows)
                yield band
    return values


def _constant_values(values):
    def make(inputs):
        yield values
    return make


def _into_weights(stats, target, a, b, new, group):
    """LayerWeights of `target` with the group folded in; `new` (the net) edited: a bias
    term where it had none, and the conv writes the group's last top."""
    summary = stats.summary
    layout = target.rule.output_layout(target.layer)
    info = _blobs(summary, target)
    has_bias = target.rule.param_count(target.layer, len(target.bottoms)) == 2
    if len(info.blobs) != (2 if has_bias else 1):
        raise SurgeryError(f"the weights ({summary.path}) hold {len(info.blobs)} blob(s) here, "
                           f"the net needs {2 if has_bias else 1}", layer=target.name)
    shape = _weight_shape(info.blobs[0], layout.rank)
    if shape is None or shape[0] % layout.groups:
        raise SurgeryError(f"its weight blob has shape {list(info.blobs[0].shape)}, not a "
                           f"{layout.rank}-D weight", layer=target.name)
    channels = shape[layout.axis] * (layout.groups if layout.axis == 1 else 1)
    if channels != a.size:
        raise SurgeryError(f"it has {channels} output channels, '{group.norm.name}' after it "
                           f"normalises {a.size}", layer=target.name)
    dtype = np.float64 if info.blobs[0].dtype == "double" else np.float32
    if has_bias:
        old = stats.read(info, 1).astype(np.float64).reshape(-1)
        if old.size != a.size:
            raise SurgeryError(f"its bias holds {old.size} values, not {a.size}",
                               layer=target.name)
        bias = Replaced((a.size,), _constant_values((a * old + b).astype(dtype)), like=1)
    else:
        bias = Replaced((a.size,), _constant_values(b.astype(dtype)), like=0)
    weight = Replaced(tuple(info.blobs[0].shape), _scaled_weight(layout, shape, a), like=0)
    layer = target.rule.with_bias_term(target.layer) if not has_bias else target.layer
    layer.top[0] = group.last_top
    new.layer[target.index].CopyFrom(layer)
    return LayerWeights(target.name, (weight, bias), source=target.name)


def _into_scale(summary, group, a, b, new):
    """LayerWeights of the one Scale the group becomes; `new` (the net) edited: the Scale
    after the normaliser reads its bottom and gets a bias, or the normaliser becomes one."""
    norm, scale = group.norm, group.scale
    like = _blobs(summary, scale or norm).blobs[0]
    dtype = np.float64 if like.dtype == "double" else np.float32
    blobs = (Replaced((a.size,), _constant_values(a.astype(dtype))),
             Replaced((a.size,), _constant_values(b.astype(dtype))))
    if scale is not None:
        layer = scale.rule.with_bias_term(scale.layer)
        layer.bottom[0] = norm.bottoms[0]
        new.layer[scale.index].CopyFrom(layer)
        return LayerWeights(scale.name, blobs, source=scale.name)
    layer = norm.rule.as_scale(norm.layer)
    new.layer[norm.index].CopyFrom(layer)
    return LayerWeights(norm.name, blobs, source=norm.name, type=SCALE_TYPE,
                        bottoms=tuple(layer.bottom), tops=tuple(layer.top))


def format_folded(result):
    """The text summary: one line per group, then what was left and why."""
    into = sum(f.kind == "weights" for f in result.folds)
    lines = [f"fold ({result.phase}): {into} group(s) folded into the layer before them, "
             f"{len(result.folds) - into} made one Scale, {len(result.plan.drop)} layer(s) "
             "removed"]
    for f in result.folds:
        if f.kind == "weights":
            extra = " (bias added)" if f.bias_added else ""
            lines.append(f"  {f.into} <- {' + '.join(f.removed)}{extra}")
        elif f.removed:
            lines.append(f"  {f.into} <- {' + '.join(f.removed)} (one Scale)")
        else:
            lines.append(f"  {f.into} -> one Scale")
    for item in result.left:
        lines.append(f"  left: {item.layer}: {item.why}")
    return "\n".join(lines) + "\n"
