"""Where the shared public nets live, for every test that uses them.

`../shared/corpus` sits beside the project root in development and CI; a user's clone
usually has none, so callers skip cleanly when it is absent.
"""

from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def corpus_net(rel):
    """The upgraded NetParameter of a corpus file; skips the test when it is not there."""
    from surgery.io.netfile import load_prototxt

    path = CORPUS / rel
    if not path.exists():
        pytest.skip(f"corpus file {rel} not available")
    return load_prototxt(path)
