"""skpatch's import graph: no cycle, and the layers of docs/design.rst.

The graph is read from the source with :mod:`ast` and counts every import
statement, those inside functions included (an import inside a function
hides a cycle from Python at import time, not from the design). As grimp
(import-linter's graph) does, ``import a.b.c`` is an edge to ``a.b.c`` only,
and ``from a import b`` is an edge to ``a.b`` when that is a module, else to
``a``.
"""

import ast
import pathlib

import pytest

import skpatch

PACKAGE_DIR = pathlib.Path(skpatch.__file__).parent


def _modules():
    """Module name -> path of every module of the skpatch package."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported(name, node, modules, is_package):
    """The skpatch modules that one import statement of module ``name`` imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    if node.level:
        base = name.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module
    if source not in modules:
        return set()
    out = set()
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        out.add(submodule if submodule in modules else source)
    return out


def import_graph():
    """Module -> set of the skpatch modules it imports, anywhere in its code."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(name, node, modules, is_package)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    # skpatch/_cli.py imports the plotting module inside a function only.
    assert "skpatch.plotting" in graph["skpatch._cli"]
    assert "skpatch._featurizer" in graph["skpatch._base"]


def test_find_cycle_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in skpatch: " + " -> ".join(cycle)


# docs/design.rst: which module may import which. Each entry names modules
# that must not import any module of the listed groups (nor their
# submodules).
_ESTIMATORS = ("skpatch._base", "skpatch._classifier", "skpatch._segmenter")
_STEPS = ("skpatch._featurizer", "skpatch._discriminator", "skpatch._coreset", "skpatch._bagging")
_ABOVE_ESTIMATORS = (
    "skpatch._persist", "skpatch._audit", "skpatch._cli", "skpatch._demo", "skpatch.dask", "skpatch.plotting",
)
_FORBIDDEN = [
    (("skpatch._embedding",), ("skpatch._",), "the patch embedding imports no skpatch module"),
    (_STEPS, _ESTIMATORS + _ABOVE_ESTIMATORS + ("skpatch._onnx",), "a step imports no estimator"),
    (("skpatch._onnx",), _ESTIMATORS + _ABOVE_ESTIMATORS, "the ONNX export reads estimators, never imports them"),
    (_ESTIMATORS, _ABOVE_ESTIMATORS, "an estimator imports nothing built on the estimators"),
]


@pytest.mark.parametrize("importers, forbidden, rule", _FORBIDDEN, ids=[rule for *_, rule in _FORBIDDEN])
def test_layers(importers, forbidden, rule):
    graph = import_graph()
    bad = sorted(
        f"{module} -> {target}"
        for module in importers
        for target in graph.get(module, ())
        if any(target == f or target.startswith(f if f.endswith("_") else f + ".") for f in forbidden)
    )
    assert not bad, f"{rule} (docs/design.rst): " + ", ".join(bad)
