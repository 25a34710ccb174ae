"""Output-stride conversion: the exact a-trous rewrite (NOTES §2, FCN §3.2) and its inverse.

Every blob gets a grid record: `factor` (original stride / new stride, per axis) and
`offset` (the converted index of original position 0). A window layer whose input has
factor f gets dilation*f and pad*f, so its taps land on the pixels they were trained on;
where a stride is removed the layer keeps dilation*f (its input grid did not change) and
its output factor grows. Coarsening reads the same rule the other way.

What cannot be exact is said, never hidden: pooling windows after a removed stride
(Caffe pooling has no dilation), classifier heads whose weights depend on the map size,
and layers that resample the grid. Options choose what to do with each.

`dilate` is the entry point: transform/plan.py plans it, transform/conversion.py judges
the result (the one answer every command reads), transform/reach.py words a refusal.
"""

from typing import NamedTuple

from ..errors import SurgeryError
from ..layers import rule_for
from ..weights.reweight import resized
from .conversion import conclude
from .grid import num, show
from .plan import (CONVENTIONS, DILATION_CHOICES, HEAD_CHOICES, POOLING_CHOICES, Blocked,
                   Options, plan)
from .reach import refusal

__all__ = ["dilate", "dilate_together", "DilateReport", "HEAD_CHOICES", "POOLING_CHOICES", "DILATION_CHOICES",
           "CONVENTIONS"]


class DilateReport(NamedTuple):
    """What `dilate` says about its result: the Conversion (transform/conversion.py, the
    one judgement every command reads) and the net-level numbers around it."""

    conversion: object     # Conversion (settled: without its analyses), or None when
                           # nothing changed
    changes: list          # [Change] in file order (every phase)
    stride_before: object  # Pair at the net's output blob, or None
    stride_after: object
    rf_before: object
    rf_after: object
    deepest: object        # the net's output blob (the deepest on the image grid)
    notes: list
    resized: tuple = ()    # layers given new kernels: weights to rewrite (weights/reweight.py)

    @property
    def exact(self):
        return all(c.exact for c in self.changes)

    @property
    def grids(self):
        return self.conversion.grids if self.conversion else {}

    @property
    def exact_blobs(self):
        return self.conversion.exact_blobs if self.conversion else frozenset()

    @property
    def exact_sizes(self):
        return f"exact for {self.conversion.sizes.text}" if self.conversion else "unchanged"

    def to_json(self):
        pair = lambda p: None if p is None else [num(v) for v in p]
        return {
            "changes": [c.to_json() for c in self.changes],
            "exact": self.exact,
            "deepest_blob": self.deepest,
            "output_stride": {"before": pair(self.stride_before), "after": pair(self.stride_after)},
            "rf": {"before": pair(self.rf_before), "after": pair(self.rf_after)},
            "grid": {b: g.to_json() for b, g in self.grids.items()},
            "exact_blobs": sorted(self.exact_blobs),
            "exact_sizes": self.exact_sizes,
            "notes": list(self.notes),
            "new_weights": list(self.resized),
        }


def dilate(net, *, output_stride, head="error", pooling="strict", convention="exact",
           multi_grid=None, cut_after=None, input_shapes=None, unknowns=None,
           dilation="strict"):
    """Return (new_net, DilateReport): `net` rewritten to output stride `output_stride`.

    `net` is an upgraded NetParameter and is not modified. Every phase the net declares
    is planned; a layer must get the same rewrite in each. `unknowns` (from the loader)
    names the fields a template or fork leaves open, so they stay unknown. A conversion
    that cannot be made is a SurgeryError naming what blocks and what gets through.
    """
    options = Options(output_stride, head=head, pooling=pooling, convention=convention,
                      dilation=dilation, multi_grid=tuple(multi_grid) if multi_grid else None,
                      cut_after=cut_after).check()
    try:
        new, changes, plans, notes = plan(net, options, input_shapes=input_shapes,
                                          unknowns=unknowns)
    except Blocked as exc:
        raise refusal(net, options, exc, input_shapes=input_shapes, unknowns=unknowns) from None
    first = plans[0] if plans else None
    try:
        return new, _report(net, new, changes, notes, first, input_shapes, unknowns)
    except SurgeryError as exc:
        if exc.layer is None:
            raise
        # the rewritten net would not build: a refusal like any other, naming the layer
        blocked = Blocked("build", [(exc.layer, exc.message)], phase=first.walk.phase)
        raise refusal(net, options, blocked, input_shapes=input_shapes,
                      unknowns=unknowns) from None


