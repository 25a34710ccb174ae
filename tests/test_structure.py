"""The package's layering rules, checked: io imports no analysis module, and layer types
are named in the registry only."""

import ast
import subprocess
import sys
from pathlib import Path

from surgery.layers import known_types

SURGERY = Path(__file__).resolve().parents[1] / "surgery"


def test_loading_a_file_imports_no_analysis_module():
    """io/ sits at the bottom: reading a net must not pull in graph, shapes, geometry or
    the passes (a fresh interpreter, so other tests' imports do not hide a violation)."""
    code = ("import sys, surgery.io.netfile, surgery.io.preserve, surgery.io.caffemodel; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('surgery.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    # The registry (layers, with the small grid vocabulary it uses) is a table of facts io
    # may read (which parameter blocks decide shapes); the analysis is above io.
    above = {"analysis", "graph", "shapes", "geometry", "passes", "verify", "engine", "check",
             "initweights", "report", "commands", "htmlreport"}
    assert not [m for m in loaded if m.split(".")[1] in above]


# Modules that may name layer types as string literals, each with why. Everything else asks
# the registry (surgery.layers: rule_for, the rule classes and their attributes).
TYPE_NAMES_ALLOWED = {
    "layers.py": "the registry itself",
    "builder.py": "builds layers by type: conv() writes a Convolution, pool() a Pooling, ...",
    "io/v1types.py": "the V1 enum table: enum number and name -> type string",
    "io/upgrade.py": "Caffe's upgrader turns the input header into an Input layer",
    "io/upgrade_v0.py": "V0 -> V1 tables, whose enum names (BNLL, LRN) equal type strings",
    "passes/segment.py": "writes the generated heads layer by layer (Interp, Crop, losses, ...)",
}


def _type_literals(path, types):
    """(line, literal) for every string constant in `path` that is a layer type name;
    docstrings aside (prose may name a type)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value in types and id(node) not in docstrings]


def test_layer_types_are_named_in_the_registry_only():
    """Issue 12: no module outside the registry compares or builds by a quoted layer type
    (`layer.type == "Pooling"`), but the data tables listed above."""
    types = set(known_types())
    assert {"Convolution", "Pooling", "InnerProduct", "Interp", "BatchNorm"} <= types
    found = {}
    for path in sorted(SURGERY.rglob("*.py")):
        rel = path.relative_to(SURGERY).as_posix()
        if rel == "caffe_pb2.py":                # generated from proto/caffe.proto
            continue
        literals = _type_literals(path, types)
        if literals and rel not in TYPE_NAMES_ALLOWED:
            found[rel] = literals
    assert not found, f"layer types named outside the registry (move the fact into " \
        f"surgery/layers.py): {found}"


def test_every_type_name_allowance_is_still_needed():
    types = set(known_types())
    stale = [rel for rel in TYPE_NAMES_ALLOWED
             if not (SURGERY / rel).is_file() or not _type_literals(SURGERY / rel, types)]
    assert not stale, f"remove from TYPE_NAMES_ALLOWED: {stale}"
