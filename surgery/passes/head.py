"""Which layers a dense backbone no longer needs: classifier heads and `--cut-after`.

A classifier head stops being valid after the rewrite because its weights are sized for
the original map (an InnerProduct on a C x H x W blob). The head is those layers, all
that is computed from them, and the parameter-free layers that only feed them back to
the pooling that made their input (ResNet's 7x7 pool5, VGG's pool5).
"""

from ..errors import SurgeryError
from ..layers import rule_for


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
        rule = rule_for(producer.type)
        if rule.role_of(producer.layer) == "window" or not producer.bottoms:
            break
        blob = producer.bottoms[0]
    return found


def find_head(analysis, broken, removed=frozenset()):
    """The head layers, in file order: `broken` layers, what follows them, and their feeders."""
    if not broken:
        return []
    graph = analysis.graph
    head = _downstream(graph, broken, removed)
    names = {n.name for n in head}
    for node in broken:
        for feeder in _feeders(analysis, node, names):
            if feeder.name not in names:
                head.append(feeder)
                names.add(feeder.name)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return sorted(head, key=lambda n: order[n.name])


def global_pool_for(analysis, broken):
    """The pooling to turn global for `--head global`; it must already cover the whole map."""
    names = {n.name for n in broken}
    for node in broken:
        for feeder in _feeders(analysis, node, names):
            rule = rule_for(feeder.type)
            if rule.role_of(feeder.layer) != "window":
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
