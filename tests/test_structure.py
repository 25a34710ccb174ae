"""The package's layering rules, checked: io imports no analysis module, and layer types
are named in the registry only."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


def _docstrings(tree):
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}


def _folded(node):
    """The string a constant expression spells ("Pool" + "ing", f"{'Pool'}ing",
    "".join(("Pool", "ing"))), or None."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _folded(node.left), _folded(node.right)
        return None if None in (left, right) else left + right
    if isinstance(node, ast.JoinedStr):
        parts = [_folded(v.value if isinstance(v, ast.FormattedValue) else v)
                 for v in node.values]
        return None if None in parts else "".join(parts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
            node.func.attr == "join" and len(node.args) == 1 and \
            isinstance(node.args[0], (ast.Tuple, ast.List)):
        glue = _folded(node.func.value)
        parts = [_folded(e) for e in node.args[0].elts]
        return None if glue is None or None in parts else glue.join(parts)
    return None


def _type_literals(source, types):
    """(line, text) for every place in `source` that names a layer type: a string constant
    or a constant expression that spells one, and a piece of a type name (3 characters or
    more: a prefix tested with startswith, a suffix with endswith, any part with `in`);
    docstrings aside (prose may name a type)."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    def pieces(text, test=str.__contains__):
        return len(text) >= 3 and any(test(t, text) for t in types)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if _folded(node) in types:
            found.append((node.lineno, _folded(node)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("startswith", "endswith") and node.args:
            arg = node.args[0]
            texts = [_folded(e) for e in arg.elts] if isinstance(arg, ast.Tuple) else [_folded(arg)]
            test = getattr(str, node.func.attr)     # a prefix for startswith, a suffix for endswith
            found += [(node.lineno, t) for t in texts if t is not None and pieces(t, test)]
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn))
                                                   for op in node.ops):
            text = _folded(node.left)
            if text is not None and pieces(text) and text not in types:
                found.append((node.lineno, text))
    return sorted(set(found))


def _role_questions(source):
    """(line, what) for each place that reads a role instead of asking the rule's
    predicates: `.role`, `.role_of(...)`, or a comparison with a role's name."""
    from surgery.layers import Role

    names = {r.value for r in Role}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("role", "role_of"):
            found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            values = [e for side in sides for e in
                      (side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side])]
            found += [(node.lineno, v.value) for v in values
                      if isinstance(v, ast.Constant) and v.value in names]
    return found


def _modules():
    for path in sorted(SURGERY.rglob("*.py")):
        rel = path.relative_to(SURGERY).as_posix()
        if rel != "caffe_pb2.py":                # generated from proto/caffe.proto
            yield rel, path.read_text(encoding="utf-8")


def test_layer_types_are_named_in_the_registry_only():
    """Issue 12: no module outside the registry compares or builds by a quoted layer type
    (`layer.type == "Pooling"`, `.startswith("Pool")`, `"Pool" + "ing"`), but the data
    tables listed above."""
    types = set(known_types())
    assert {"Convolution", "Pooling", "InnerProduct", "Interp", "BatchNorm"} <= types
    found = {rel: hits for rel, source in _modules()
             if (hits := _type_literals(source, types)) and rel not in TYPE_NAMES_ALLOWED}
    assert not found, f"layer types named outside the registry (move the fact into " \
        f"surgery/layers.py): {found}"


def test_every_type_name_allowance_is_still_needed():
    types = set(known_types())
    stale = [rel for rel in TYPE_NAMES_ALLOWED if not (SURGERY / rel).is_file()
             or not _type_literals((SURGERY / rel).read_text(encoding="utf-8"), types)]
    assert not stale, f"remove from TYPE_NAMES_ALLOWED: {stale}"


def test_roles_are_asked_of_the_registry_only():
    """Issue 28: a role is a question the rule answers (`rule.reads_window(layer)`), never
    a string compared outside surgery/layers.py."""
    found = {rel: hits for rel, source in _modules()
             if rel != "layers.py" and (hits := _role_questions(source))}
    assert not found, f"roles read outside the registry (ask the rule's predicates): {found}"


@pytest.mark.parametrize("code", [
    'if layer.type == "Pooling": pass',
    'if layer.type.startswith("Pool"): pass',
    'if layer.type.endswith(("Loss", "Data")): pass',
    'if "Deconv" in layer.type: pass',
    'kind = "Pool" + "ing"',
    'kind = f"{\'Pool\'}ing"',
    'kind = "".join(("Pool", "ing"))',
])
def test_the_type_check_catches_each_spelling(code):
    assert _type_literals(code, set(known_types()))


@pytest.mark.parametrize("code", [
    'if rule.role_of(layer) == "window": pass',
    'if rule.role == "join": pass',
    'if role in ("pointwise", "join"): pass',
    'if kind != "collapse": pass',
])
def test_the_role_check_catches_each_spelling(code):
    assert _role_questions(code)


def test_the_checks_pass_plain_code():
    code = 'if rule.reads_window(layer) and name.startswith("res"):\n    """Pooling."""\n'
    assert not _type_literals(code, set(known_types())) and not _role_questions(code)


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


def test_every_package_folder_is_installed():
    """pyproject.toml lists the packages by hand: a folder of surgery/ with an __init__.py
    left off that list works from a clone and is missing from an installed wheel."""
    import tomllib

    config = tomllib.loads((SURGERY.parent / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(SURGERY.parent).parts)
             for init in SURGERY.rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
