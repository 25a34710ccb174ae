"""Which output strides a net can be converted to, and what to say when it cannot.

Both answers are found by asking `dilate`'s own planning (transform/plan.py), never by a
second rule: `reachable` tries every stride the net's blobs have, or could have, first
with the default flags and then with each flag that trades exactness for reach; it is
what `inspect` lists. `refusal` turns a Blocked plan into the one line the user reads:
the layers in the way (three, then "and N more") and every flag, with its argument,
that gets through, each one tried before it is suggested.
"""

from typing import NamedTuple

from ..analysis.analyse import analyse
from ..analysis.nominal import nominal_strides
from ..errors import SurgeryError
from .conversion import conclude, result_status
from .plan import Blocked, coarsening_blockers, plan

# Flags that trade exactness for reach, in the order they are suggested.
LOOSER = (("--pooling cover", {"pooling": "cover"}),
          ("--dilation round", {"dilation": "round"}))
WHY = {"--pooling cover": "moves pooling windows to the nearest grid-aligned window, approximate",
       "--dilation round": "rounds the dilations after the dilated layers, approximate",
       "--head cut": "drops the classifier head",
       "--head global": "global pooling before the classifier, approximate"}


class Reach(NamedTuple):
    """How `dilate` reaches one output stride: the looser flags it needs beyond the ones
    asked for (() for none), and the status of the result (conversion.result_status:
    a global pooling that reads the denser map makes a conversion APPROXIMATE although
    no flag was needed)."""

    flags: tuple
    status: str


def attempt(net, options, *, input_shapes=None, unknowns=None):
    """The changes `dilate` with `options` makes to `net` (every phase planned, and the
    rewritten net builds), or None when it refuses."""
    try:
        new, changes, plans, _ = plan(net, options, input_shapes=input_shapes, unknowns=unknowns)
        if plans:
            conclude(plans[0], new, changes, input_shapes=input_shapes, unknowns=unknowns)
    except (Blocked, SurgeryError):
        return None
    return changes


def accepts(net, options, *, input_shapes=None, unknowns=None):
    return attempt(net, options, input_shapes=input_shapes, unknowns=unknowns) is not None


def candidates(analysis):
    """The output strides worth trying: every stride a blob has, and every nominal stride
    (the stride its readers were trained at, so what it could be coarsened to)."""
    values = {v for g in analysis.geometry.values() if g is not None for v in g.stride}
    values |= {v for pair in nominal_strides(analysis, narrow=True).values()
               for v in pair if v is not None}
    return sorted(values)


def reachable(net, options, *, analysis=None, phase="TEST", input_shapes=None, unknowns=None):
    """{stride: Reach}: each output stride `dilate` with `options` (other than the stride)
    reaches, with the flags it needs beyond them and the status of its result. `analysis`
    (of the net in `phase`) gives the strides to try; found here when not given."""
    if analysis is None:
        analysis = analyse(net, input_shapes=input_shapes, phase=phase, unknowns=unknowns)
    found = {}
    for value in candidates(analysis):
        for flags, changes in _loosenings(options):
            made = attempt(net, options._replace(output_stride=value, **changes),
                           input_shapes=input_shapes, unknowns=unknowns)
            if made is not None:
                found[value] = Reach(flags, result_status(made))
                break
    return found


def format_reachable(found, given=()):
    """'exact: 2, 4, 8; approximate: 1 with --pooling cover': strides grouped by the
    status of the result (what dilate's "result:" says) and the flags they need beyond
    `given` (the looser flags the user already gave, named too)."""
    groups = {}
    for value, reach in sorted(found.items()):
        groups.setdefault((len(reach.flags), reach.flags, reach.status), []).append(str(value))

    def label(flags, status):
        words = status.lower()
        return f"{words} with {' '.join(given + flags)}" if given or flags else words

    parts = [f"{label(flags, status)}: {', '.join(values)}"
             for (_, flags, status), values in sorted(groups.items(), key=_order)]
    return "; ".join(parts) or "none"


def _order(item):
    (count, flags, status), _ = item
    return count, flags, ("EXACT", "APPROXIMATE", "ADAPTED").index(status)


def given_flags(options):
    """The looser flags `options` already holds, as the command line spells them."""
    return tuple(flag for flag, change in LOOSER
                 if all(getattr(options, k) == v for k, v in change.items()))


