"""The package's layering rules, checked: io imports no analysis module, and layer types
are named in the registry only."""

import ast
import subprocess
import sys
from pathlib import Path

from surgery.layers import known_types

SURGERY = Path(__file__).resolve().parents[1] / "surgery"


def test_loading_a_file_imports_only_what_io_may_use():
    """io/ sits at the bottom: reading a net may use io itself, the errors, the schema and
    the registry of layer facts (with the small grid vocabulary the registry speaks), and
    nothing above them: no analysis, transform pass, engine, report or command. An
    allowlist, so a new module io starts to import must be named here on purpose (a fresh
    interpreter, so other tests' imports do not hide a violation)."""
    code = ("import sys, surgery.io.netfile, surgery.io.preserve, surgery.io.caffemodel, "
            "surgery.io.solverfile, surgery.io.prototxt, surgery.io.atomic; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('surgery'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    allowed = {"surgery", "surgery.caffe_pb2", "surgery.errors", "surgery.pair",
               "surgery.unknowns", "surgery.layers", "surgery.transform",
               "surgery.transform.grid", "surgery.transform.regrid"}
    extra = [m for m in loaded if m not in allowed and not m.startswith("surgery.io")]
    assert not extra, f"io pulls in modules above it: {extra}"


# Modules that may name layer types as string literals, each with why. Everything else asks
# the registry (surgery.layers: rule_for, the rule classes and their attributes).
TYPE_NAMES_ALLOWED = {
    "layers.py": "the registry itself",
    "builder.py": "builds layers by type: conv() writes a Convolution, pool() a Pooling, ...",
    "io/v1types.py": "the V1 enum table: enum number and name -> type string",
    "io/upgrade.py": "Caffe's upgrader turns the input header into an Input layer",
    "io/upgrade_v0.py": "V0 -> V1 tables, whose enum names (BNLL, LRN) equal type strings",
    "transform/segment.py": "writes the generated heads layer by layer (Interp, Crop, losses, ...)",
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


def _imports(path, module, modules):
    """The surgery modules `module` (at `path`) imports, at any depth of its code:
    `from . import plots` is an import of the module `plots`, not of the package."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base += f".{node.module}" if node.module else ""
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_no_module_imports_itself_back():
    """The package's imports form no cycle, late imports inside functions included (a late
    import hides a cycle from Python, not from a reader)."""
    import graphlib

    modules = {}
    for path in SURGERY.rglob("*.py"):
        parts = path.relative_to(SURGERY.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    edges = {m: {d for d in _imports(p, m, modules) if d in modules and d != m}
             for m, p in modules.items()}
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
