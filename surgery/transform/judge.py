"""A pair of nets judged as a conversion, the way `dilate` judges its own.

`verify` and `report` are given two files and no record of how the second was made.
They ask `judge`, which walks ORIGINAL again (transform/walk.py) under a policy read off
CONVERTED: each window layer keeps the stride it has there, poolings may widen and
dilations round (the file says what was chosen), the poolings it made global are
global, the layers it lacks are removed, and resamplers follow the joins they meet, as
in `dilate`. The walk's rewrite of each layer is then held against the file:

- the same geometry (window, or a resampler's shape parameters): the walk's status;
- other geometry: APPROXIMATE, "not the exact rewrite" (PSPNet's convention, multi-grid,
  a conversion made for another input size, or a mistake), with the detail `deviation`:
  an exact rewrite exists, so `verify` holds what it computes to the tolerance;
- another type under the same name, or a layer ORIGINAL lacks: NEW; a layer CONVERTED
  lacks: REMOVED; the same geometry with other settings (a bias added by `fold`): EXACT.

The result is a Conversion (transform/conversion.py), the same value `dilate` reports.
"""

from ..analysis.analyse import analyse
from ..errors import SurgeryError
from ..layers import SHAPE_PARAMS, Unknown, has_field
from .conversion import NEW, conclude
from .plan import DilatePolicy, PhasePlan, adapt_resamplers
from .regrid import APPROXIMATE, EXACT
from .walk import Change, walk


class ReplayPolicy(DilatePolicy):
    """A DilatePolicy whose stride choices are the converted file's."""

    FIELDS = DilatePolicy.FIELDS + ("strides",)

    def __init__(self, *args, strides=None, **options):
        super().__init__(*args, **options)
        self.strides = {} if strides is None else strides     # layer -> stride kept

    def stride(self, step, window):
        return self.strides.get(step.node.name, window.stride)


def judge(original, converted, *, input_shapes=None, phase="TEST", unknowns=(None, None)):
    """The Conversion of the NetParameter `original` into `converted`, in `phase`;
    `unknowns` holds what each file leaves open (NetFile.unknowns from `load_net`).
    SurgeryError when either net cannot be analysed."""
    before = analyse(original, input_shapes=input_shapes, phase=phase, unknowns=unknowns[0])
    after = analyse(converted, input_shapes=input_shapes, phase=phase, unknowns=unknowns[1])
    theirs = {node.name: node for node in after.graph.nodes}
    removed = {n.name for n in before.graph.nodes if n.name not in theirs}
    strides, globalised = {}, set()
    for node in before.graph.nodes:
        other = theirs.get(node.name)
        if other is None or other.type != node.type:
            continue
        rule = node.rule
        window = _window(rule, other.layer)
        if window not in (None, "?") and rule.reads_window(node.layer):
            strides[node.name] = window.stride
        if rule.is_global(other.layer) and not rule.is_global(node.layer):
            globalised.add(node.name)
    policy = ReplayPolicy(0, pooling="cover", dilation="round",
                          globalised=frozenset(globalised), strides=strides)
    result = walk(before, policy, phase=phase, removed=removed)
    policy, result = adapt_resamplers(original, before, policy, result, phase, removed,
                                      unknowns[0])
    changes = _held_against(result, before, after, theirs, removed)
    return conclude(PhasePlan(result, policy, removed), converted, changes,
                    input_shapes=input_shapes, unknowns=unknowns[0], net=original, after=after,
                    decided=_decided(result, before, theirs, changes))


def _decided(result, before, theirs, changes):
    """{pool: per-axis decision}: for each pooling the file took a stride from (exact, or
    off only by the pad Caffe's partial CEIL window asks for), whether it keeps that
    window: a pad grown by at least stride - 1 beyond the scaled one."""
    fine = {c.layer for c in changes if c.status == EXACT or c.get("other_size")}
    decided = {}
    for node in before.graph.nodes:
        rule = node.rule
        if node.name not in fine or node.name not in theirs or rule.dilatable \
                or not rule.reads_window(node.layer):
            continue
        old, new = _window(rule, node.layer), _window(rule, theirs[node.name].layer)
        grid = result.grids.get(node.bottoms[0]) if node.bottoms else None
        if "?" in (old, new) or None in (old, new, grid) or new.stride == old.stride:
            continue
        decided[node.name] = tuple(
            n == 1 < s and p2 - p * f >= s - 1
            for s, n, p, p2, f in zip(old.stride, new.stride, old.pad, new.pad, grid.factor))
    return decided


