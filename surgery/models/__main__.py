"""Regenerate the committed reference nets: python -m surgery.models [--out models] [NAME ...].

Writes <out>/<name>/deploy.prototxt, deploy-os16.prototxt and deploy-os8.prototxt (the
dilate conversions, head cut), and <out>/README.md (the cost table) when no NAME is given.
"""

import argparse
import sys

from ..errors import SurgeryError
from . import MODELS, write_models


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m surgery.models", description=__doc__)
    parser.add_argument("--out", default="models", help="output directory (default: models)")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"models to write (default: all of {', '.join(MODELS)}, plus README.md)")
    args = parser.parse_args(argv)
    try:
        for path in write_models(args.out, args.names or None):
            print(path)
    except SurgeryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
