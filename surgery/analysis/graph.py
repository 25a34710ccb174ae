"""The layer graph of a net: which layers survive the phase, who writes and reads each blob.

Caffe builds a net in file order and refuses a bottom that no earlier layer made,
so file order is always a topological order; `build_graph` checks exactly that and
reports the first offending layer by name instead of letting a later stage guess.
"""

from typing import NamedTuple

from ..errors import SurgeryError
from ..io.message import copy_except
from ..layers import rule_for

PHASES = ("TRAIN", "TEST")


class Node(NamedTuple):
    """One kept layer. `index` is its position in the *input* net's `layer` list;
    `layer` is the kept copy in `Graph.net`; `rule` is its registry rule (the unknown
    rule when the analysis finds its geometry unknowable, whatever its type)."""

    index: int
    layer: object
    name: str
    type: str
    bottoms: tuple
    tops: tuple
    rule: object


class Graph:
    """Kept layers in file order plus blob bookkeeping (see module docstring)."""

    def __init__(self, net, nodes, header_inputs):
        self.net = net
        self.nodes = nodes
        self.header_inputs = header_inputs  # legacy `input:` header names, no producer node
        self.memo = {}                      # what analysis derives from the graph alone
        self._writers = {}
        self._consumers = {}
        self._grid_inputs = {}              # node index -> grid_inputs(node)
        for node in nodes:
            for blob in node.bottoms:
                self._consumers.setdefault(blob, []).append(node)
            for blob in node.tops:
                self._writers.setdefault(blob, []).append(node)
        self._by_name = {node.name: node for node in nodes}
        self.blobs = list(header_inputs) + [b for b in self._writers if b not in header_inputs]
        self.inputs = list(header_inputs) + [
            top for node in nodes if not node.bottoms for top in node.tops
        ]

    def producer(self, blob):
        """The first layer writing `blob` (None for a header input or an unknown blob)."""
        writers = self._writers.get(blob)
        return writers[0] if writers else None

    def writers(self, blob):
        """The producer, then every in-place layer rewriting `blob`, in file order."""
        return list(self._writers.get(blob, ()))

    def last_writer(self, blob):
        """The layer whose output the blob finally holds (what OpenCV's forward(name) needs)."""
        writers = self._writers.get(blob)
        return writers[-1] if writers else None

    def consumers(self, blob):
        """Every layer that reads `blob`, in-place layers included, in file order."""
        return list(self._consumers.get(blob, ()))

    def node(self, name):
        """The kept layer called `name`; SurgeryError if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise SurgeryError("no such layer in the net (after phase filtering)", layer=name) from None

    def __contains__(self, name):
        return name in self._by_name

    def blobs_in_run_order(self):
        """Blobs in the order their last writer runs (an in-place chain counts at its end)."""
        order = {}
        for node in self.nodes:
            for top in node.tops:
                order.pop(top, None)
                order[top] = None
        return list(order)

    def downstream_blobs(self, layer_names):
        """Blobs written by the named layers or computed from them (in file order)."""
        tainted = set()
        for node in self.nodes:
            if node.name in layer_names or any(b in tainted for b in node.bottoms):
                tainted.update(node.tops)
        return tainted

    def grid_inputs(self, node):
        """The bottoms of `node` that carry the spatial grid, in order (a join's are all its
        bottoms; any other layer's, its first): its rule decides, once per node."""
        found = self._grid_inputs.get(node.index)
        if found is None:
            found = self._grid_inputs[node.index] = [
                node.bottoms[i] for i in node.rule.grid_bottoms(node.layer)
                if i < len(node.bottoms)]
        return found

    def is_in_place(self, node, blob):
        """True when `node` rewrites `blob` instead of creating it."""
        return blob in node.bottoms and blob in node.tops


def _phase_name(value):
    if isinstance(value, str):
        name = value.upper()
        if name not in PHASES:
            raise SurgeryError(f"unknown phase '{value}'; use TRAIN or TEST")
        return name
    return PHASES[int(value)]


def _rule_met(rule, phase, level, stages):
    """Caffe's StateMeetsRule: every condition the rule states must hold."""
    if rule.HasField("phase") and PHASES[rule.phase] != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def layer_kept(layer, *, phase, level=0, stages=()):
    """Whether Caffe would instantiate `layer` in this net state."""
    if layer.include and layer.exclude:
        raise SurgeryError("a layer may have include rules or exclude rules, not both",
                           layer=layer.name)
    if layer.include:
        return any(_rule_met(r, phase, level, stages) for r in layer.include)
    return not any(_rule_met(r, phase, level, stages) for r in layer.exclude)


def _check_order(nodes, header_inputs, phase, filtered=None):
    """Caffe's own wiring checks, with a message that names the layer."""
    filtered = filtered or {}
    made_by = {name: None for name in header_inputs}
    later = {}
    for node in nodes:
        for blob in node.tops:
            later.setdefault(blob, node.name)
    for node in nodes:
        for blob in node.bottoms:
            if blob in made_by:
                continue
            if blob in later:
                raise SurgeryError(
                    f"bottom '{blob}' is only produced later, by layer '{later[blob]}'; Caffe needs "
                    "every bottom made by an earlier layer (a cycle or a misordered file)",
                    layer=node.name, blob=blob)
            where, hint = "", ""
            if blob in filtered:
                other = "TRAIN" if phase == "TEST" else "TEST"
                where, hint = f"; layer '{filtered[blob]}' makes it only outside {phase}", \
                    f"try --phase {other}"
            raise SurgeryError(f"bottom '{blob}' is not produced by any layer in phase "
                               f"{phase}{where}", layer=node.name, blob=blob, hint=hint)
        seen = set()
        for i, blob in enumerate(node.tops):
            if blob in seen:
                raise SurgeryError(f"top '{blob}' is listed twice", layer=node.name, blob=blob)
            seen.add(blob)
            in_place = i < len(node.bottoms) and node.bottoms[i] == blob
            if blob in made_by and not in_place:
                first = made_by[blob] or "the input header"
                raise SurgeryError(
                    f"top '{blob}' is already produced by '{first}'; only an in-place layer "
                    "(top i equal to bottom i) may write it again", layer=node.name, blob=blob)
            made_by.setdefault(blob, node.name)


def _header_inputs(net):
    return list(net.input)


def build_graph(net, *, phase="TEST", level=None, stages=None, copy=True):
    """Filter `net` for a phase (plus the net's own level/stages) and index its blobs.
    The nodes hold a copy of the kept layers, or with `copy=False` the layers of `net`
    itself (and `Graph.net` is `net`, for its header).

    Raises SurgeryError for V1 `layers` (upgrade first), duplicate layer names,
    bottoms nothing produced earlier, and tops written twice (other than in place).
    """
    if len(net.layers) and not len(net.layer):
        raise SurgeryError("the net uses legacy V1 'layers'; load it with upgrade enabled")
    phase = _phase_name(phase)
    if level is None:
        level = net.state.level if net.HasField("state") else 0
    if stages is None:
        stages = tuple(net.state.stage) if net.HasField("state") else ()
    keep, picked, names, filtered = [], [], {}, {}
    for index, layer in enumerate(net.layer):
        keep.append(layer_kept(layer, phase=phase, level=level, stages=stages))
        if not keep[-1]:
            for top in layer.top:
                filtered.setdefault(top, layer.name)
            continue
        name = layer.name or f"<unnamed layer #{index}>"
        if name in names:
            raise SurgeryError(f"two layers share the name (also layer #{names[name]})", layer=name)
        names[name] = index
        picked.append((index, name, layer))
    if copy:
        kept = _kept_copy(net, keep)
        layers = kept.layer
    else:
        kept, layers = net, [layer for _, _, layer in picked]
    nodes = [Node(index, held, name, layer.type, tuple(layer.bottom), tuple(layer.top),
                  rule_for(layer.type))
             for (index, name, layer), held in zip(picked, layers)]
    header = _header_inputs(net)
    _check_order(nodes, header, phase, filtered)
    return Graph(kept, nodes, header)


def _kept_copy(net, keep):
    """A copy of `net` with only the layers `keep` marks (each layer copied once)."""
    if all(keep):
        kept = type(net)()
        kept.CopyFrom(net)
        return kept
    kept = copy_except(net, ("layer",))
    kept.layer.extend(layer for layer, wanted in zip(net.layer, keep) if wanted)
    return kept


def described_phases(net):
    """The phases the file describes: a train-only file (data layer `include { phase: TRAIN }`)
    has no TEST net to plan, a train_val file has both, a deploy file is TEST."""
    included = {PHASES[r.phase] for layer in net.layer for r in layer.include if r.HasField("phase")}
    excluded = any(r.HasField("phase") for layer in net.layer for r in layer.exclude)
    if excluded or included == set(PHASES):
        return ["TEST", "TRAIN"]
    return sorted(included) or ["TEST"]


def complete_phases(net):
    """({phase: Graph} for the phases, TEST first, in which the net builds, {phase: error}
    for the others). A train file whose data layer exists only in TRAIN has no complete
    TEST net; a deploy file builds in both, to the same layers."""
    built, failed = {}, {}
    for phase in ("TEST", "TRAIN"):
        try:
            built[phase] = build_graph(net, phase=phase)
        except SurgeryError as exc:
            failed[phase] = exc
    return built, failed
