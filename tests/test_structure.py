"""The package's layering rules, checked: io imports no analysis module."""

import subprocess
import sys


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
