"""Command-line entry point. The only module that prints errors or exits."""

import argparse
import contextlib
import gc
import importlib
import os
import signal
import sys
import threading

from . import __version__
from .errors import SurgeryError, os_reason

# Subcommand modules in surgery/commands/, in the order --help lists them.
COMMANDS = [
    "inspect",
    "dilate",
    "upgrade",
    "weights",
    "check",
    "init_weights",
    "verify",
    "fcn",
    "report",
    "segment",
    "fold",
    "bvlc",
]


class UsageError(Exception):
    """A bad command line; `main` prints it as one line and returns 2."""


class Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one line on stderr, exit status 2.
    (argparse's own prints the usage too; the line names the option and the --help.)"""

    def error(self, message):
        command = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        raise UsageError(" ".join(f"{command}{message} (see {self.prog} --help)".split()))


def _command_name(module_name):
    return module_name.replace("_", "-")


def build_parser(only=None):
    """The argument parser. With `only` (the command on the command line), only that
    command's module is imported, so a run does not pay for every command's imports;
    the others are listed by name and loaded when the full help is asked for."""
    parser = Parser(
        prog="caffe-surgery",
        description="Model surgery for Caffe networks: dilate a backbone to a smaller "
        "output stride while keeping its pretrained weights loadable.",
    )
    parser.add_argument("--version", action="version", version=f"caffe-surgery {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                help="run `caffe-surgery COMMAND --help` for its options")
    sub.required = True
    for name in COMMANDS:
        if only is not None and _command_name(name) != only:
            sub.add_parser(_command_name(name))
            continue
        module = importlib.import_module(f"surgery.commands.{name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


@contextlib.contextmanager
def _no_collections():
    """Run a command without the cyclic garbage collector. A command builds hundreds of
    thousands of small objects that live until it ends (a prototxt's token tree, the
    layers, the graphs) and are acyclic, so a collection only walks them again: at
    Python's default threshold a tenth of a dilate of ResNet-152; at any threshold, a
    collection of the young objects per so many allocated, and of all of them as the
    heap grows (half a second of a 9,000-layer net). What a command frees goes by
    reference counting; peak memory is the same without the collector (measured on
    dilate, inspect and report). It is put back as it was afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Terminated(Exception):
    """SIGTERM, raised where the program is, so the outputs' temp files are removed as
    they are on Ctrl-C (SIGKILL cannot be caught: see io/atomic.py)."""


def _terminate(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _signals():
    """SIGXFSZ ignored: a write over the file-size limit (`ulimit -f`) then fails with
    EFBIG, which the output transaction reports as one line with nothing written, instead
    of the signal killing the process with a partial temp file left. CPython ignores it
    at start-up already; an embedding program that skips that (Py_InitializeEx(0)) does
    not. SIGTERM becomes `Terminated`. Both are put back afterwards; outside the main
    thread (where handlers cannot be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = {signal.SIGTERM: _terminate}
    if hasattr(signal, "SIGXFSZ"):
        wanted[signal.SIGXFSZ] = signal.SIG_IGN
    old = {sig: signal.signal(sig, handler) for sig, handler in wanted.items()}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def main(argv=None):
    if sys.stderr is None:          # started with stderr closed (2>&-): errors go nowhere
        sys.stderr = open(os.devnull, "w")
    if sys.stdout is None:          # started with stdout closed (>&-)
        print("caffe-surgery: error: standard output is closed; nothing was done (redirect "
              "it to a file or to /dev/null instead)", file=sys.stderr)
        return 2
    with _no_collections(), _signals():
        return _main(sys.argv[1:] if argv is None else list(argv))


def _main(argv):
    names = {_command_name(n) for n in COMMANDS}
    parser = build_parser(only=argv[0] if argv and argv[0] in names else None)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"caffe-surgery: error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except SurgeryError as exc:
        print(f"caffe-surgery: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("caffe-surgery: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("caffe-surgery: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:
        return 0
    except OSError as exc:   # one a command did not word itself: still one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"caffe-surgery: error: {where}{os_reason(exc)}", file=sys.stderr)
        return 2


def run():
    """The console script and `python -m surgery`: `main`, then the process ends at once.

    Everything a command writes is committed and closed by the time `main` returns, and
    every thread it started has been joined. What the interpreter's teardown would do
    after that (clearing every module's objects: 30 ms with numpy and protobuf loaded,
    a tenth of a `fold`) only frees memory the OS takes back anyway, so it is skipped.
    Standard output and error are flushed first; a reader that has gone away (`| head`)
    is not an error, any other failure to write them (a full disk) is one line and
    status 2, as for every other output."""
    try:
        status = main()
    except SystemExit as exc:       # --help and --version, from argparse
        if not (exc.code is None or isinstance(exc.code, int)):
            raise
        status = exc.code or 0
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            pass
        except OSError as exc:
            status = _report_stream_error(stream, exc)
    os._exit(status)


def _report_stream_error(stream, exc):
    name = "standard output" if stream is sys.stdout else "standard error"
    try:
        sys.stderr.write(f"caffe-surgery: error: cannot write {name}: {os_reason(exc)}\n")
        sys.stderr.flush()
    except OSError:
        pass
    return 2


if __name__ == "__main__":
    run()
