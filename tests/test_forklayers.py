"""The fork layers' arithmetic as Caffe Python layers run it (surgery/engines/pylayers/).

Each function is checked against numbers worked out by hand from the fork's formulas
(docs/engines.md), and, where OpenCV implements the layer itself and honours the case,
against OpenCV DNN running the fork layer. Running them inside real Caffe is
tests/test_caffe_forks.py.
"""

import numpy as np
import pytest

from surgery.engines.pylayers import forklayers as fl

F32 = np.float32


def _plane(rows):
    return np.array(rows, dtype=F32)[None, None]


# --------------------------------------------------------------------------- Interp

def test_zoom_2x2_to_3x3_by_hand():
    """zoom 2: out = 2 + (2-1)*1 = 3; ratio (2-1)/(3-1) = 0.5, so output row 1 sits half
    way between input rows 0 and 1, row 2 on row 1 (whose 'next' row is itself):
        [[a, (a+b)/2, b], [(a+c)/2, (a+b+c+d)/4, (b+d)/2], [c, (c+d)/2, d]]."""
    a, b, c, d = 1.0, 2.0, 3.0, 4.0
    got = fl.interp(_plane([[a, b], [c, d]]), {"zoom_factor": 2})
    want = _plane([[a, (a + b) / 2, b],
                   [(a + c) / 2, (a + b + c + d) / 4, (b + d) / 2],
                   [c, (c + d) / 2, d]])
    np.testing.assert_array_equal(got, want)


def test_shrink_samples_every_other_pixel_by_hand():
    """shrink 2 on 5: (5-1)//2 + 1 = 3 outputs, ratio 4/2 = 2: rows 0, 2, 4 exactly."""
    x = np.arange(25, dtype=F32).reshape(1, 1, 5, 5)
    got = fl.interp(x, {"shrink_factor": 2})
    np.testing.assert_array_equal(got, x[:, :, ::2, ::2])


def test_three_to_four_with_float32_weights_by_hand():
    """height/width 1x4 from 1x3: ratio = f32(2)/f32(3) = 0.6666667; positions 0,
    0.6666667, 1.3333334 and 2 (f32 rounding of 3*0.6666667 = 2.0000001 is 2.0, so the
    last one sits on the last pixel, whose next pixel is itself)."""
    p, q, r = 10.0, 40.0, 100.0
    r32 = F32(2) / F32(3)
    w1 = F32(r32 * F32(1))           # 0.6666667 past pixel 0
    w2 = F32(r32 * F32(2)) - F32(1)  # 0.3333334 past pixel 1
    want = np.array([p, (F32(1) - w1) * F32(p) + w1 * F32(q),
                     (F32(1) - w2) * F32(q) + w2 * F32(r), r], dtype=F32)
    got = fl.interp(_plane([[p, q, r]]), {"height": 1, "width": 4})
    np.testing.assert_array_equal(got[0, 0, 0], want)
    assert abs(float(want[1]) - 30.0) < 1e-5 and abs(float(want[2]) - 60.0) < 1e-5


def test_pad_crop_then_zoom_by_hand():
    """pad_beg = pad_end = -1 on 5x5 keeps the 3x3 window at (1, 1); zoom 2 makes it 5x5
    with the window's pixels at the even positions."""
    x = np.arange(25, dtype=F32).reshape(1, 1, 5, 5)
    got = fl.interp(x, {"zoom_factor": 2, "pad_beg": -1, "pad_end": -1})
    assert got.shape == (1, 1, 5, 5)
    np.testing.assert_array_equal(got[:, :, ::2, ::2], x[:, :, 1:4, 1:4])
    np.testing.assert_array_equal(got[0, 0, 0, 1], (x[0, 0, 1, 1] + x[0, 0, 1, 2]) / 2)


