"""Shared options for commands that load a net and write one.

Writing goes through one transaction per run (`writing`, io/atomic.Outputs): every
output is claimed before the long work starts and renamed into place only once all of
them are complete; the command hands it to the API function, which stages its files in
it. `--quiet` turns off the progress line (surgery/progress.py).

Loading: `--strict`; `--phase` for commands that analyse one phase's layers; `tell`
prints the API's warnings and notes on stderr as they are found. Writing: -o,
--in-place, --canonical, --diff; `output_target` decides where the net goes and
`finish` commits, prints the summary and writes the diff.

stdout holds one thing: the summary (text or JSON), or with `--diff -` the diff alone
(the summary then goes to stderr). Warnings and notes always go to stderr.
"""

import contextlib
import sys

from ..errors import SurgeryError
from ..io.atomic import Outputs, guard_output
from ..progress import Progress
from . import options


def add_strict_argument(parser):
    parser.add_argument("--strict", action="store_true",
                        help="treat a field the schema does not know as an error "
                             "(default: keep it verbatim and warn)")


def tell(kind, text):
    """The API's `on_message`: a warning or note printed on stderr as it is found."""
    print(f"caffe-surgery: {kind}: {text}", file=sys.stderr)


def add_phase_argument(parser, what):
    parser.add_argument("--phase", choices=("TEST", "TRAIN"),
                        help=f"which phase's layers to {what} (default: the phase in which "
                             "the net is complete, TEST first; both when both are and their "
                             "layers differ)")


def add_output_arguments(parser):
    """The options of every command that writes an edited net (dilate, bvlc, fcn, fold):
    --dry-run, --json, -o, --in-place, --canonical, --diff, --strict and --quiet."""
    parser.add_argument("--dry-run", action="store_true", help="print the summary only")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("-o", "--output", metavar="OUT.prototxt", type=options.output_file,
                        help="where to write the result")
    parser.add_argument("--in-place", action="store_true",
                        help="allow -o to name the input file, or without -o rewrite the "
                             "input (it is replaced atomically)")
    parser.add_argument("--canonical", action="store_true",
                        help="write protobuf's standard formatting instead of editing the "
                             "input's text (comments and layout are then lost; refused when "
                             "a placeholder stands where a number belongs)")
    parser.add_argument("--diff", metavar="FILE", type=options.output_file_or_stdout,
                        help="write a unified diff of input and output to FILE; '-' puts it "
                             "on stdout alone (the summary then goes to stderr; not with "
                             "--json)")
    if not any(a.dest == "strict" for a in parser._actions):
        add_strict_argument(parser)
    add_quiet_argument(parser)


def add_quiet_argument(parser):
    parser.add_argument("--quiet", action="store_true",
                        help="no progress line on stderr (it is shown only while stderr is "
                             "a terminal)")


@contextlib.contextmanager
def writing(args, inputs, targets=()):
    """(outputs, progress) for one run: an io.atomic.Outputs transaction with each of
    `targets` (None and '-' skipped) claimed now, before any long work, and the progress
    line (nothing unless stderr is a terminal and --quiet is off). The command calls
    `outputs.commit()` once everything is written; otherwise nothing is."""
    with Progress(quiet=getattr(args, "quiet", False)) as progress, \
            Outputs(inputs=inputs, in_place=getattr(args, "in_place", False),
                    progress=progress) as outputs:
        for path in targets:
            if path not in (None, "-"):
                outputs.reserve(path)
        yield outputs, progress


def output_target(args, inputs):
    """Set args.output (the input itself under --in-place without -o) and refuse what
    cannot be done, before anything is read: no output and no --dry-run, two things for
    stdout, a diff file that is an input. Returns the files this run will write (the
    ones to claim with `writing`)."""
    if args.diff == "-" and args.json:
        raise SurgeryError("--diff - and --json both want stdout; give --diff a file name")
    if args.output is None and args.in_place:
        args.output = args.net
    if not args.dry_run and not args.output:
        raise SurgeryError("give -o OUT.prototxt for the result, --in-place to rewrite the "
                           "input, or --dry-run for the summary only")
    if args.diff not in (None, "-"):
        guard_output(args.diff, inputs)
    return [None if args.dry_run else args.output, args.diff]


def finish(args, outputs, summary, diff):
    """Stage the diff file, commit every output, then print the summary on stdout, or on
    stderr when `--diff -` puts the diff on stdout: nothing is said of a run whose
    outputs could not all be written."""
    if args.diff not in (None, "-") and diff is not None:
        outputs.write(args.diff, diff.encode("utf-8"))
    outputs.commit()
    if args.diff == "-":
        sys.stderr.write(summary)
        sys.stdout.write(diff or "")
        return
    sys.stdout.write(summary)


def _json_text(result):
    import json     # only for --json: no other run pays for its import

    return json.dumps(result.to_json(), indent=1) + "\n"


def run_edit(args, call):
    """A command that edits one net and may write weights beside it (bvlc, fcn, fold):
    -o, --weights-out and --diff are claimed before anything is read, then
    `call(outputs, progress)` runs the API function, whose summary is printed once
    every output is written. Returns the exit status."""
    inputs = [args.net] + ([args.weights] if args.weights else [])
    targets = output_target(args, inputs)
    if not args.dry_run:
        targets.append(args.weights_out)
    with writing(args, inputs, targets) as (outputs, progress):
        result = call(outputs, progress)
        text = _json_text(result) if args.json else result.text
        finish(args, outputs, text, result.diff)
    return 0
