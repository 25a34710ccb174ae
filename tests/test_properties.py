"""Property tests for `dilate` on random DAG nets Caffe would accept.

Nets are drawn layer by layer (Convolution, Pooling, Eltwise, Concat) with random
kernels, per-axis strides and pads, dilations and groups; a layer the analysis rejects
is dropped again, so every drawn net is valid. Each net is dilated to every candidate
output stride and the result is checked against facts computed independently here:
which strides are reachable, the stride of every blob after the rewrite, unchanged
param shapes, unchanged receptive fields where the report claims exactness, and a
lossless text round trip.
"""

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from surgery.analysis.analyse import analyse
from surgery.builder import NetBuilder
from surgery.errors import SurgeryError
from surgery.io.prototxt import format_prototxt, parse_prototxt
from surgery.layers import rule_for
from surgery.transform.dilate import dilate
from surgery.transform.judge import judge

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _axis_pair(draw, values):
    """Equal per-axis values most of the time, different ones (the _h/_w form) sometimes."""
    h = draw(values)
    return (h, h) if draw(st.booleans()) else (h, draw(values))


def _try_add(b, add):
    """Add a layer with `add()`; keep it only when the analysis accepts the net."""
    before = len(b.net.layer)
    add()
    try:
        return analyse(b.net)
    except SurgeryError:
        del b.net.layer[before:]
        return None


