"""Shared options for commands that load a net and write one.

Writing goes through one transaction per run (`writing`, io/atomic.Outputs): every
output is claimed before the long work starts and renamed into place only once all of
them are complete. `--quiet` turns off the progress line (surgery/progress.py).

Loading: `--strict` and `load(args, path)`, which prints the unknown-field warnings
once on stderr; `--phase` and `choose_phases(args, net)` for commands that analyse one
phase's layers. Writing: -o, --in-place, --canonical, --diff; `output_target` decides
where the net goes, `write_net` writes the change as a minimal edit of the input file
(see io/preserve.py) and `finish` prints the summary and writes the diff.

stdout holds one thing: the summary (text or JSON), or with `--diff -` the diff alone
(the summary then goes to stderr). Warnings and notes always go to stderr.
"""

import contextlib
import sys

from ..errors import SurgeryError
from ..analysis.graph import complete_phases
from ..io.atomic import Outputs, guard_output
from ..progress import Progress
from ..io.netfile import NetFile, load_net
from ..io.preserve import render, unified_diff
from . import options


def add_strict_argument(parser):
    parser.add_argument("--strict", action="store_true",
                        help="treat a field the schema does not know as an error "
                             "(default: keep it verbatim and warn)")


def load(args, path=None):
    """The NetFile for `path` (default args.net), warnings printed to stderr."""
    loaded = load_net(path if path is not None else args.net,
                      strict=getattr(args, "strict", False))
    for warning in loaded.warnings:
        print(f"caffe-surgery: warning: {warning}", file=sys.stderr)
    return loaded


def add_phase_argument(parser, what):
    parser.add_argument("--phase", choices=("TEST", "TRAIN"),
                        help=f"which phase's layers to {what} (default: the phase in which "
                             "the net is complete, TEST first; both when both are and their "
                             "layers differ)")


def choose_phases(args, net):
    """The phases to analyse: --phase, else every phase in which the net builds (TEST
    first) that has layers of its own. A train file whose data layer exists only in TRAIN
    gets TRAIN; a train_val file both. A note on stderr says so when there was a choice."""
    if args.phase:
        return [args.phase]
    built, failed = complete_phases(net)
    if not built:
        raise failed["TEST"]
    first, *others = built
    chosen = [first] + [p for p in others if _names(built[p]) != _names(built[first])]
    if failed:
        other, why = next(iter(failed.items()))
        why.hint = ""       # "try --phase" would name the phase being used
        note(f"using phase {first}, the one in which the net is complete (in {other}: {why})")
    elif len(chosen) > 1:
        note("the net builds in TEST and TRAIN with different layers: both are analysed "
             "(--phase picks one)")
    return chosen


def _names(graph):
    return [node.name for node in graph.nodes]


def note(text):
    print(f"caffe-surgery: note: {text}", file=sys.stderr)


def add_output_arguments(parser):
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


def write_net(args, outputs, loaded, new, *, source=None, write=True, target=None):
    """Render `new` as an edit of the input file and (unless `write` is false, a dry run)
    stage it in `outputs` for `target` (default args.output). Returns the unified diff
    when --diff asked for one, else None; the command hands it to `finish`.

    `loaded` is the input's NetFile (a bare NetParameter is accepted from older callers;
    the file is then loaded again here)."""
    source = source or args.net
    if not isinstance(loaded, NetFile):
        loaded = load_net(source, strict=getattr(args, "strict", False))._replace(net=loaded)
    text, why = render(loaded, new, canonical=args.canonical)
    if why:
        note(why)
    target = target or args.output
    if write:
        outputs.write(target, text.encode("utf-8"), inputs=[source])
    if args.diff:
        return unified_diff(source, loaded.text, text, target or "(not written)")
    return None
