"""`surgery.api.upgrade`: a legacy net or solver file in the current format."""

import os
from dataclasses import dataclass

from .base import Log, Result, load, transaction


@dataclass
class Upgraded(Result):
    upgraded: str       # the upgraded file's text (the input's own when nothing changed)
    changes: list       # what the upgrade changed, one line each ([]: nothing)
    solver: bool        # a solver file (else a net)
    output: str = None  # where it was written, or None

    @property
    def text(self):
        """The upgraded file (what the command prints without -o)."""
        return self.upgraded

    def to_json(self):
        return {"solver": self.solver, "changes": list(self.changes), "output": self.output}


def upgrade(path, *, output=None, in_place=False, strict=False, outputs=None,
            on_message=None):
    """Upgrade the net or solver at `path` as Caffe's upgrader would (then DeepLab's
    `hole` to `dilation`); a net that changes is written in protobuf's standard
    formatting, a solver as an edit of its text, an unchanged file byte for byte. Written
    to `output` when given (with `in_place` and no `output`: over the input)."""
    from ..io.prototxt import read_text
    from ..io.solverfile import is_solver_text

    path = os.fspath(path)
    output = path if output is None and in_place else output
    log = Log(on_message)
    with transaction(outputs, inputs=[path], targets=[output], in_place=in_place) as out:
        solver = is_solver_text(read_text(path), path)
        text, changes = _solver(path, strict, log) if solver else _net(path, strict, log)
        if output is not None:
            out.write(output, text.encode("utf-8"))
    return log.done(Upgraded(text, changes, solver, output))


def _net(path, strict, log):
    from ..io.preserve import refuse_lossy
    from ..io.prototxt import format_prototxt

    loaded = load(path, strict=strict, log=log)
    if not loaded.notes:
        return loaded.text, []
    refuse_lossy(loaded, "the upgraded net is written in protobuf's standard formatting")
    return format_prototxt(loaded.net), loaded.notes + [
        "wrote the upgraded net in protobuf's standard formatting (comments and layout "
        "are not kept)"]


def _solver(path, strict, log):
    from ..io.solverfile import upgrade_solver_file

    done = upgrade_solver_file(path, strict=strict)
    for warning in done.warnings:
        log.warning(warning)
    return done.text, done.notes