def _window(rule, layer):
    try:
        return rule.window(layer)
    except (SurgeryError, Unknown):
        return "?"


def _geometry(node, layer):
    """What decides where a layer's outputs sit: its window (and how a pooling rounds, or
    that it is global), else its shape parameters."""
    rule = node.rule
    if rule.makes_data(layer):
        return None
    window = _window(rule, layer)
    if window is not None or rule.is_global(layer):
        return window, rule.rounds_down(layer)
    return tuple((name, getattr(layer, name).SerializeToString(deterministic=True))
                 for name in sorted(SHAPE_PARAMS) if has_field(layer, name))


def _held_against(result, before, after, theirs, removed):
    """[Change] in the converted net's order (removed layers where the original had them):
    the walk's rewrite of each layer held against the file's."""
    walked = {node.name: change for node, _, change in result.changes}
    found = {}
    for node in before.graph.nodes:
        other = theirs.get(node.name)
        if other is None:
            found[node.name] = Change(node.name, node.type, "remove",
                                      note="not in the converted net")
            continue
        rule = node.rule
        outcome = result.outcomes.get(node.name)
        expected = outcome.layer if outcome is not None and outcome.layer is not None \
            else node.layer
        was, now = _window(rule, node.layer), _window(rule, other.layer)
        was = None if was == "?" else was
        now = None if now == "?" else now
        if other.type != node.type:
            found[node.name] = Change(node.name, other.type, "add", status=NEW,
                                      note=f"type {node.type} -> {other.type}")
        elif _geometry(node, expected) != _geometry(other, other.layer):
            found[node.name] = _deviation(node, rule, expected, other.layer, was, now)
        elif outcome is not None and outcome.issue:
            found[node.name] = Change(node.name, node.type, "keep", status=APPROXIMATE,
                                      note=outcome.issue)
        elif node.name in walked:
            found[node.name] = walked[node.name]._replace(after=now)
        elif other.layer != node.layer:
            found[node.name] = Change(node.name, node.type, "rewrite", was, now, EXACT,
                                      "settings changed, grid kept")
    for node in after.graph.nodes:
        if node.name not in found and node.name not in {n.name for n in before.graph.nodes}:
            found[node.name] = Change(node.name, node.type, "add", status=NEW,
                                      note="not in the original")
    order = [n.name for n in after.graph.nodes]
    order += [n.name for n in before.graph.nodes if n.name in removed]
    return [found[name] for name in dict.fromkeys(order) if name in found]


def _deviation(node, rule, expected, actual, was, now):
    """The APPROXIMATE Change of a layer the file writes otherwise than the exact rewrite.
    A pooling that differs only in its pad is Caffe's partial CEIL window decided for
    another input size: detail `other_size`, and the note says how to convert for this
    one."""
    want, have = _window(rule, expected), _window(rule, actual)
    if want in (None, "?") or have in (None, "?"):
        return Change(node.name, node.type, "rewrite", was, now, APPROXIMATE,
                      "not the exact rewrite: its shape parameters differ from the exact "
                      "rewrite's", (("deviation", True),))
    fields = [f"{name} {tuple(h)} where the exact rewrite has {tuple(w)}"
              for name, w, h in zip(want._fields, want, have) if w != h]
    note = "not the exact rewrite: " + "; ".join(fields)
    other_size = not rule.dilatable and want._replace(pad=have.pad) == have
    if other_size:
        note += " (a partial CEIL window decided for another input size)"
    return Change(node.name, node.type, "rewrite", was, now, APPROXIMATE, note,
                  (("deviation", True),) + ((("other_size", True),) if other_size else ()))