def test_equal_sizes_copy_and_sizes_follow_the_rule_order():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(F32)
    np.testing.assert_array_equal(fl.interp(x, {"height": 4, "width": 5}), x)
    assert fl.interp_size(321, 321, {"shrink_factor": 4, "zoom_factor": 3}) == (241, 241)
    assert fl.interp_size(65, 65, {"zoom_factor": 8}) == (513, 513)
    assert fl.interp_size(41, 41, {"zoom_factor": 2, "height": 9, "width": 9}) == (81, 81)
    assert fl.interp_size(7, 7, {}, second=(60, 60)) == (60, 60)
    with pytest.raises(ValueError):
        fl.interp_size(7, 7, {"height": 5})
    with pytest.raises(ValueError):
        fl.interp_size(7, 7, {"zoom_factor": 2, "pad_beg": 1})


@pytest.mark.parametrize("params, size", [
    ({"height": 60, "width": 60}, (6, 6)),        # PSPNet's pyramid bins
    ({"height": 60, "width": 60}, (1, 1)),
    ({"height": 13, "width": 29}, (9, 7)),
    ({"zoom_factor": 8}, (9, 11)),                # the final upsample
    ({"height": 5, "width": 4}, (17, 13)),        # downsampling with fractional ratios
])
def test_interp_matches_opencvs_own_interp(params, size):
    """OpenCV DNN's Caffe importer has an Interp of its own (align_corners bilinear). It
    honours height/width and zoom_factor (not shrink or pads), so those cases compare; the
    lerp is written differently there, so a few ulp."""
    cv2 = pytest.importorskip("cv2")
    x = np.random.default_rng(1).standard_normal((2, 3) + size).astype(F32)
    fields = " ".join(f"{k}: {v}" for k, v in params.items())
    proto = ('name: "i" layer { name: "data" type: "Input" top: "data" input_param { shape { '
             + " ".join(f"dim: {d}" for d in x.shape) + ' } } }\nlayer { name: "r" type: '
             f'"Interp" bottom: "data" top: "r" interp_param {{ {fields} }} }}\n')
    net = cv2.dnn.readNetFromCaffe(bytearray(proto.encode()))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    theirs = net.forward("r")
    ours = fl.interp(x, params)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=4e-7 * np.abs(x).max())


# --------------------------------------------------------------------------- Upsample

def test_unpool_puts_each_value_where_its_mask_says():
    """A 2x2 MAX pool of a 4x4 map records h*4 + w of each maximum; unpooling writes the
    maximum back there and leaves zeros elsewhere."""
    x = _plane([[1, 9, 2, 0], [3, 4, 8, 5], [7, 0, 6, 1], [2, 3, 0, 9]])
    pooled = _plane([[9, 8], [7, 9]])
    mask = _plane([[1, 6], [8, 15]])
    want = np.zeros_like(x)
    want[0, 0, 0, 1], want[0, 0, 1, 2], want[0, 0, 2, 0], want[0, 0, 3, 3] = 9, 8, 7, 9
    np.testing.assert_array_equal(fl.unpool(pooled, mask, 4, 4), want)
    assert fl.upsample_size(2, 2, {"scale": 2}) == (4, 4)
    assert fl.upsample_size(2, 2, {"upsample_h": 3, "upsample_w": 4}) == (3, 4)
    assert fl.upsample_size(3, 3, {"scale_h": 2, "scale_w": 2, "pad_out_h": True}) == (5, 6)


def test_unpool_keeps_the_last_writer_and_refuses_outside_indices():
    x = _plane([[1, 2], [3, 4]])
    mask = _plane([[0, 0], [5, 0]])          # three values for position 0: the last wins
    got = fl.unpool(x, mask, 3, 3)
    assert got[0, 0, 0, 0] == 4 and got[0, 0, 1, 2] == 3 and np.count_nonzero(got) == 2
    with pytest.raises(ValueError):
        fl.unpool(x, _plane([[0, 0], [0, 9]]), 3, 3)


def test_nearest_upsample_by_hand():
    got = fl.nearest_upsample(_plane([[1, 2], [3, 4]]), 2)
    np.testing.assert_array_equal(got[0, 0], [[1, 1, 2, 2], [1, 1, 2, 2],
                                              [3, 3, 4, 4], [3, 3, 4, 4]])