@st.composite
def nets(draw):
    b = NetBuilder("random")
    channels = draw(st.sampled_from([2, 4, 6]))
    size = (draw(st.integers(8, 40)), draw(st.integers(8, 40)))
    b.input("data", (1, channels) + size)
    analysis = analyse(b.net)
    steps = draw(st.integers(1, 9))
    for i in range(steps):
        blobs = [t for layer in b.net.layer for t in layer.top]
        shapes = analysis.shapes
        kind = draw(st.sampled_from(["conv", "conv", "pool", "eltwise", "concat", "residual"]))
        src = draw(st.sampled_from(blobs))
        name = f"{kind}{i}"
        if kind == "conv":
            c_in = shapes[src][1]
            groups = [g for g in (1, 2, 3) if c_in % g == 0]
            group = draw(st.sampled_from(groups))
            kernel = _axis_pair(draw, st.integers(1, 5))
            stride = _axis_pair(draw, st.integers(1, 3))
            pad = tuple(draw(st.integers(0, k)) for k in kernel)
            dilation = _axis_pair(draw, st.integers(1, 2))
            out = group * draw(st.integers(1, 3))
            add = lambda: b.conv(name, src, num_output=out, kernel=kernel, stride=stride,
                                 pad=pad, dilation=dilation, group=group)
        elif kind == "pool":
            kernel = _axis_pair(draw, st.integers(1, 3))
            stride = _axis_pair(draw, st.integers(1, 3))
            pad = tuple(draw(st.integers(0, k - 1)) for k in kernel)
            method = draw(st.sampled_from(["MAX", "AVE"]))
            add = lambda: b.pool(name, src, kernel=kernel, stride=stride, pad=pad, method=method)
        elif kind == "residual":
            # A branch that keeps the map size joined back to its input (ResNet-style).
            k = draw(st.sampled_from([1, 3, 5]))
            d = draw(st.integers(1, 2))
            c = shapes[src][1]

            def add():
                branch = b.conv(name + "_branch", src, num_output=c, kernel=k,
                                pad=d * (k - 1) // 2, dilation=d)
                b.eltwise(name, [src, branch])
        else:
            # Join two blobs that already agree: same shape (Eltwise) or same N,H,W (Concat).
            same = (lambda s, t: s == t) if kind == "eltwise" else (lambda s, t: (
                s is not None and t is not None and s[0] == t[0] and s[2:] == t[2:]))
            partners = [t for t in blobs if t != src and same(shapes[src], shapes[t])]
            if not partners:
                continue
            other = draw(st.sampled_from(partners))
            join = b.eltwise if kind == "eltwise" else b.concat
            add = lambda: join(name, [src, other])
        analysis = _try_add(b, add) or analysis
    return b.net


def _window_axes(analysis):
    """(input stride, layer stride) per axis of every window layer with a known input grid."""
    for node in analysis.graph.nodes:
        rule = rule_for(node.type)
        if not rule.reads_window(node.layer):
            continue
        geom = analysis.geometry.get(node.bottoms[0])
        if geom is None:
            continue
        window = rule.window(node.layer)
        yield from zip(geom.stride, window.stride)


def reachable(analysis, target):
    """Independent rule: every blob of stride S ends at min(S, target), so each window layer
    keeps min(S*s, t) / min(S, t) of its stride s, which must be a whole divisor of s."""
    for s_in, s in _window_axes(analysis):
        a, b = min(s_in, target), min(s_in * s, target)
        if b % a or s % (b // a):
            return False
    return True


def _one_line(exc):
    text = str(exc)
    assert text and "\n" not in text
    return text


def _coarser_than_the_net(net, a, target):
    """A target above the net's strides is a coarsening: refused as not reachable, or done
    with that output stride, the same param shapes and, for every blob it calls exact, the
    receptive field it had."""
    try:
        new, report = dilate(net, output_stride=target, head="cut", pooling="cover")
    except SurgeryError as exc:
        assert "not reachable" in _one_line(exc) or "would not build" in str(exc), str(exc)
        event("coarser: refused")
        return
    event("coarser: converted")
    after = analyse(new)
    assert max(after.geometry[after.deepest_blob()].stride) == target
    for layer in new.layer:
        assert after.param_shapes[layer.name] == a.param_shapes[layer.name], layer.name
    for blob in report.exact_blobs:
        assert after.geometry[blob].rf == a.geometry[blob].rf, blob


@SETTINGS
@given(nets(), st.data())
def test_dilate_properties(net, data):
    a = analyse(net)
    event(f"{len(net.layer)} layers")
    event("has a join" if any(l.type in ("Eltwise", "Concat") for l in net.layer) else "no join")
    strides = sorted({v for g in a.geometry.values() if g is not None for v in g.stride})
    biggest = strides[-1]
    extra = data.draw(st.lists(st.integers(1, max(biggest, 2)), max_size=2), label="extra targets")
    side = a.resampled_branches()   # a pyramid's pooled branches are not the output stride
    trunk = max(max(g.stride) for b, g in a.geometry.items() if g is not None and b not in side)
    for target in sorted(set(strides) | set(extra)):
        if target > trunk:
            _coarser_than_the_net(net, a, target)
            continue
        ok = reachable(a, target)
        try:
            new, report = dilate(net, output_stride=target, head="cut", pooling="cover")
        except SurgeryError as exc:
            text = _one_line(exc)
            event("SurgeryError: " + ("not reachable" if "not reachable" in text else
                                      text.split(":")[-1].split(";")[0].split("(")[0].strip()[:40]))
            if ok:
                assert "not reachable" not in text, (target, text)
            continue
        assert ok or target >= biggest, f"output stride {target} should not be reachable"
        event(f"dilated ({'exact' if report.exact else 'approximate'}, "
              f"{'changed' if report.changes else 'unchanged'})")
        after = analyse(new)
        kept = {layer.name for layer in new.layer}
        for name in kept:
            assert after.param_shapes[name] == a.param_shapes[name], name
        for blob in report.exact_blobs:
            assert after.geometry[blob].rf == a.geometry[blob].rf, blob
        for blob, geom in after.geometry.items():
            if geom is not None and a.geometry.get(blob) is not None:
                expected = tuple(min(s, target) for s in a.geometry[blob].stride)
                assert tuple(geom.stride) == expected, (blob, target)
        assert parse_prototxt(format_prototxt(new)) == new
        # The pair of files alone (verify, report) gets the same answer dilate gave.
        judged = judge(net, new)
        if report.conversion is None:       # already at the target: nothing to judge
            assert not judged.changes, target
            continue
        assert judged.statuses() == report.conversion.statuses(), target
        assert judged.exact_blobs == report.exact_blobs, target
    assert target  # at least one target was tried


@SETTINGS
@given(nets())
def test_random_nets_round_trip_and_survive_a_noop_dilate(net):
    assert parse_prototxt(format_prototxt(net)) == net
    a = analyse(net)
    biggest = max(v for g in a.geometry.values() if g is not None for v in g.stride)
    new, report = dilate(net, output_stride=biggest, head="cut", pooling="cover")
    assert new == net and not report.changes
