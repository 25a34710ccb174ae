"""weights/fillers.py, directly: the bilinear kernels' values and their half-pixel phase.

The values are worked out by hand (a triangle of half-width `stride`, centred where Caffe's
filler centres it); the phase is checked by what the kernel is for: a stride-s
transposed convolution with it must interpolate a ramp linearly, output pixel y landing
on input coordinate (y + pad - (k-1)/2) / s."""

from fractions import Fraction as F

import numpy as np
import pytest

from surgery.weights.fillers import bilinear, upsampling_kernel

# Caffe's bilinear filler, one axis, at both parities of the stride: the kernel size
# 2s - s%2 that FCN uses (even for an even stride, odd for an odd one).
BILINEAR = {
    1: [F(1)],                                                   # stride 1
    4: [F(1, 4), F(3, 4), F(3, 4), F(1, 4)],                     # stride 2: centre 1.5
    5: [F(1, 3), F(2, 3), F(1), F(2, 3), F(1, 3)],               # stride 3: centre 2
    8: [F(1, 8), F(3, 8), F(5, 8), F(7, 8), F(7, 8), F(5, 8), F(3, 8), F(1, 8)],   # stride 4
    6: [F(1, 3), F(2, 3), F(1), F(2, 3), F(1, 3), F(0)],         # Caffe's own, off-centre
}

# upsampling_kernel at the other parity: half a pixel over, still centred at (k-1)/2.
UPSAMPLING = {
    (2, 3): [F(1, 2), F(1), F(1, 2)],                                    # centre 1
    (3, 6): [F(1, 6), F(1, 2), F(5, 6), F(5, 6), F(1, 2), F(1, 6)],      # centre 2.5
    (4, 7): [F(1, 4), F(1, 2), F(3, 4), F(1), F(3, 4), F(1, 2), F(1, 4)],
    (2, 4): BILINEAR[4],                                                 # FCN's parity
    (3, 5): BILINEAR[5],
}


def _outer(axis):
    return np.outer(np.array(axis, float), np.array(axis, float))


@pytest.mark.parametrize("size", sorted(BILINEAR))
def test_caffes_bilinear_filler(size):
    blob = bilinear((2, 3, size, size))
    assert blob.shape == (2, 3, size, size) and blob.dtype == np.float32
    for kernel in blob.reshape(-1, size, size):
        np.testing.assert_allclose(kernel, _outer(BILINEAR[size]), rtol=0, atol=1e-7)


@pytest.mark.parametrize("stride, size", sorted(UPSAMPLING))
def test_the_upsampling_kernel_at_both_parities(stride, size):
    np.testing.assert_allclose(upsampling_kernel((stride, stride), (size, size)),
                               _outer(UPSAMPLING[stride, size]), rtol=0, atol=1e-7)


def test_each_axis_has_its_own_stride():
    kernel = upsampling_kernel((2, 3), (3, 6))
    np.testing.assert_allclose(kernel, np.outer(np.array(UPSAMPLING[2, 3], float),
                                                np.array(UPSAMPLING[3, 6], float)), atol=1e-7)


def _upsample_1d(values, kernel, stride, pad):
    """Caffe's Deconvolution along one axis: input x adds value*kernel[t] at y = s*x + t - pad."""
    k = len(kernel)
    out = np.zeros(stride * (len(values) - 1) + k - 2 * pad)
    for x, v in enumerate(values):
        for t in range(k):
            y = stride * x + t - pad
            if 0 <= y < len(out):
                out[y] += v * kernel[t]
    return out


@pytest.mark.parametrize("stride, size", sorted(UPSAMPLING))
def test_the_kernel_interpolates_a_ramp_at_the_half_pixel_phase(stride, size):
    axis = upsampling_kernel((stride, 1), (size, 1))[:, 0].astype(float)
    pad = size // 2
    ramp = np.arange(20, dtype=float)
    out = _upsample_1d(ramp, axis, stride, pad)
    interior = range(size, len(out) - size)    # away from the zero border
    want = [(y + pad - (size - 1) / 2) / stride for y in interior]
    np.testing.assert_allclose(out[list(interior)], want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("stride", [2, 3, 4])
def test_caffes_filler_is_the_upsampling_kernel_at_fcns_size(stride):
    size = 2 * stride - stride % 2
    np.testing.assert_array_equal(bilinear((1, 1, size, size))[0, 0],
                                  upsampling_kernel((stride, stride), (size, size)))
