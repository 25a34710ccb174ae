"""The one forward walk that every conversion shares, and its record of what changed.

A pass is a *policy*: which strides go or come back, which layers become something
else. The walk visits the layers of one phase in file order, keeps each blob's grid
(grid.Grid: where converted samples sit on the original's) and whether the blob still
holds the original numbers on that grid, and asks, per layer, the policy first
(`policy.visit`) and else the layer's registry rule (`rule.regrid`) how the layer
changes. Joins must see one grid on all inputs.

`convert(net, policy, ...)` runs the walk in every phase the file describes, checks
that the phases agree on every layer they share, and returns the new net (edits
addressed by layer name) with one list of `Change`s.
"""

from typing import NamedTuple

from ..errors import SurgeryError
from ..analysis.graph import described_phases, layer_kept
from .grid import SAME
from .regrid import APPROXIMATE, EXACT, Regrid, Step, Unreachable


class Change(NamedTuple):
    """One layer the conversion touched, for the summary, --json and the report."""

    layer: str
    type: str
    action: str             # rewrite | keep | global | remove | convert | add
    before: object = None   # Window or None
    after: object = None    # Window or None
    status: str = EXACT     # EXACT | APPROXIMATE | ADAPTED
    note: str = ""
    details: tuple = ()     # pass-specific (key, value) pairs, e.g. fcn's new name

    @property
    def exact(self):
        return self.status == EXACT

    def get(self, key, default=None):
        """A pass-specific detail."""
        return dict(self.details).get(key, default)

    def to_json(self):
        win = lambda w: None if w is None else {k: list(v) for k, v in w._asdict().items()}
        out = {"layer": self.layer, "type": self.type, "action": self.action,
               "before": win(self.before), "after": win(self.after), "status": self.status,
               "exact": self.exact, "note": self.note}
        out.update((k, list(v) if isinstance(v, tuple) else v) for k, v in self.details)
        return out


class Edit(NamedTuple):
    """Replace (layer set), remove (layer None) or, with `after`, insert a layer.
    `name` addresses the layer; `phase` picks the right one where a train_val file
    gives two phases' layers one name."""

    name: str
    phase: str
    layer: object = None
    after: str = None       # insert `layer` after the layer of this name


class Walk(NamedTuple):
    """One phase walked under one policy."""

    phase: str
    analysis: object
    grids: dict             # blob -> Grid
    exact: dict             # blob -> bool: the blob holds the original numbers on its grid
    outcomes: dict          # layer name -> Regrid (every layer visited)
    changes: list           # (node, new layer or None, Change), in file order
    heads: list             # nodes whose weights are sized for the original map
    issues: dict            # layer name -> why no acceptable rewrite exists
    policy: object = None
    asked: dict = None      # node index -> (bottom grids, input geometry, the outcome)
    blocked: tuple = ()     # layers no rewrite puts on the policy's grid (Unreachable)


def walk(analysis, policy, *, phase="TEST", removed=frozenset(), again=None):
    """Visit every kept layer of `analysis` once (see the module docstring).

    `again`: an earlier Walk of the same analysis (dilate walks once more after removing
    the head). Under the same policy, a layer whose bottoms sit on the grids, and have the
    geometry, they had there gets the outcome it got there: the rule would answer the
    same, so it is not asked again."""
    graph = analysis.graph
    grids = {b: SAME for b in graph.header_inputs}
    exact = {b: True for b in graph.header_inputs}
    outcomes, changes, heads, issues, asked, blocked = {}, [], [], {}, {}, []
    earlier = again if again is not None and again.policy is policy and \
        again.analysis is analysis else None
    side = analysis.resampled_branches()
    geometry = analysis.carried_geometry()
    for node in graph.nodes:
        if node.name in removed:
            continue
        rule = node.rule
        spatial = graph.grid_inputs(node)
        ins = [grids.get(b, SAME) for b in spatial]
        grid_in = ins[0] if ins else SAME
        if any(g != grid_in for g in ins[1:]):     # (no set: hashing a Fraction is slow)
            detail = ", ".join(f"'{b}' {g.text()}" for b, g in zip(spatial, ins))
            issues.setdefault(node.name, f"branches meet on different grids after the rewrite "
                                         f"({detail}); the join cannot be exact")
        geometry_in = geometry.get(node.bottoms[0]) if node.bottoms else None
        bottom_grids = tuple(grids.get(b) for b in node.bottoms)
        before = earlier.asked.get(node.index) if earlier is not None else None
        if before is not None and before[:2] == (bottom_grids, geometry_in):
            outcome = before[2]
            if node.name in earlier.blocked:
                blocked.append(node.name)
        else:
            step = Step(node, grid_in, geometry_in, list(analysis.in_shapes.get(node.name) or []),
                        list(analysis.out_shapes.get(node.name) or []), policy,
                        bool(node.tops) and all(t in side for t in node.tops),
                        policy.wanted(node), bottom_grids)
            try:
                outcome = policy.visit(node, rule, step) or rule.regrid(node.layer, step)
            except Unreachable as exc:
                # Go on as if the layer stayed, so that every layer in the way is found,
                # not only the first (the refusal names them).
                blocked.append(node.name)
                outcome = Regrid(grid=grid_in, status=APPROXIMATE, issue=exc.args[1])
        outcomes[node.name] = outcome
        asked[node.index] = (bottom_grids, geometry_in, outcome)
        if outcome.issue:
            issues.setdefault(node.name, outcome.issue)
        if outcome.head:
            heads.append(node)
        ok = all(exact.get(b, True) for b in node.bottoms) and outcome.status == EXACT
        if outcome.layer is not None or outcome.status != EXACT:
            change = policy.describe(node, rule, outcome)
            if change is not None:
                changes.append((node, outcome.layer, change))
        for top in node.tops:
            grids[top] = outcome.grid if outcome.grid is not None else grid_in
            exact[top] = ok
    return Walk(phase, analysis, grids, exact, outcomes, changes, heads, issues, policy, asked,
                tuple(blocked))


