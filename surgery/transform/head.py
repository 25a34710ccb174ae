"""Which layers a dense backbone no longer needs: classifier heads and `--cut-after`.

A classifier head stops being valid after the rewrite because its weights are sized for
the original map (an InnerProduct on a C x H x W blob). The head is those layers, all
that is computed from them, and the parameter-free layers that only feed them back to
the pooling that made their input (ResNet's 7x7 pool5, VGG's pool5). A classifier behind
global pooling still loads (and is kept, approximate) unless the user asks to cut heads.
"""

from ..errors import SurgeryError


def cut_after(graph, blob):
    """Names of the layers that do not help compute `blob` (in-place layers on it stay)."""
    if blob not in graph.blobs:
        raise SurgeryError("--cut-after names a blob that no layer of the net writes", blob=blob)
    keep, seen, stack = set(), set(), [blob]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        for writer in graph.writers(current):
            if writer.name not in keep:
                keep.add(writer.name)
                stack.extend(writer.bottoms)
    return {node.name for node in graph.nodes if node.name not in keep}


def _downstream(graph, start, removed):
    names, frontier = [], list(start)
    seen = set()
    while frontier:
        node = frontier.pop()
        if node.name in seen or node.name in removed:
            continue
        seen.add(node.name)
        names.append(node)
        for top in node.tops:
            frontier.extend(graph.consumers(top))
    return names


def _feeders(analysis, node, head_names):
    """Parameter-free layers that only feed `node`, back to and including a pooling window."""
    graph = analysis.graph
    found, blob = [], node.bottoms[0] if node.bottoms else None
    while blob is not None:
        writers = graph.writers(blob)
        producer = writers[0] if writers else None
        if producer is None or analysis.param_shapes.get(producer.name):
            break
        readers = [c for c in graph.consumers(blob) if c not in writers]
        if any(c.name not in head_names and c not in found for c in readers):
            break   # the blob is also used outside the head: keep it
        found.extend(writers)
        rule = producer.rule
        if rule.reads_window(producer.layer) or (rule.collapses(producer.layer) and not rule.view) \
                or not producer.bottoms:
            break   # the pooling that made the classifier's input: the head starts here
        blob = producer.bottoms[0]
    return found


def classifiers_after(analysis, pools):
    """Fully connected layers fed by these (global) poolings through views and pointwise
    layers: a classifier that still loads after the rewrite, but that --head cut removes."""
    graph = analysis.graph
    found, frontier, seen = [], [t for p in pools for t in p.tops], set()
    while frontier:
        blob = frontier.pop()
        if blob in seen:
            continue
        seen.add(blob)
        for node in graph.consumers(blob):
            rule = node.rule
            if rule.fully_connected:
                found.append(node)
            elif rule.view or rule.keeps_grid(node.layer):
                frontier.extend(node.tops)
    return found


def classifier_layers(analysis):
    """The classifier of a net whatever its output stride: fully connected layers on a
    spatial map (weights sized for it), and those behind a pooling that collapses the
    map to one point (global pooling, ResNet's 7x7 pool5)."""
    graph = analysis.graph
    on_map = [n for n in graph.nodes if n.rule.fully_connected and n.bottoms
              and analysis.geometry.get(n.bottoms[0]) is not None
              and n.rule.size_bound(n.layer, analysis.in_shapes.get(n.name) or [])]
    pools = [n for n in graph.nodes if n.bottoms and analysis.geometry.get(n.bottoms[0]) is not None
             and (n.rule.reads_window(n.layer) or n.rule.collapses(n.layer))
             and n.rule.collapses_to_point(n.layer, analysis.out_shapes.get(n.name) or [],
                                           len(n.bottoms))]
    return on_map + [n for n in classifiers_after(analysis, pools) if n not in on_map]


def _entries(graph, members):
    """Blobs a set of layers reads but does not write itself."""
    names = {n.name for n in members}
    return {b for n in members for b in n.bottoms
            if not any(w.name in names for w in graph.writers(b))}


def _prune_dead(graph, removed, protect):
    """Layers left computing only what removed layers used (an auxiliary head's trunk)."""
    dead = set()
    changed = True
    while changed:
        changed = False
        for node in reversed(graph.nodes):
            if node.name in removed or node.name in dead or not node.bottoms:
                continue
            for top in node.tops:
                writers = {w.name for w in graph.writers(top)}
                readers = [c for c in graph.consumers(top) if c.name not in writers]
                gone = removed | dead
                if top in protect or not readers or any(c.name not in gone for c in readers):
                    break
            else:
                dead.add(node.name)
                changed = True
    return dead


def find_head(analysis, broken, removed=frozenset()):
    """The head layers, in file order: `broken` layers, what follows them, their feeders,
    and, for auxiliary heads, the branch that only fed them.

    The head whose input comes last in the net is the main one; what feeds it is the
    backbone's output and stays."""
    if not broken:
        return []
    graph = analysis.graph
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    components = []
    claimed = set(removed)
    for node in broken:
        if node.name in claimed:
            continue
        part = _downstream(graph, [node], claimed)
        names = {n.name for n in part}
        part += [f for f in _feeders(analysis, node, names) if f.name not in names]
        claimed |= {n.name for n in part}
        components.append(part)
    if not components:      # every broken layer is already removed (--cut-after)
        return []
    head = [n for part in components for n in part]
    head_names = {n.name for n in head}

    def entry_depth(part):
        producers = [graph.producer(b) for b in _entries(graph, part)]
        return max((order[p.name] for p in producers if p is not None), default=-1)

    main = max(components, key=entry_depth)
    dead = _prune_dead(graph, set(removed) | head_names, _entries(graph, main))
    head += [n for n in graph.nodes if n.name in dead]
    return sorted(head, key=lambda n: order[n.name])


def global_pool_for(analysis, broken):
    """The pooling to turn global for `--head global` (it must already cover the whole
    map), or None when it is global already."""
    names = {n.name for n in broken}
    for node in broken:
        for feeder in _feeders(analysis, node, names):
            rule = feeder.rule
            if rule.is_global(feeder.layer):
                return None
            if not rule.reads_window(feeder.layer):
                continue
            shape = analysis.shapes.get(feeder.tops[0])
            if shape is None or len(shape) != 4 or shape[2:] != (1, 1):
                raise SurgeryError(
                    f"--head global needs a pooling that covers the whole map, but it outputs "
                    f"{'x'.join(map(str, shape[2:])) if shape else 'an unknown size'}, so "
                    f"'{node.name}' would still get the wrong size; use --head cut",
                    layer=feeder.name)
            return feeder
    raise SurgeryError(f"--head global: no pooling feeds '{broken[0].name}'; use --head cut",
                       layer=broken[0].name)
