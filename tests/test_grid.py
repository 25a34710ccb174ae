"""transform/grid.py: where one blob's samples sit on another's, with exact numbers."""

from fractions import Fraction

from surgery.analysis.geometry import Geometry
from surgery.pair import Pair
from surgery.transform.grid import SAME, Grid, num, show


def geometry(stride, offset):
    return Geometry(Pair(stride, stride), Pair(1, 1), Pair(Fraction(offset), Fraction(offset)))


def test_between_reads_factor_and_offset_off_stride_and_centre():
    # original: stride 32, centre 15.5; converted: stride 8, centre 7.5
    grid = Grid.between(geometry(32, Fraction(31, 2)), geometry(8, Fraction(15, 2)))
    assert grid.factor == (4, 4) and grid.offset == (1, 1)
    coarse = Grid.between(geometry(8, 0), geometry(16, 0))
    assert coarse.factor == (Fraction(1, 2), Fraction(1, 2)) and coarse.offset == (0, 0)


def test_common_positions_of_a_denser_blob():
    # x_c = 1 + 4*x_o: original 7 samples, converted 28: all 7 meet, every 4th from 1
    axes = Grid.of(4, 1).common((7, 7), (28, 28))
    assert axes == ((0, 1, 1, 4, 7), (0, 1, 1, 4, 7))
    # a converted blob one sample short loses the last original position
    assert Grid.of(4, 1).common((7, 7), (25, 25))[0] == (0, 1, 1, 4, 6)


def test_common_positions_of_a_coarser_blob():
    # x_c = x_o / 2: every other original sample has a twin
    axes = Grid.of(Fraction(1, 2), 0).common((9, 9), (5, 5))
    assert axes[0] == (0, 0, 2, 1, 5)
    # offset 1/2: no whole-number correspondence at all
    assert Grid.of(1, Fraction(1, 2)).common((4, 4), (4, 4)) == (None, None)


def test_identity_text_and_json():
    assert SAME.identity and not Grid.of(2, 0).identity
    assert Grid.of(Fraction(1, 4), 0).text() == "factor (1/4, 1/4) offset (0, 0)"
    assert Grid.of(2, Fraction(1, 2)).to_json() == {"factor": [2, 2], "offset": [0.5, 0.5]}
    assert num(Fraction(3, 1)) == 3 and isinstance(num(Fraction(3, 1)), int)
    assert show((Fraction(1, 2), 2)) == "(1/2, 2)"
