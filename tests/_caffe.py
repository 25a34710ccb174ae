"""Where the real BVLC Caffe build lives, for the tests that run it.

`tools/build_caffe.sh` builds Caffe into a cache folder outside the repository and
writes `<cache>/env` with CAFFE_PYTHON (the interpreter pycaffe was built for),
CAFFE_PYTHONPATH and CAFFE_BIN. A test that needs Caffe calls `caffe_build()`: it
skips when the build is absent, unless CAFFE_SURGERY_REQUIRE_CAFFE=1 (CI sets it),
in which case a missing build fails the test instead of hiding it.
"""

import os
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("CAFFE_SURGERY_CACHE") or Path.home() / ".cache" / "caffe-surgery")
BUILD = CACHE / "caffe-99bd997"   # tools/build_caffe.sh: BVLC master at 99bd997


def caffe_build():
    """{'CAFFE_PYTHON': ..., 'CAFFE_PYTHONPATH': ..., 'CAFFE_BIN': ...} of the built Caffe."""
    env_file = BUILD / "env"
    if env_file.is_file():
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        if all(key in values for key in ("CAFFE_PYTHON", "CAFFE_PYTHONPATH", "CAFFE_BIN")):
            return values
    why = f"real BVLC Caffe is not built in {BUILD} (run tools/build_caffe.sh)"
    if os.environ.get("CAFFE_SURGERY_REQUIRE_CAFFE") == "1":
        pytest.fail(why + "; CAFFE_SURGERY_REQUIRE_CAFFE=1 asks for it")
    pytest.skip(why)


@pytest.fixture(scope="module")
def build():
    """The build's settings, exported as the CLI's users would (CAFFE_PYTHON...)."""
    values = caffe_build()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CAFFE_PYTHON", values["CAFFE_PYTHON"])
        patch.setenv("CAFFE_PYTHONPATH", values["CAFFE_PYTHONPATH"])
        patch.setenv("GLOG_minloglevel", "2")
        yield values