# --------------------------------------------------------------------------- the others

def test_shuffle_channel_by_hand_and_in_opencv():
    """C = 6, group 2 (K = 3): output o takes input (o % 2)*3 + o // 2 = 0, 3, 1, 4, 2, 5."""
    x = np.arange(6, dtype=F32).reshape(1, 6, 1, 1) * np.ones((1, 1, 2, 2), F32)
    got = fl.shuffle_channel(x, 2)
    assert list(got[0, :, 0, 0]) == [0, 3, 1, 4, 2, 5]
    cv2 = pytest.importorskip("cv2")
    y = np.random.default_rng(2).standard_normal((2, 12, 3, 3)).astype(F32)
    proto = ('name: "s" layer { name: "data" type: "Input" top: "data" input_param { shape '
             '{ dim: 2 dim: 12 dim: 3 dim: 3 } } }\nlayer { name: "s" type: "ShuffleChannel" '
             'bottom: "data" top: "s" shuffle_channel_param { group: 3 } }\n')
    net = cv2.dnn.readNetFromCaffe(bytearray(proto.encode()))
    net.setInput(y)
    np.testing.assert_array_equal(fl.shuffle_channel(y, 3), net.forward("s"))


def test_axpy_by_hand():
    a = np.array([[2.0, -1.0]], F32)                      # (N, C)
    x = np.ones((1, 2, 2, 2), F32) * np.array([1, 3], F32).reshape(1, 2, 1, 1)
    y = np.full((1, 2, 2, 2), 0.5, F32)
    got = fl.axpy(a, x, y)
    assert np.all(got[0, 0] == 2.5) and np.all(got[0, 1] == -2.5)
    np.testing.assert_array_equal(fl.axpy(a.reshape(1, 2, 1, 1), x, y), got)


def test_permute_and_normalize_against_opencv():
    cv2 = pytest.importorskip("cv2")
    x = np.random.default_rng(3).standard_normal((2, 4, 3, 5)).astype(F32)
    scale = np.ones(4, F32)      # OpenCV reads no blob from the text; its default is 1
    head = ('name: "n" layer { name: "data" type: "Input" top: "data" input_param { shape '
            '{ dim: 2 dim: 4 dim: 3 dim: 5 } } }\n')
    blob = "blobs { shape { dim: 4 } " + " ".join(f"data: {v}" for v in scale) + " }"
    for across in (True, False):
        proto = head + ('layer { name: "p" type: "Permute" bottom: "data" top: "p" '
                        'permute_param { order: 0 order: 2 order: 3 order: 1 } }\n'
                        'layer { name: "n" type: "Normalize" bottom: "data" top: "n" '
                        f'norm_param {{ across_spatial: {str(across).lower()} '
                        f'channel_shared: false }} {blob} }}\n')
        net = cv2.dnn.readNetFromCaffe(bytearray(proto.encode()))
        net.setInput(x)
        perm, norm = net.forward(["p", "n"])
        np.testing.assert_array_equal(fl.permute(x, [0, 2, 3, 1]), perm)
        np.testing.assert_allclose(fl.normalize(x, scale, across, False), norm, rtol=1e-5)
    # by hand: one position, two channels 3 and 4 -> 3/5 and 4/5, times scale 2
    got = fl.normalize(np.array([3, 4], F32).reshape(1, 2, 1, 1), np.array(2, F32),
                       across_spatial=False, channel_shared=True, eps=0)
    np.testing.assert_allclose(got.reshape(-1), [1.2, 1.6], rtol=1e-7)


def test_batch_bn_by_hand():
    """Channel values 1, 3 (mean 2, variance 1): (x - 2)/1 * scale + shift."""
    x = np.array([1, 3], F32).reshape(2, 1, 1, 1)
    got = fl.batch_bn(x, np.array([2], F32), np.array([0.5], F32))
    np.testing.assert_allclose(got.reshape(-1), [-1.5, 2.5], rtol=1e-6)
