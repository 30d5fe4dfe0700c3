"""The package's layout: dependencies point one way, and modules stay readable.

``cli -> batch -> pipeline -> (features, mixture, mrf, postprocess, metrics)
-> io -> (errors, _system)``: a module imports only from its own package or
from a layer below it (the README's Design section draws the same picture).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gmmseg"

# Lower number = lower layer; units of one layer do not import each other.
LAYERS = {
    "errors": 0, "_system": 0, "_log": 0,
    "io": 1,
    "features": 2, "mixture": 2, "mrf": 2, "postprocess": 2, "metrics": 2, "tissue": 2,
    "presets": 2,
    "pipeline": 3,
    "batch": 4,
    "cli": 5,
}


def _unit(module_path):
    """``gmmseg/batch/runner.py`` -> ``"batch"``; ``gmmseg/__init__.py`` -> None."""
    parts = module_path.relative_to(PACKAGE).with_suffix("").parts
    return None if parts == ("__init__",) else parts[0]


def _imports(path):
    """``(target unit, line, at module level)`` of every gmmseg import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = (*base, *(node.module.split(".") if node.module else ()))
            else:
                target = tuple((node.module or "").split("."))
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            target, names = None, [a.name for a in node.names]
            for name in names:
                if name.split(".")[0] == "gmmseg":
                    found.append((tuple(name.split("."))[1:2], node.lineno,
                                  id(node) in top_level))
            continue
        else:
            continue
        if not target or target[0] != "gmmseg":
            continue
        units = [target[1]] if len(target) > 1 else names  # "from .. import postprocess"
        for unit in units:
            found.append(((unit,), node.lineno, id(node) in top_level))
    return [(t[0] if t else None, line, top) for t, line, top in found]


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    unit = _unit(path)
    if unit is None:
        return  # gmmseg/__init__.py re-exports the public API
    for target, line, _ in _imports(path):
        if target in (None, "__version__", unit) or target not in LAYERS:
            continue
        assert LAYERS[target] < LAYERS[unit], f"{path.relative_to(PACKAGE)}:{line} imports {target} (layer " \
                        f"{LAYERS[target]}) from {unit} (layer {LAYERS[unit]})"


def test_the_em_core_knows_no_files():
    """Model files are io's: the mixture modules import nothing of io at module level."""
    for path in (PACKAGE / "mixture").rglob("*.py"):
        for target, line, top_level in _imports(path):
            assert not (top_level and target == "io"), f"{path.name}:{line} imports io"


def test_every_module_of_the_package_has_a_layer():
    assert {_unit(p) for p in _modules()} - {None} <= set(LAYERS)


def test_no_module_function_or_class_grows_past_what_a_reader_can_hold():
    """Issue #14's limits: 900 lines a module, 120 a function, 700 a class."""
    over = []
    for path in _modules():
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(PACKAGE)
        if len(text.splitlines()) > 900:
            over.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                limit = 700 if isinstance(node, ast.ClassDef) else 120
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    over.append(f"{name}: {node.name} {length} lines")
    assert over == []
