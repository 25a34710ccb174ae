"""Per-axis (h, w) values, so spatial rules are written once, not twice."""

import numbers
from typing import NamedTuple


class Pair(NamedTuple):
    h: int
    w: int

    @classmethod
    def of(cls, value):
        """A Pair from a scalar, a 1- or 2-sequence, or a Pair."""
        if isinstance(value, Pair):
            return value
        if isinstance(value, numbers.Number):
            return cls(value, value)
        seq = list(value)
        if len(seq) == 1:
            return cls(seq[0], seq[0])
        if len(seq) == 2:
            return cls(seq[0], seq[1])
        raise ValueError(f"expected 1 or 2 spatial values, got {len(seq)}")

    def map(self, fn, *others):
        return Pair(fn(self.h, *(o[0] for o in others)), fn(self.w, *(o[1] for o in others)))

    def __mul__(self, other):  # element-wise; tuple repetition is never wanted here
        other = Pair.of(other)
        return Pair(self.h * other.h, self.w * other.w)

    __rmul__ = __mul__


class Window(NamedTuple):
    """The spatial window of a convolution or pooling layer, per axis."""

    kernel: Pair
    stride: Pair
    pad: Pair
    dilation: Pair

    @property
    def extent(self):
        """Span of the kernel on its input grid: dilation*(k-1)+1."""
        return Pair(self.dilation.h * (self.kernel.h - 1) + 1, self.dilation.w * (self.kernel.w - 1) + 1)
