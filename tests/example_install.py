"""Install an example plugin package from examples/ for one test, the way pip leaves it.

What `pip install` leaves on sys.path that discovery reads, made by hand: a
`<name>-<version>.dist-info` folder whose `entry_points.txt` is generated from the example's
own pyproject.toml (so the test checks the declaration a user would ship), plus the package's
`src/` folder. No pip, no build backend, no network (see test_example_plugin.py for why).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def install_example(folder: str, tmp_path: Path, monkeypatch) -> list[str]:
    """Make examples/<folder> an installed distribution for this test; returns its top-level
    package names (to forget after the test with `forget_modules`)."""
    root = EXAMPLES / folder
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    info = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(root / "src"))
    return [p.name for p in (root / "src").iterdir() if (p / "__init__.py").exists()]


def forget_modules(packages: list[str]) -> None:
    for module in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[module]