def convert(net, plan_phase, *, phases=None):
    """Run `plan_phase(phase) -> (Walk, removed)` (None: nothing to change in that phase)
    in every phase the net describes; `removed` names the layers to delete, or maps each
    to why. Returns (new net, [Change] in file order, [Walk]).

    A layer shared by the phases must get the same new layer in each."""
    edits, changes, walks, seen = {}, {}, [], {}
    for phase in phases or described_phases(net):
        planned = plan_phase(phase)
        if planned is None:
            continue
        result, removed = planned
        walks.append(result)
        for node, layer, change in result.changes:
            # An unchanged layer is recorded (approximate) without an edit.
            edit = Edit(node.name, phase, layer) if layer is not None else None
            _record(seen, edits, changes, node, edit, change)
        why = removed if isinstance(removed, dict) else dict.fromkeys(removed, None)
        for node in result.analysis.graph.nodes:
            if node.name in why:
                _record(seen, edits, changes, node, Edit(node.name, phase, None),
                        Change(node.name, node.type, "remove",
                               note=why[node.name] or "not needed for the kept outputs"))
    return apply_edits(net, edits.values()), [changes[i] for i in sorted(changes)], walks


def _record(seen, edits, changes, node, edit, change):
    """One edit per layer across phases; phases that disagree are an error."""
    key = node.index
    if key in seen:
        if seen[key] != (edit and edit.layer):
            raise SurgeryError("the TRAIN and TEST phases need different rewrites of this layer",
                               layer=node.name)
        return
    seen[key] = edit and edit.layer
    if edit is not None:
        edits[key] = edit
    changes[key] = change


def apply_edits(net, edits):
    """A copy of `net` with the edits made, layers found by name (and phase)."""
    new = type(net)()
    new.CopyFrom(net)
    names = [layer.name for layer in new.layer]     # kept in step with new.layer
    where = None        # name -> positions; found again after a layer moves or is renamed
    for edit in edits:
        if where is None:
            where = {}
            for i, name in enumerate(names):
                where.setdefault(name, []).append(i)
        if edit.after is not None:
            index = _find(new, where, edit.after, edit.phase) + 1
            layers = list(new.layer)
            layers.insert(index, edit.layer)
            del new.layer[:]
            new.layer.extend(layers)
            names.insert(index, edit.layer.name)
            where = None
        elif edit.layer is None:
            index = _find(new, where, edit.name, edit.phase)
            del new.layer[index]
            del names[index]
            where = None
        else:
            index = _find(new, where, edit.name, edit.phase)
            new.layer[index].CopyFrom(edit.layer)
            if names[index] != edit.layer.name:
                names[index] = edit.layer.name
                where = None
    return new


def _find(net, where, name, phase):
    found = where.get(name, [])
    if len(found) > 1 and phase is not None:
        found = [i for i in found if layer_kept(net.layer[i], phase=phase)] or found
    if not found:
        raise SurgeryError("an edit names a layer the net does not have", layer=name)
    return found[0]
