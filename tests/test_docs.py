"""The documentation builds with warnings as errors and runs every example.

Slow (the gallery executes every example): ``python -m pytest -m slow tests/test_docs.py``
after ``pip install -e ".[docs]"``.
"""

import os
import subprocess
import sys

import pytest

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs")

pytestmark = pytest.mark.slow


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("sphinx_gallery")
    pytest.importorskip("numpydoc")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", DOCS, str(tmp_path / "html")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "html" / "auto_examples" / "index.html").exists()