def _report(net, new, changes, notes, first, input_shapes, unknowns):
    if first is None:
        return DilateReport(None, changes, None, None, None, None, None, notes)
    conversion = conclude(first, new, changes, input_shapes=input_shapes, unknowns=unknowns,
                          net=net)
    before, after = conversion.before, conversion.after
    renewed = resized(changes, before.graph)
    _check_weights_fit(before, after, renewed)
    deepest = after.deepest_blob()
    g_before = before.geometry.get(deepest) if deepest else None
    g_after = after.geometry.get(deepest) if deepest else None
    shown = conversion.deepest
    if shown is not None:
        grid = conversion.grids[shown]
        notes.append(f"converted '{shown}' at offset + factor*i equals the original at i, with "
                     f"factor {show(grid.factor)} and offset {show(grid.offset)}"
                     + ("" if shown == deepest else f" (the deepest blob kept exact; "
                                                    f"'{deepest}' is approximate)"))
    return DilateReport(conversion.settled(), changes, before.output_stride(),
                        after.output_stride(),
                        g_before and g_before.rf, g_after and g_after.rf, deepest, notes,
                        renewed)


def _check_weights_fit(before, after, renewed):
    """Every weight keeps its shape, except those the conversion gives new values
    (`renewed`). A layer sized for a list of the map's positions (a fully connected layer
    after a Flatten, which follows any map) would not load its weights: stop there."""
    for node in after.graph.nodes:
        if node.name in renewed or node.name not in before.graph:
            continue
        old, new = before.param_shapes.get(node.name), after.param_shapes.get(node.name)
        if old is None or new is None or old == new or \
                any(s is None or None in s for s in list(old) + list(new)):
            continue
        raise SurgeryError(
            f"its weights are sized for what it reads ({', '.join(map(str, old))}), which the "
            f"rewrite changes ({', '.join(map(str, new))}): it reads a map on the new grid "
            "through layers that follow any map size; stop before it with --cut-after BLOB",
            layer=node.name)


def dilate_together(nets, *, output_stride, **options):
    """[(new_net, DilateReport)] for an experiment's nets (a train net and its test net,
    say), each converted by `dilate` with the same options: refused in one line when a
    layer they share (same name and type, same window in both) would get a different
    window in each, since the weights trained with one must serve the other. `nets` are
    (name, NetParameter, unknowns) triples; the name is what the refusal shows."""
    results = [dilate(net, output_stride=output_stride, unknowns=unknowns, **options)
               for _, net, unknowns in nets]
    seen = {}          # layer name -> (net name, window before, window after)
    for (name, net, _), (new, _) in zip(nets, results):
        after = {layer.name: layer for layer in new.layer}
        for layer in net.layer:
            rule = rule_for(layer.type)
            if layer.name not in after or not rule.reads_window(layer):
                continue
            pair = (rule.window(layer), rule.window(after[layer.name]))
            other = seen.setdefault((layer.name, layer.type), (name,) + pair)
            if other[1] == pair[0] and other[2] != pair[1]:
                raise SurgeryError(
                    f"{other[0]} and {name} share this layer but would convert it differently "
                    f"({_window_text(other[2])} in {other[0]}, {_window_text(pair[1])} in "
                    f"{name}): what the nets feed it differs (their input sizes or the layers "
                    "before it); convert them apart, or give both the same --input-shape",
                    layer=layer.name)
    return results


def _window_text(window):
    return (f"kernel {tuple(window.kernel)} stride {tuple(window.stride)} pad "
            f"{tuple(window.pad)} dilation {tuple(window.dilation)}")
