"""Skip the docstring examples whose optional dependencies are not installed."""

import importlib.util

import pytest

# Module -> the packages its docstring examples import (an optional extra).
_DOCTEST_NEEDS = {
    "skpatch._onnx": ("onnx", "onnxruntime", "onnxscript"),
    "skpatch.dask": ("dask", "distributed"),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if type(item).__name__ != "DoctestItem":
            continue
        for module, packages in _DOCTEST_NEEDS.items():
            missing = [p for p in packages if importlib.util.find_spec(p) is None]
            if item.name.startswith(module + ".") and missing:
                item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(missing)} (an optional extra of skpatch)"))
