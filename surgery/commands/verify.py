"""Check numerically that a converted net computes what the original did.

Both nets run on the same seeded random input with the given weights (make
some with `init-weights`). For each compared blob the converted output is
sampled on the original's grid (factor and offset from the geometry of both
nets) and compared. Default blob: the deepest one the conversion kept exact;
add others with --blob. Blobs downstream of a layer that cannot be rewritten
exactly are reported as approximate, and fail only under --strict. A blob with
no common grid in the two nets (a resampled score whose size changed) is shown
as "no grid" and not compared: it passes when the conversion does not claim it
exact, and fails when it does (a claim that cannot be checked is not a pass).

Engines: opencv (OpenCV DNN), caffe (pycaffe: in this process when `import caffe` works,
else in a child process under --caffe-python or $CAFFE_PYTHON; fork layers run as Python
layers), auto (the default: Caffe when it is available and runs every layer of both nets,
else OpenCV). Neither reads the files as written: each net is made runnable first, in
memory (data layers become inputs, losses and writers are left out, fork layers become
their BVLC form; see docs/engines.md). --define NAME=VALUE fills a template's ${NAME}.

Exit status: 0 all exact blobs within --tol (relative to the largest value of
the original blob; with --strict the approximate ones too), 1 otherwise, 2 bad
input or a missing engine.
"""

import json

from ..analysis.analyse import parse_input_shapes
from ..engines.engine import CHOICES
from ..engines.verify import verify
from ..progress import Progress
from . import options
from .output import add_quiet_argument

NAME = "verify"
HELP = "compare a converted net with its original on random input"


def add_arguments(parser):
    parser.add_argument("original", metavar="ORIGINAL.prototxt", help="the net before conversion")
    parser.add_argument("converted", metavar="CONVERTED.prototxt",
                        help="the converted net (e.g. from dilate)")
    parser.add_argument("--weights", required=True, metavar="MODEL.caffemodel",
                        help="weights for both nets (e.g. from init-weights)")
    parser.add_argument("--weights-converted", metavar="OUT.caffemodel",
                        help="the converted net's own weights, when it does not run with "
                             "--weights (e.g. from fold)")
    parser.add_argument("--define", action="append", default=[], metavar="NAME=VALUE",
                        type=options.define,
                        help="fill the template placeholder ${NAME} of either net with VALUE "
                             "for this run (repeatable; the files are not changed)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        type=options.input_shape,
                        help="input size, when not declared or to test another size (repeatable)")
    parser.add_argument("--blob", action="append", default=[], metavar="NAME", type=options.name,
                        help="also compare this blob (repeatable)")
    parser.add_argument("--engine", choices=CHOICES, default="auto",
                        help="forward engine: auto (default) takes real Caffe when it is "
                             "available and knows every layer type, else opencv")
    parser.add_argument("--caffe-python", metavar="PATH", type=options.executable_file,
                        help="the Python that pycaffe was built for, run as a child process "
                             "when 'import caffe' fails here (default $CAFFE_PYTHON; "
                             "$CAFFE_PYTHONPATH is added to its PYTHONPATH)")
    parser.add_argument("--tol", type=options.tolerance, default=1e-4,
                        help="relative tolerance: max|err| / max|original| (default 1e-4)")
    parser.add_argument("--seed", type=options.seed, default=0, help="seed of the random input")
    parser.add_argument("--strict", action="store_true",
                        help="approximate blobs must be within --tol too (is it exact everywhere?)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_quiet_argument(parser)


def run(args):
    shapes = parse_input_shapes(args.input_shape) if args.input_shape else None
    with Progress(quiet=args.quiet) as progress:
        report = verify(args.original, args.converted, args.weights, input_shapes=shapes,
                        blobs=args.blob, engine=args.engine, tol=args.tol, seed=args.seed,
                        strict=args.strict, caffe_python=args.caffe_python,
                        weights_converted=args.weights_converted, defines=dict(args.define),
                        progress=progress)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text())
    return 0 if report.passed else 1
