"""Suite-wide: only tests marked `caffe` see the Caffe interpreter settings.

`verify --engine auto` (the default) takes real Caffe when $CAFFE_PYTHON is set, and CI
sets it. Every other test (and the README's shown outputs) is about a fresh install
without Caffe, so it runs with CAFFE_PYTHON and CAFFE_PYTHONPATH removed; the Caffe
tests get the build from tests/_caffe.py.
"""

import pytest


@pytest.fixture(autouse=True)
def _no_caffe_interpreter_unless_marked(request, monkeypatch):
    if request.node.get_closest_marker("caffe") is None:
        monkeypatch.delenv("CAFFE_PYTHON", raising=False)
        monkeypatch.delenv("CAFFE_PYTHONPATH", raising=False)