def _loosenings(options):
    """(flags, option changes): as asked, then each looser flag not already given, then
    all of them together."""
    extra = [(flag, change) for flag, change in LOOSER
             if any(getattr(options, k) != v for k, v in change.items())]
    yield (), {}
    for flag, change in extra:
        yield (flag,), change
    if len(extra) > 1:
        yield tuple(f for f, _ in extra), {k: v for _, c in extra for k, v in c.items()}


def refusal(net, options, blocked, *, input_shapes=None, unknowns=None):
    """The SurgeryError for a Blocked plan: what blocks, and what gets through."""
    target = options.output_stride
    if blocked.kind == "range" and blocked.coarser:
        blocked.layers = coarsening_blockers(net, options, blocked.phase,
                                             input_shapes=input_shapes, unknowns=unknowns)
    named = _named(blocked.layers)
    if blocked.kind == "head":
        lead = (f"the head ({', '.join(n for n, _ in blocked.layers)}) has weights sized for "
                "the original map and cannot survive the rewrite")
    elif blocked.kind == "blind":
        (name, why), = blocked.layers[:1]
        lead = (f"the stride after layer '{name}' is unknown ({why}), so the output stride "
                f"cannot be checked against {target}; nothing can be rewritten through it")
    elif blocked.kind == "build":
        (name, why), = blocked.layers[:1]
        lead = f"layer '{name}': {why}"
    elif blocked.layers:
        lead = f"output stride {target} is not reachable: {named}"
    elif blocked.coarser:
        lead = (f"output stride {target} is not reachable: no exact coarsening goes that far "
                "(no layer has that much stride to give back)")
    else:
        lead = f"output stride {target} is not reachable: no layer can change its stride that far"
    parts = [lead]
    ways = _ways(net, options, blocked, input_shapes, unknowns)
    parts.append("it gets through with " + ", or with ".join(ways) if ways else
                 "no flag gets it through")
    if blocked.kind in ("layers", "range"):
        found = reachable(net, options, phase=blocked.phase, input_shapes=input_shapes,
                          unknowns=unknowns)
        parts.append(f"reachable output strides: "
                     f"{format_reachable(found, given_flags(options))}")
    error = SurgeryError("; ".join(parts))
    error.blocking = [name for name, _ in blocked.layers]   # for callers that act on it
    return error


def _named(layers, most=3):
    shown = [f"layer '{name}' ({why})" for name, why in layers[:most]]
    more = f" and {len(layers) - most} more" if len(layers) > most else ""
    return ", ".join(shown) + more


def _ways(net, options, blocked, input_shapes, unknowns):
    """Each flag (or pair of flags) that gets this conversion through, tried first."""
    singles = [(flag, change) for flag, change in LOOSER
               if any(getattr(options, k) != v for k, v in change.items())]
    if options.head == "error":
        singles += [("--head cut", {"head": "cut"}), ("--head global", {"head": "global"})]
    found = []
    for flag, change in singles:
        if accepts(net, options._replace(**change), input_shapes=input_shapes,
                   unknowns=unknowns):
            found.append(f"{flag} ({WHY[flag]})")
    if not found:
        for i, (flag, change) in enumerate(singles):
            for other, more in singles[i + 1:]:
                if set(change) & set(more):
                    continue
                if accepts(net, options._replace(**change, **more), input_shapes=input_shapes,
                           unknowns=unknowns):
                    found.append(f"{flag} {other}")
    cut = _cut(net, options, blocked, input_shapes, unknowns)
    if cut is not None:
        found.append(f"--cut-after {cut} (keeps only what computes it)")
    return found


def _cut(net, options, blocked, input_shapes, unknowns):
    """The blob before the first layer in the way after which cutting gets through."""
    if not blocked.layers:
        return None
    analysis = analyse(net, input_shapes=input_shapes, phase=blocked.phase, unknowns=unknowns)
    graph = analysis.graph
    first = next((n for n in graph.nodes if n.name == blocked.layers[0][0]), None)
    if first is None:
        return None
    for blob in dict.fromkeys(first.bottoms):
        if graph.last_writer(blob) is None or blob == options.cut_after:
            continue
        if accepts(net, options._replace(cut_after=blob), input_shapes=input_shapes,
                   unknowns=unknowns):
            return blob
    return None
