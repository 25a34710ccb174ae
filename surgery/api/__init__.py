"""The Python API: one function per command, which returns data and never prints or exits.

`surgery.dilate`, `surgery.inspect`, ... (surgery/__init__.py) are short wrappers that
import the module of the same name here only when called, so `import surgery` stays
cheap. The work lives here, in one module per command, rather than in one api.py,
because each command's work (load, run the pass, plan the weights, write every output
in one transaction, word the summary) is a screenful of its own; and rather than in the
commands, so the CLI is only a layer over it: `commands/NAME.py` parses the command
line, calls `surgery.api.NAME.NAME`, prints the result and maps it to an exit status.

The conventions every function keeps (docs/api.md):
- Files in: nets, weights and JSON are paths, as on the command line; what a file leaves
  open (template placeholders, fork fields) is kept, and an edited net is written as a
  minimal edit of its own text. Option values are Python values (`input_shapes=
  {"data": (1, 3, 224, 224)}`), keyword-only, one keyword per CLI flag, same defaults.
- A result out (base.Result): `.text` is what the command prints on stdout, `.to_json()`
  what it prints with --json, `.ok` False where the command exits 1, `.messages` the
  warnings and notes it prints on stderr, as (kind, text).
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
