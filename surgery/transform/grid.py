"""How the samples of one blob sit on the samples of another: `Grid(factor, offset)`.

Two nets computing "the same" blob on different grids (an original and its dense or
coarse conversion) are related per spatial axis by

    converted index  x_c = offset + factor * x_o   (x_o an original index)

and the two blobs hold equal values wherever both indices are integers. A dense
conversion has factor > 1 (every original sample is at `offset + factor*i`); a coarse
one has factor < 1 (converted sample j is the original sample at (j - offset)/factor).
Factors and offsets are Fractions, so both directions are ordinary values.
"""

import math
from fractions import Fraction
from typing import NamedTuple

from ..pair import Pair


def _frac_pair(value):
    return Pair(*(Fraction(v) for v in Pair.of(value)))


def num(x):
    """A Fraction as an int when integral, else a float (for JSON and text)."""
    x = Fraction(x)
    return int(x) if x.denominator == 1 else float(x)


def show(values):
    """'(2, 2)' or '(1/4, 1/2)': whole numbers as ints, others as fractions."""
    return "(" + ", ".join(str(Fraction(v)) for v in values) + ")"


class Grid(NamedTuple):
    factor: Pair     # Fractions, per axis
    offset: Pair     # Fractions, per axis

    @classmethod
    def of(cls, factor=1, offset=0):
        return cls(_frac_pair(factor), _frac_pair(offset))

    @classmethod
    def between(cls, geom_a, geom_b):
        """The relation of blob b's samples to blob a's, from the geometry (stride S and
        centre c in input pixels) of each: c_a + S_a*x_a = c_b + S_b*x_b."""
        factor = Pair(*(Fraction(sa) / Fraction(sb) for sa, sb in zip(geom_a.stride, geom_b.stride)))
        offset = Pair(*((Fraction(ca) - Fraction(cb)) / Fraction(sb)
                        for ca, cb, sb in zip(geom_a.offset, geom_b.offset, geom_b.stride)))
        return cls(factor, offset)

    @property
    def identity(self):
        return self.factor == (1, 1) and self.offset == (0, 0)

    def common(self, size_a, size_b):
        """Per axis (start_a, start_b, step_a, step_b, count): the positions where both
        blobs have a sample, within sizes `size_a` (original) and `size_b` (converted);
        None on an axis with no whole-number correspondence."""
        out = []
        for f, o, na, nb in zip(self.factor, self.offset, size_a, size_b):
            # x_b = o + f*x_a: step x_a by the denominator of f, x_b by its numerator.
            # One residue of x_a modulo the denominator makes x_b whole, if any does.
            step_a, step_b = f.denominator, f.numerator
            low = max(0, math.ceil(-o / f))
            start = next((xa for xa in range(low, low + step_a)
                          if (o + f * xa).denominator == 1), None)
            if start is None:
                out.append(None)
                continue
            start_b = int(o + f * start)
            count = max(0, min((na - start + step_a - 1) // step_a, (nb - start_b + step_b - 1) // step_b))
            out.append((start, start_b, step_a, step_b, count))
        return Pair(*out)

    def to_json(self):
        return {"factor": [num(f) for f in self.factor], "offset": [num(o) for o in self.offset]}

    def text(self):
        """'factor (2, 2) offset (0, 0)', or 'factor (1/4, 1/4) ...' for a coarser grid."""
        return f"factor {show(self.factor)} offset {show(self.offset)}"


SAME = Grid.of(1, 0)
