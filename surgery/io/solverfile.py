"""Solver files: told apart from nets, and upgraded as Caffe's UpgradeSolverAsNeeded does.

Caffe's one solver upgrade turns the old `solver_type` enum into the `type` string
(`solver_type: NESTEROV` -> `type: "Nesterov"`); giving both is an error, as in Caffe.
`upgrade_solver_file` makes that change as an edit of the file's own text: the
`solver_type` entry becomes the `type` entry in place and every other byte stays, so
comments and `${NAME}` placeholders survive. Inline nets (`net_param { }`) are left as
they are: Caffe's solver upgrade does not touch them either.
"""

from typing import NamedTuple

from .. import caffe_pb2
from ..errors import SurgeryError
from .document import Document
from .netfile import refuse_unknowns, unknown_field_warnings
from .prototxt import read_text

# SolverParameter.SolverType name -> the `type` string Caffe gives it.
SOLVER_TYPE_NAMES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}

_SOLVER = caffe_pb2.SolverParameter.DESCRIPTOR
_NET = caffe_pb2.NetParameter.DESCRIPTOR


class SolverUpgrade(NamedTuple):
    text: str         # the upgraded file (the input's bytes when nothing changed)
    solver: object    # the upgraded SolverParameter
    notes: list       # what changed
    warnings: list    # one line per field the schema does not know


def is_solver_text(text, path="<string>"):
    """Whether the text is a solver, not a net: no layers, and a top-level field only a
    solver has. Text the tokenizer cannot read is left to the net loader to explain."""
    try:
        doc = Document.parse(text, path)
    except SurgeryError:
        return False
    keys = {field.key for field in doc.root.fields}
    if keys & {"layer", "layers"}:
        return False
    return any(key in _SOLVER.fields_by_name and key not in _NET.fields_by_name for key in keys)


def upgrade_solver(solver):
    """(upgraded copy, notes): Caffe's UpgradeSolverType on a SolverParameter message."""
    new = caffe_pb2.SolverParameter()
    new.CopyFrom(solver)
    if not new.HasField("solver_type"):
        return new, []
    if new.HasField("type"):
        raise SurgeryError(f"gives both `solver_type` and `type` (\"{new.type}\"); Caffe "
                           "refuses this. Keep `type`")
    old = caffe_pb2.SolverParameter.SolverType.Name(new.solver_type)
    new.ClearField("solver_type")
    new.type = SOLVER_TYPE_NAMES[old]
    return new, [f"solver_type: {old} became type: \"{new.type}\""]


def upgrade_solver_file(path, *, strict=False):
    """SolverUpgrade for a solver prototxt; SurgeryError with FILE:LINE:COL on bad input."""
    text = read_text(path)
    doc = Document.parse(text, str(path), message_type=caffe_pb2.SolverParameter)
    solver, binding = doc.to_message()
    refuse_unknowns(binding, solver, strict)
    warnings = unknown_field_warnings(binding, solver)
    entries = doc.root.find("solver_type")
    if entries and any(value.has_placeholder for value in entries[0].values):
        raise _at(entries[0], "a template placeholder stands for the solver type; substitute "
                              "it before upgrading", path)
    try:
        new, notes = upgrade_solver(solver)
    except SurgeryError as exc:
        raise _at(entries[0], exc.message, path) from None
    if not notes:
        return SolverUpgrade(text, new, [], warnings)
    entry = entries[0]
    entry.name.text = "type"
    token = entry.values[0].tokens[0]
    token.kind, token.text = "str", f"{doc.quote}{new.type}{doc.quote}"
    edited = doc.to_text()
    again, _ = Document.parse(edited, str(path), message_type=caffe_pb2.SolverParameter).to_message()
    if again != new:   # the edit is one token pair; anything else is a bug, never output
        raise SurgeryError("internal error: the edited solver does not load back to the "
                           "upgraded one; nothing written", file=str(path))
    return SolverUpgrade(edited, new, notes, warnings)


def _at(entry, message, path):
    return SurgeryError(message, file=str(path), line=entry.name.line, col=entry.name.col)
