"""`surgery.api.verify`: run a net and its conversion in a real engine and compare them on
their common grid."""

from dataclasses import dataclass

from .base import Result


@dataclass
class Verified(Result):
    report: object      # engines.verify.VerifyReport: `.blobs` (one BlobResult each), ...

    @property
    def ok(self):
        """PASS: every blob held to the tolerance is within it."""
        return self.report.passed

    @property
    def text(self):
        return self.report.format_text() + "\n"

    def to_json(self):
        return self.report.to_dict()


def verify(original, converted, weights, *, weights_converted=None, defines=None,
           input_shapes=None, blobs=(), engine="auto", caffe_python=None, tol=1e-4, seed=0,
           strict=False, progress=None):
    """Run the nets at `original` and `converted` on one seeded random input with the
    weights at `weights` (`weights_converted`: the converted net's own) in `engine`
    ("auto": real Caffe when it is available and runs both nets, else "opencv"), and
    compare the deepest blob the conversion claims exact (and `blobs`) on the common
    grid: max|err| / max|original| <= `tol`. `defines` ({NAME: VALUE}) fill a template's
    ${NAME}; `strict` holds the approximate blobs to `tol` too."""
    from ..engines.verify import verify as run

    return Verified(run(original, converted, weights, input_shapes=input_shapes or None,
                        blobs=blobs, engine=engine, tol=tol, seed=seed, strict=strict,
                        caffe_python=caffe_python, weights_converted=weights_converted,
                        defines=defines, progress=progress))
