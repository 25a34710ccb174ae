"""Shared output options for commands that write a prototxt: -o, --in-place, --canonical, --diff."""

import sys

from ..io.atomic import write_atomic
from ..io.preserve import render, unified_diff
from ..io.prototxt import read_text


def add_output_arguments(parser):
    parser.add_argument("-o", "--output", metavar="OUT.prototxt", help="where to write the result")
    parser.add_argument("--in-place", action="store_true",
                        help="allow -o to name the input file (it is replaced atomically)")
    parser.add_argument("--canonical", action="store_true",
                        help="write protobuf's standard formatting instead of editing the "
                             "input's text (comments and layout are then lost)")
    parser.add_argument("--diff", action="store_true",
                        help="also print a unified diff of input and output")


def write_net(args, original, new, *, source=None):
    """Render `new` as an edit of the input file and write it atomically to args.output."""
    source = source or args.net
    text, note = render(source, original, new, canonical=args.canonical)
    if note:
        print(f"caffe-surgery: note: {note}", file=sys.stderr)
    write_atomic(args.output, text.encode("utf-8"), inputs=[source], in_place=args.in_place)
    if args.diff:
        sys.stdout.write(unified_diff(source, read_text(source), text, args.output))
    return text
