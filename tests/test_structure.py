"""The package's layering rules, checked: io imports nothing above it."""

import subprocess
import sys


def test_loading_a_file_imports_no_analysis_module():
    """io/ sits at the bottom: reading a net must not pull in graph, shapes, geometry or
    the passes (a fresh interpreter, so other tests' imports do not hide a violation)."""
    code = ("import sys, surgery.io.netfile, surgery.io.preserve, surgery.io.caffemodel; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('surgery.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    above = {"analysis", "graph", "layers", "shapes", "geometry", "grid", "regrid", "passes",
             "verify", "engine", "check", "initweights", "report", "commands"}
    assert not [m for m in loaded if m.split(".")[1] in above]
