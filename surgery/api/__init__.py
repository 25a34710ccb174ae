"""The Python API: every command is a function here that returns data and never prints or
exits (docs/api.md):

    from surgery import api
    result = api.dilate("deploy.prototxt", output_stride=8, head="cut", output="os8.prototxt")
    result.report.exact, result.text, result.to_json()

Why a namespace of its own, `surgery.api`, rather than the top of the package:
`surgery.weights` and `surgery.report` are subpackages (the weight plans and writer, the
text and HTML reports), so two of the twelve commands could not be functions there; one
namespace that holds all twelve under their command names reads better than ten plus
two exceptions. `surgery.load`/`save`/`analyse`/`dilate` stay where they were: they work
on NetParameters in memory, these on files.

Why one module per command (`_dilate.py`, ...), not one api.py: each command's work
(load, run the pass, plan the weights, write every output in one transaction, word the
summary) is a screenful of its own, and it lives here rather than in the commands, so
the CLI is only a layer over it: `commands/NAME.py` parses the command line, calls
`api.NAME`, prints the result and maps it to an exit status. The modules are named with
a leading underscore so that none shadows the function of its name. Each imports what
it needs inside its functions, so `import surgery.api` stays cheap and a command pays
only for its own imports.

The conventions every function keeps:
- Files in: nets, weights and JSON are paths, as on the command line; what a file leaves
  open (template placeholders, fork fields) is kept, and an edited net is written as a
  minimal edit of its own text. Options are keyword-only Python values (`input_shapes=
  {"data": (1, 3, 224, 224)}`), one keyword per CLI flag, with the CLI's defaults.
- A result out (base.Result): `.text` is what the command prints on stdout, `.to_json()`
  what it prints with --json, `.ok` False where the command exits with status 1,
  `.messages` the warnings and notes it prints on stderr, as (kind, text).
- Outputs all or none: a function writes the files it is given (`output=`,
  `weights_out=`, ...) in one io.atomic.Outputs transaction, its own unless `outputs=`
  hands it the caller's (the CLI's, which claimed the files first and commits them with
  the --diff file). `dry_run=True`, or no output named, writes nothing.
- `on_message(kind, text)` hears each warning and note as it is found (the CLI prints
  them then, so a warning still shows when a later error stops the run); `progress(text)`
  is told the current step (surgery/progress.py).
- Bad input raises SurgeryError (one line, naming the file or layer), and nothing is
  written.
"""

import importlib

_MODULES = {"bvlc": "_bvlc", "check": "_check", "dilate": "_dilate", "fcn": "_fcn",
            "fold": "_fold", "init_weights": "_init_weights", "inspect": "_inspect",
            "report": "_report", "segment": "_segment", "upgrade": "_upgrade",
            "verify": "_verify", "weights": "_weights", "Result": "base"}

__all__ = ["inspect", "dilate", "upgrade", "weights", "check", "init_weights", "verify", "fcn",
           "report", "segment", "fold", "bvlc", "Result"]


def __getattr__(name):
    """Each function's module is imported when the function is first asked for, so the
    CLI running one command imports that command's module only (PEP 562)."""
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
