"""`batchlab[kit]` is what the conformance kit needs and nothing more; without it, importing
the kit names the extra; py.typed ships so users' type checkers read our annotations."""

from __future__ import annotations

import builtins
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _extras():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]


def test_kit_extra_is_hypothesis_only_and_test_includes_it():
    extras = _extras()
    assert [d.split(">")[0].split("=")[0] for d in extras["kit"]] == ["hypothesis"]
    assert "batchlab[kit]" in extras["test"]


def test_kit_imports_only_hypothesis_and_batchlab():
    """Every third-party module the kit imports is numpy/attrs (batchlab's own dependencies)
    or hypothesis: the kit extra is complete."""
    import ast
    allowed = {"batchlab", "hypothesis", "numpy", "attrs", "__future__"}
    for path in (ROOT / "batchlab" / "testing").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, (path.name, name)


def test_missing_hypothesis_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_hypothesis(name, *args, **kwargs):
        if name.split(".")[0] == "hypothesis":
            raise ModuleNotFoundError(f"No module named {name!r}", name="hypothesis")
        return real_import(name, *args, **kwargs)

    saved = {m: sys.modules.pop(m) for m in list(sys.modules)
             if m == "batchlab.testing" or m.startswith("batchlab.testing.")}
    monkeypatch.setattr(builtins, "__import__", no_hypothesis)
    try:
        with pytest.raises(ModuleNotFoundError, match=r"pip install 'batchlab\[kit\]'"):
            import batchlab.testing  # noqa: F401
    finally:
        monkeypatch.setattr(builtins, "__import__", real_import)
        for m in [m for m in sys.modules if m.startswith("batchlab.testing")]:
            del sys.modules[m]
        sys.modules.update(saved)
        import batchlab
        if "batchlab.testing" in saved:  # the package attribute, as the first import set it
            batchlab.testing = saved["batchlab.testing"]


def test_py_typed_ships():
    assert (ROOT / "batchlab" / "py.typed").exists()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["batchlab"]
    assert "py.typed" in data
