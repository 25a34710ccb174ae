"""transform/regrid.window_regrid, called directly: a kernel moved onto a denser grid keeps
every tap on the input pixel it was trained on. The check is the tap arithmetic itself
(output j of a window reads input j*stride - pad + dilation*t), applied to the original
window and to the rewritten one, never the rewrite's own formula."""

from types import SimpleNamespace

import pytest

from surgery import caffe_pb2
from surgery.layers import rule_for
from surgery.pair import Pair
from surgery.transform.grid import Grid
from surgery.transform.plan import DilatePolicy
from surgery.transform.regrid import EXACT, Step, window_regrid

STRIDE_IN = 8      # the input's stride in the original net


def conv(kernel, pad, dilation, stride=1):
    layer = caffe_pb2.LayerParameter(name="conv", type="Convolution", bottom=["x"], top=["y"])
    cp = layer.convolution_param
    cp.num_output = 4
    cp.kernel_size.append(kernel)
    cp.pad.append(pad)
    cp.dilation.append(dilation)
    cp.stride.append(stride)
    return layer


def regrid(layer, factor, offset=0):
    """The exact rule for `layer` when its input is `factor` times denser (sample x of the
    original at offset + factor*x), the output stride asked for being the input's."""
    factor = Pair.of(factor)
    step = Step(node=SimpleNamespace(name=layer.name), grid_in=Grid.of(factor, offset),
                geometry_in=SimpleNamespace(stride=Pair(STRIDE_IN, STRIDE_IN)),
                in_shapes=[(1, 4, 64, 64)], out_shapes=[(1, 4, 64, 64)],
                policy=DilatePolicy(STRIDE_IN // max(factor)))
    return window_regrid(rule_for(layer.type), layer, step)


def taps(window, j, axis):
    """The input positions output j of `window` reads along `axis`."""
    return [j * window.stride[axis] - window.pad[axis] + window.dilation[axis] * t
            for t in range(window.kernel[axis])]


CASES = [(k, p, d, f, o) for k, p, d in [(3, 1, 1), (3, 2, 2), (3, 0, 2), (3, 1, 2), (3, 3, 2),
                                         (3, 4, 4), (3, 2, 4), (7, 1, 2), (1, 1, 1), (5, 6, 3)]
         for f in (2, 3, 4, (2, 4)) for o in (0, 1)]


@pytest.mark.parametrize("kernel, pad, dilation, factor, offset", CASES)
def test_every_tap_lands_on_the_pixel_it_read_before(kernel, pad, dilation, factor, offset):
    layer = conv(kernel, pad, dilation)
    before = rule_for(layer.type).window(layer)
    outcome = regrid(layer, factor, offset)
    assert outcome.status == EXACT and not outcome.issue
    after = rule_for(layer.type).window(outcome.layer) if outcome.layer is not None else before
    f_in, o_in = Grid.of(factor, offset)
    f_out, o_out = outcome.grid
    for axis in range(2):
        for j in range(-3, 9):
            j_new = o_out[axis] + f_out[axis] * j
            assert j_new.denominator == 1
            want = [o_in[axis] + f_in[axis] * x for x in taps(before, j, axis)]
            assert taps(after, int(j_new), axis) == want, (axis, j, after)


@pytest.mark.parametrize("pad, dilation, factor, want", [
    (2, 2, 2, ((4, 4), (4, 4))),       # an already-dilated kernel, dilated further
    (2, 2, 4, ((8, 8), (8, 8))),
    (3, 2, 2, ((6, 6), (4, 4))),       # pad and dilation scale alike, whatever the pad
    (0, 2, 3, ((0, 0), (6, 6))),
    (1, 2, (2, 4), ((2, 4), (4, 8))),  # per axis
])
def test_the_pad_of_a_dilated_kernel_scales_with_the_factor(pad, dilation, factor, want):
    outcome = regrid(conv(3, pad, dilation), factor)
    window = rule_for("Convolution").window(outcome.layer)
    assert (tuple(window.pad), tuple(window.dilation)) == want
